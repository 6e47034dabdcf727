"""Read and write member folders (``member.json`` + ``weights.safetensors``); format in members_format.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mmmos.models.members import Member, MemberConfig

MEMBER_FORMAT_VERSION = 1
MEMBER_JSON = "member.json"
WEIGHTS_NAME = "weights.safetensors"


def _jsonable(dims: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple | list) else int(v) for k, v in dims.items()}


def save_member(
    folder: Path,
    member: Member,
    dims: dict[str, Any],
    encoders_identity: dict[str, Any],
    dev_scores: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``folder/member.json`` and ``folder/weights.safetensors`` (``state`` or the member's state dict)."""
    folder.mkdir(parents=True, exist_ok=True)
    sd = state if state is not None else member.state_dict()
    save_file({k: v.detach().to(torch.float32).contiguous().cpu() for k, v in sd.items()}, str(folder / WEIGHTS_NAME))
    cfg = member.config
    meta = {
        "format_version": MEMBER_FORMAT_VERSION,
        "name": cfg.name,
        "config": cfg.to_dict(),
        "dims": _jsonable(dims),
        "inputs": list(member.input_names),
        "weights": WEIGHTS_NAME,
        "target_mean": list(cfg.target_mean),
        "target_std": list(cfg.target_std),
        "dev_scores": dev_scores or {},
        "encoders_identity": encoders_identity,
        "training": training or {},
    }
    (folder / MEMBER_JSON).write_text(json.dumps(meta, indent=1) + "\n")
    return folder


def read_member_json(folder: Path) -> dict[str, Any]:
    """The parsed ``member.json`` of a member folder."""
    p = Path(folder) / MEMBER_JSON
    if not p.is_file():
        raise FileNotFoundError(f"{folder} is not a member folder (no {MEMBER_JSON}); train one with mmmos-train fit.")
    meta = json.loads(p.read_text())
    if meta.get("format_version") != MEMBER_FORMAT_VERSION:
        raise ValueError(
            f"{p} has member format {meta.get('format_version')}; this mmmos reads {MEMBER_FORMAT_VERSION}."
        )
    return meta


def load_member(folder: Path) -> tuple[Member, dict[str, Any]]:
    """Rebuild a trained member (eval mode) and return it with its ``member.json``."""
    meta = read_member_json(folder)
    dims = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["dims"].items()}
    member = Member(MemberConfig.from_dict(meta["config"]), dims)
    member.load_state_dict(load_file(str(Path(folder) / meta.get("weights", WEIGHTS_NAME))))
    member.eval()
    return member, meta


def identity_mismatch(a: dict[str, Any], b: dict[str, Any], encoders: list[str] | None = None) -> str | None:
    """None if two encoders identities agree on ``encoders`` (default: all of ``a``'s), else why not."""
    ga = {e["name"]: e.get("graphs", {}).get("fp32") for e in a.get("encoders", [])}
    gb = {e["name"]: e.get("graphs", {}).get("fp32") for e in b.get("encoders", [])}
    for name in encoders or list(ga):
        if name not in ga or name not in gb:
            return f"encoder {name!r} is missing from one of the two caches/bundles"
        if ga[name] != gb[name]:
            return f"encoder {name!r} comes from a different graph (fp32 sha256 {ga[name]} vs {gb[name]})"
    return None
