"""Read a members folder written by ``mmmos-train select`` (format: training/members_format.md).

Only the reading side lives here (export may import models, not training): ``members.json`` lists the
member subfolders in ensemble order; each holds ``member.json`` and ``weights.safetensors``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmmos.models.members import Member, MemberConfig

MEMBERS_FORMAT_VERSION = 1


@dataclass
class LoadedMember:
    """A rebuilt member (eval mode) with its ``member.json``."""

    member: Member
    meta: dict[str, Any]
    folder: Path


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass a members folder written by mmmos-train select.")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format_version") != MEMBERS_FORMAT_VERSION:
        raise ValueError(f"{path} has format_version {data.get('format_version')!r}; this mmmos reads "
                         f"{MEMBERS_FORMAT_VERSION}: re-run mmmos-train select.")
    return data


def load_member_folder(folder: Path) -> LoadedMember:
    """Rebuild one member from ``folder/member.json`` + its safetensors weights (strict key match)."""
    from safetensors.torch import load_file

    meta = _read_json(folder / "member.json")
    dims = {k: tuple(v) if isinstance(v, list) else int(v) for k, v in meta["dims"].items()}
    member = Member(MemberConfig.from_dict(meta["config"]), dims)
    member.load_state_dict(load_file(str(folder / meta.get("weights", "weights.safetensors"))), strict=True)
    return LoadedMember(member.eval(), meta, folder)


def load_members(members_dir: Path) -> list[LoadedMember]:
    """All members of a members folder, in ``members.json`` order (or one ``fit --out`` member folder)."""
    members_dir = Path(members_dir)
    if (members_dir / "member.json").is_file() and not (members_dir / "members.json").is_file():
        return [load_member_folder(members_dir)]
    index = _read_json(members_dir / "members.json")
    names = index.get("members") or []
    if not names:
        raise ValueError(f"{members_dir / 'members.json'} lists no members; select at least one with mmmos-train.")
    return [load_member_folder(members_dir / name) for name in names]


def check_identity(members: list[LoadedMember], manifest: dict[str, Any]) -> None:
    """Refuse a member trained on other encoder graphs than the bundle's (fp32 sha256 per encoder)."""
    files = manifest.get("files", {})
    graphs = {e["name"]: e.get("graphs", {}).get("fp32") for e in manifest.get("encoders", [])}
    for lm in members:
        for enc in lm.meta.get("encoders_identity", {}).get("encoders", []):
            name = enc.get("name")
            if name not in lm.member.config.encoders:
                continue
            want = enc.get("graphs", {}).get("fp32")
            have = files.get(graphs.get(name, ""), None)
            if have is None:
                raise ValueError(f"member {lm.meta.get('name')!r} needs encoder {name!r}, which the bundle lacks; "
                                 "export a bundle with that encoder.")
            if want != have:
                raise ValueError(f"member {lm.meta.get('name')!r} was trained on another {name!r} graph (sha256 "
                                 f"{want} vs the bundle's {have}); use the bundle its features came from.")
