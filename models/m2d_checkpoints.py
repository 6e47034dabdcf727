"""Load the released M2D weights (``weights_*.pth``) into :class:`~mmmos.models.m2d.M2D`.

The release format, as ``nttcslab/m2d:examples/portable_m2d.py`` (``get_backbone``) reads it:

- a torch pickle of a state dict, possibly under ``"model"``;
- keys possibly prefixed ``backbone.`` (RuntimeM2D saves) or ``module.ar.runtime.backbone.`` (EVAR fine-tuning);
- extras that are not part of the encoder: the EVAR front-end ``module.ar.runtime.to_spec.*``, the task head
  ``module.head.*``, and the CLAP projectors ``audio_proj.*`` / ``text_proj.*``; we drop them by name (the
  original drops every key the ViT lacks, which would also hide a truncated or mismatched file);
- ``norm_stats`` ``[mean, std]`` of the log-mel, default ``[-7.1, 4.2]`` when absent;
- the input size, patch size and sample rate are in the parent folder's name, e.g.
  ``m2d_clap_vit_base-80x1001p16x16-240128_AS-FT_enconly`` -> 80x1001, 16x16, 16 kHz (``p32k`` -> 32 kHz).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch

from mmmos.models.m2d import DEFAULT_NORM_STATS, M2D, M2DConfig

EVAR_PREFIX = "module.ar.runtime.backbone."
RUNTIME_PREFIX = "backbone."
DROPPED_PREFIXES = (
    "module.ar.runtime.to_spec.",
    "to_spec.",
    "module.head.",
    "head.",
    "audio_proj.",
    "text_proj.",
)
"""Checkpoint entries that are not part of the frame encoder (front-end bases, task heads, CLAP projectors)."""

_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")


def parse_sizes_by_name(name: str) -> tuple[tuple[int, int], tuple[int, int], str, str]:
    """Parse a release folder name into ``(input_size, patch_size, sr, model_cls)``.

    ``"m2d_clap_vit_base-80x1001p16x16-240128_AS-FT_enconly"`` -> ``((80, 1001), (16, 16), "16k",
    "m2d_clap_vit_base")``; a third ``p`` field (``p32k``) sets the sample rate, later ones are CLAP extras.
    """
    parts = name.split("-")
    try:
        fields = parts[1].split("p")
        input_size = tuple(int(a) for a in fields[0].split("x"))
        patch_size = tuple(int(a) for a in fields[1].split("x"))
    except (IndexError, ValueError) as exc:
        raise ValueError(
            f"Cannot read M2D sizes from the folder name {name!r}; keep the weights in their release folder "
            "(like 'm2d_clap_vit_base-80x1001p16x16-240128_AS-FT_enconly') or pass config= to load_m2d."
        ) from exc
    if len(input_size) != 2 or len(patch_size) != 2:
        raise ValueError(f"M2D folder name {name!r} must give sizes as FxT (e.g. 80x1001p16x16).")
    sr = fields[2] if len(fields) > 2 else "16k"
    return (input_size[0], input_size[1]), (patch_size[0], patch_size[1]), sr, parts[0]


def config_from_name(name: str, **overrides: object) -> M2DConfig:
    """The full-size :class:`M2DConfig` a release folder name describes (ViT-B unless overridden)."""
    input_size, patch_size, sr, _ = parse_sizes_by_name(name)
    return M2DConfig.for_sample_rate(
        sr, n_mels=input_size[0], input_frames=input_size[1], patch_size=patch_size, **overrides
    )


def reformat_state_dict(checkpoint: Mapping[str, object]) -> tuple[dict[str, torch.Tensor], tuple[float, float]]:
    """Unwrap ``model``, strip the RuntimeM2D / EVAR prefixes, drop non-encoder extras, pop ``norm_stats``.

    Returns the ViT state dict (timm names) and ``(mean, std)``.
    """
    state = checkpoint.get("model", checkpoint)
    if not isinstance(state, Mapping):
        raise ValueError("The M2D checkpoint's 'model' entry is not a state dict; is this an M2D weights file?")
    if any(k.startswith(RUNTIME_PREFIX) for k in state):
        # RuntimeM2D saves the ViT under 'backbone.'; as portable_m2d's extract_weight, keep only that part.
        state = {k[len(RUNTIME_PREFIX) :]: v for k, v in state.items() if k.startswith(RUNTIME_PREFIX)}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if any(key.startswith(p) for p in DROPPED_PREFIXES):
            continue
        out[key.replace(EVAR_PREFIX, "")] = value  # type: ignore[assignment]
    stats = out.pop("norm_stats", None)
    if stats is None:
        norm_stats = DEFAULT_NORM_STATS
    else:
        values = torch.as_tensor(stats).flatten().tolist()
        if len(values) != 2:
            raise ValueError(f"M2D norm_stats must hold [mean, std], got {len(values)} values.")
        norm_stats = (float(values[0]), float(values[1]))
    return out, norm_stats


def infer_config(state: Mapping[str, torch.Tensor], base: M2DConfig, num_heads: int | None = None) -> M2DConfig:
    """Fill width, depth, MLP ratio and heads of ``base`` from the state dict's shapes.

    Heads cannot be read from shapes; the M2D releases use timm's 64-wide heads (ViT-B: 768 / 12), so the
    default is ``dim // 64``.
    """
    if "pos_embed" not in state or "blocks.0.mlp.fc1.weight" not in state:
        raise ValueError("The M2D state dict has no 'pos_embed' / 'blocks.0.*' keys; is this an M2D ViT checkpoint?")
    dim = int(state["pos_embed"].shape[-1])
    depth = 1 + max(int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k)))
    hidden = int(state["blocks.0.mlp.fc1.weight"].shape[0])
    if num_heads is None:
        if dim % 64:
            raise ValueError(f"Cannot infer heads for M2D width {dim} (not a multiple of 64); pass num_heads.")
        num_heads = dim // 64
    return replace(base, dim=dim, depth=depth, mlp_ratio=hidden / dim, num_heads=num_heads)


def load_state(model: M2D, state: Mapping[str, torch.Tensor]) -> None:
    """Copy a timm-named ViT state dict into ``model.backbone``; any missing, unexpected or mis-shaped key fails."""
    expected = model.backbone.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"M2D checkpoint keys do not match the ViT: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}; "
            "check that the file is an M2D ViT encoder checkpoint in its release folder."
        )
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape
    ]
    if wrong:
        raise ValueError(f"M2D checkpoint shapes do not match the folder-name sizes: {wrong[:3]}.")
    model.backbone.load_state_dict(dict(state), strict=True)


def load_m2d(
    path: str | Path,
    config: M2DConfig | None = None,
    num_heads: int | None = None,
    trust_pickle: bool = False,
) -> M2D:
    """Build an :class:`M2D` from a release ``weights_*.pth`` and load its weights (eval mode).

    Sizes come from ``config`` if given (its ``norm_stats`` are still replaced by the checkpoint's), else from
    the parent folder name plus the tensor shapes. ``trust_pickle=True`` allows arbitrary pickled objects (some
    pre-training checkpoints pickle ``args``); only use it for files you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"M2D checkpoint {path} does not exist; download the release zip and unpack it.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{path} pickles objects other than tensors; if you trust the file, call load_m2d(..., trust_pickle=True)."
        ) from exc
    if not isinstance(checkpoint, Mapping):
        raise ValueError(
            f"{path} does not hold a state dict (got {type(checkpoint).__name__}); is it an M2D weights file?"
        )
    state, norm_stats = reformat_state_dict(checkpoint)
    if config is None:
        config = infer_config(state, config_from_name(path.parent.name), num_heads=num_heads)
    model = M2D(replace(config, norm_stats=norm_stats), empty=True)  # every weight comes from the file
    load_state(model, state)
    return model.eval()


__all__ = ["config_from_name", "infer_config", "load_m2d", "load_state", "parse_sizes_by_name", "reformat_state_dict"]
