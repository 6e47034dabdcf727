"""Load a MuQ checkpoint folder in the Hugging Face ``OpenMuQ/MuQ-large-msd-iter`` layout into ``mmmos.models.MuQ``.

The folder holds ``config.json`` (the ``muq`` package's ``MuQConfig`` fields: ``label_rate``, ``hop_length``,
``n_mels``, ``conv_dim``, ``encoder_dim``, ``encoder_depth``, ``stat``, ``w2v2_config``, ...) and the weights as
``model.safetensors`` or ``pytorch_model.bin``, keyed like the package's state dict (``model.conv...``,
``model.conformer...``). Loading is a prefix strip plus an explicit ignore list; any other mismatch is an error
(the package's own ``from_pretrained`` loads with ``strict=False`` and would hide it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mmmos.models.muq import MUQ_MEL_MEAN, MUQ_MEL_STD, MuQ, MuQConfig

PREFIX = "model."
IGNORED_KEYS = frozenset({"linear.weight", "linear.bias", "cls_token", "conformer.embed_positions.inv_freq"})
"""Training-only or derived tensors: logits head, cls token, the rotary inverse frequencies (rebuilt and checked)."""
IGNORED_PREFIXES = ("quantizer_", "conformer.pos_conv_embed.", "recon_proj.", "rvq.")
"""Random-projection quantizer, HF's never-used positional conv, and the optional reconstruction/RVQ targets."""
OPTIONAL_SUFFIXES = ("num_batches_tracked",)
"""BatchNorm counters: unused in eval, so a checkpoint saved without them still loads."""
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class MuQCheckpointError(ValueError):
    """A MuQ checkpoint folder whose config or tensors do not fit the architecture."""


def _require(cfg: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in cfg:
        raise MuQCheckpointError(f"{where} has no {key!r}; is this a MuQ (muq package) config.json?")
    return cfg[key]


def config_from_dict(raw: Mapping[str, Any], sample_rate: int = 24000) -> MuQConfig:
    """Translate the ``muq`` package's config.json dict into a ``MuQConfig`` fed at ``sample_rate`` Hz."""
    cfg = raw["config"] if "w2v2_config" not in raw and isinstance(raw.get("config"), dict) else raw
    w2v = _require(cfg, "w2v2_config", "config.json")
    if cfg.get("is_flash", False):
        raise NotImplementedError(
            "is_flash=True MuQ checkpoints (flash_conformer) are not supported; convert them to is_flash=False"
        )
    features = cfg.get("features", ["melspec_2048"])
    if list(features) != ["melspec_2048"]:
        raise MuQCheckpointError(f"config.json features {features!r}: only ['melspec_2048'] is supported")
    # The package always builds its mel as 24 kHz / n_fft 2048 / 128 mels; n_mels only sizes the conv stem.
    n_mels = int(cfg.get("n_mels", 128))
    if n_mels != 128:
        raise MuQCheckpointError(f"config.json n_mels={n_mels}, but the muq package's mel front-end has 128 bands")
    n_fold = 100 // int(cfg.get("label_rate", 25))
    strides = {4: (2, 2), 2: (2, 1)}.get(n_fold)
    if strides is None:
        raise MuQCheckpointError(f"config.json label_rate={cfg.get('label_rate')}: muq supports 25 or 50 Hz only")
    pos_type = _require(w2v, "position_embeddings_type", "w2v2_config")
    if pos_type != "rotary":
        raise NotImplementedError(f"w2v2_config position_embeddings_type={pos_type!r}: only 'rotary' is implemented")
    stat = cfg.get("stat") or {}
    return MuQConfig(
        sample_rate=sample_rate,
        hop_length=int(cfg.get("hop_length", 240)),
        n_mels=n_mels,
        mel_mean=float(stat.get("melspec_2048_mean", MUQ_MEL_MEAN)),
        mel_std=float(stat.get("melspec_2048_std", MUQ_MEL_STD)),
        conv_dim=int(cfg.get("conv_dim", 512)),
        time_strides=strides,
        encoder_dim=int(cfg.get("encoder_dim", 1024)),
        encoder_depth=int(cfg.get("encoder_depth", 12)),
        num_attention_heads=int(_require(w2v, "num_attention_heads", "w2v2_config")),
        intermediate_size=int(_require(w2v, "intermediate_size", "w2v2_config")),
        hidden_act=str(_require(w2v, "hidden_act", "w2v2_config")),
        rotary_embedding_base=float(w2v.get("rotary_embedding_base", 10000)),
        conv_depthwise_kernel_size=int(w2v.get("conv_depthwise_kernel_size", 31)),
        layer_norm_eps=float(w2v.get("layer_norm_eps", 1e-5)),
    )


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Tensors of ``model.safetensors`` (preferred) or ``pytorch_model.bin`` in ``folder``."""
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if name.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)
        return dict(state.get("state_dict", state)) if isinstance(state, dict) else state
    raise FileNotFoundError(f"no {' or '.join(WEIGHT_FILES)} in {folder}; point load_muq at the checkpoint folder")


def is_ignored(key: str) -> bool:
    """True for checkpoint keys of parts the encoder does not build (see IGNORED_KEYS / IGNORED_PREFIXES)."""
    return key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES)


def load_muq_state(model: MuQ, state: Mapping[str, torch.Tensor]) -> None:
    """Load a package-keyed state dict (with or without the ``model.`` prefix) into ``model``, strictly."""
    stripped = {k.removeprefix(PREFIX): v for k, v in state.items()}
    inv_freq = stripped.get("conformer.embed_positions.inv_freq")
    if inv_freq is not None:
        head = model.config.encoder_dim // model.config.num_attention_heads
        expected = 1.0 / (model.config.rotary_embedding_base ** (torch.arange(0, head, 2).float() / head))
        if inv_freq.shape != expected.shape or not torch.allclose(inv_freq.float(), expected, rtol=1e-5):
            raise MuQCheckpointError("checkpoint rotary inv_freq disagrees with w2v2_config rotary_embedding_base")
    wanted = {k: v for k, v in stripped.items() if not is_ignored(k)}
    own = model.state_dict()
    missing = sorted(k for k in own if k not in wanted and not k.endswith(OPTIONAL_SUFFIXES))
    unexpected = sorted(k for k in wanted if k not in own)
    if missing or unexpected:
        raise MuQCheckpointError(
            f"MuQ checkpoint does not match the architecture: missing {missing[:8]} ({len(missing)} in all), "
            f"unexpected {unexpected[:8]} ({len(unexpected)} in all); check config.json against the weights"
        )
    wrong = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in wanted.items() if v.shape != own[k].shape]
    if wrong:
        raise MuQCheckpointError(f"MuQ checkpoint shapes differ from config.json: {wrong[:5]}")
    model.load_state_dict(wanted, strict=False)  # strictness was checked above, with the optional keys allowed


def load_muq(path: str | Path, sample_rate: int = 24000) -> MuQ:
    """Build a ``MuQ`` from a checkpoint folder (config.json + weights) and load it, in eval mode.

    ``sample_rate`` is the rate the encoder will be fed (24000 native; 16000 reproduces MMMOS's feed).
    """
    folder = Path(path)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"no config.json in {folder}; expected the OpenMuQ/MuQ-large-msd-iter folder layout")
    config = config_from_dict(json.loads(config_path.read_text()), sample_rate=sample_rate)
    model = MuQ(config)
    load_muq_state(model, read_weights(folder))
    return model.eval()
