"""Import Meta's Audiobox Aesthetics checkpoints as one WavLM encoder plus one member.

Formats: the package's ``checkpoint.pt`` (``state_dict`` with a ``model.`` prefix, ``model_cfg``,
``target_transform``) or its Hugging Face folder (``config.json`` + ``model.safetensors``, written by
``PyTorchModelHubMixin``: the same keys without the prefix, the config fields at the top level).
The member is an ``mlp`` member on WavLM with a per-axis layer mix and Audiobox's heads; Audiobox's
axis names (CE, CU, PC, PQ) are mapped by name onto ``mmmos.AXES``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmmos import AXES
from mmmos.models.members import Member, MemberConfig
from mmmos.models.wavlm import WavLM, WavLMConfig
from mmmos.models.wavlm_checkpoints import load_unilm_state_dict

HF_REPO = "facebook/audiobox-aesthetics"
_BASE_PLUS_STRIDES = (5, 2, 2, 2, 2, 2, 2)


@dataclass
class AudioboxModel:
    """What the exporter needs from an Audiobox checkpoint."""

    wavlm: WavLM
    member: Member
    model_cfg: dict[str, Any]
    checkpoint_files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _strip(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop the Lightning-style ``model.`` prefix where present (checkpoint.pt has it, safetensors not)."""
    return {re.sub(r"^model\.", "", k): v for k, v in state.items()}


def infer_wavlm_config(state: dict[str, Tensor]) -> WavLMConfig:
    """WavLM sizes from the tensor shapes of ``wavlm_model.*`` keys (Audiobox does not store its config).

    Conv strides cannot be read from shapes; Base+'s are assumed (the released model is Base+).
    """
    sub = {k[len("wavlm_model."):]: v for k, v in state.items() if k.startswith("wavlm_model.")}
    if not sub:
        raise ValueError("the Audiobox state dict has no 'wavlm_model.' keys; is this an Audiobox checkpoint?")
    conv = []
    i = 0
    while f"feature_extractor.conv_layers.{i}.0.weight" in sub:
        w = sub[f"feature_extractor.conv_layers.{i}.0.weight"]
        conv.append((int(w.shape[0]), int(w.shape[2])))
        i += 1
    if len(conv) != len(_BASE_PLUS_STRIDES):
        raise NotImplementedError(f"WavLM with {len(conv)} conv layers is not supported; Audiobox uses Base+ (7).")
    layers = {int(m.group(1)) for k in sub if (m := re.match(r"encoder\.layers\.(\d+)\.", k))}
    embed = int(sub["encoder.layer_norm.weight"].shape[0])
    pos_key = "encoder.pos_conv.0.weight_v" if "encoder.pos_conv.0.weight_v" in sub else "encoder.pos_conv.0.weight"
    pos = sub[pos_key]
    bias = sub["encoder.layers.0.self_attn.relative_attention_bias.weight"]
    return WavLMConfig(
        conv_layers=tuple((d, k, s) for (d, k), s in zip(conv, _BASE_PLUS_STRIDES, strict=True)),
        extractor_mode="default",
        conv_bias="feature_extractor.conv_layers.0.0.bias" in sub,
        embed_dim=embed,
        ffn_dim=int(sub["encoder.layers.0.fc1.weight"].shape[0]),
        num_layers=len(layers),
        num_heads=int(bias.shape[1]),
        conv_pos=int(pos.shape[2]),
        conv_pos_groups=embed // int(pos.shape[1]),
        num_buckets=int(bias.shape[0]),
    )


_Read = tuple[dict[str, Tensor], dict[str, Any], dict[str, Any], list[Path]]


def _read(path: Path | None, trust_pickle: bool) -> _Read:
    """(state dict without prefix, model_cfg, target_transform, files read) from a file or HF folder."""
    if path is None:
        path = _download()
    path = Path(path)
    if path.is_dir():
        cfg_file, weights = path / "config.json", path / "model.safetensors"
        if not cfg_file.is_file() or not weights.is_file():
            raise FileNotFoundError(f"{path} lacks config.json or model.safetensors; pass the Audiobox HF folder "
                                    "or its checkpoint.pt.")
        from safetensors.torch import load_file

        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        return _strip(load_file(str(weights))), cfg, cfg.get("target_transform") or {}, [cfg_file, weights]
    if not path.is_file():
        raise FileNotFoundError(f"Audiobox checkpoint {path} does not exist; download checkpoint.pt from "
                                f"https://huggingface.co/{HF_REPO} and pass its path.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as err:
        raise ValueError(f"{path} could not be read safely ({str(err).splitlines()[0]}); if you trust the file, "
                         "pass --trust-pickle.") from err
    missing = [k for k in ("state_dict", "model_cfg", "target_transform") if k not in ckpt]
    if missing:
        raise ValueError(f"{path} lacks {missing}; an Audiobox checkpoint.pt has state_dict, model_cfg and "
                         "target_transform.")
    return _strip(dict(ckpt["state_dict"])), dict(ckpt["model_cfg"]), dict(ckpt["target_transform"]), [path]


def _download() -> Path:
    """Fetch the Audiobox HF folder through huggingface_hub, or say where to put the files offline."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(HF_REPO, allow_patterns=["config.json", "model.safetensors"]))
    except Exception as err:
        raise FileNotFoundError(
            f"could not fetch {HF_REPO} ({type(err).__name__}); without a network, download its checkpoint.pt "
            f"(or config.json + model.safetensors) elsewhere and pass --audiobox PATH."
        ) from err


def _head_param_modules(keys: list[str], prefix: str) -> list[int]:
    """Sorted indices of the Sequential children under ``prefix`` that own parameters."""
    idx = {int(m.group(1)) for k in keys if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return sorted(idx)


def load_audiobox(path: Path | None, trust_pickle: bool = False, window_samples: int = 160000) -> AudioboxModel:
    """Build the WavLM encoder and the Audiobox member from a checkpoint (see the module docstring)."""
    state, cfg, target, files = _read(path, trust_pickle)
    notes = []
    if cfg.get("proj_act_fn", "gelu") != "gelu":
        raise NotImplementedError(f"Audiobox proj_act_fn {cfg.get('proj_act_fn')!r} is not supported; only gelu.")
    if int(cfg.get("output_dim", 1)) != 1:
        raise NotImplementedError("Audiobox heads with output_dim != 1 are not supported.")
    if not cfg.get("use_weighted_layer_sum", True) or not cfg.get("normalize_embed", True):
        raise NotImplementedError("Audiobox checkpoints without the weighted layer sum or without L2-normalised "
                                  "embeddings are not supported (the released model has both).")
    if str(cfg.get("precision", "32")) not in ("32", "64"):
        notes.append(f"the checkpoint's model_cfg precision is {cfg.get('precision')!r} (autocast in Audiobox); "
                     "the bundle computes in fp32")
    wcfg = infer_wavlm_config(state)
    n_layers = wcfg.num_layers + 1
    if int(cfg.get("nth_layer", n_layers)) != n_layers:
        raise NotImplementedError(f"Audiobox nth_layer={cfg.get('nth_layer')} uses fewer than all {n_layers} "
                                  "hidden states; only the full stack is supported.")
    wavlm = WavLM(wcfg, window_samples=window_samples)
    load_unilm_state_dict(wavlm, {k[len("wavlm_model."):]: v for k, v in state.items() if k.startswith("wavlm_model.")})
    missing = [a for a in AXES if a not in target]
    if missing:
        raise ValueError(f"target_transform lacks axes {missing}; it needs mean/std for CE, CU, PC and PQ.")
    mcfg = MemberConfig(
        aggregator="mlp", loss="audiobox", encoders=("wavlm",), layer_mix="per-axis",
        head_layers=int(cfg.get("proj_num_layer", 1)), head_hidden=None, head_ln=bool(cfg.get("proj_ln", False)),
        target_mean=tuple(float(target[a]["mean"]) for a in AXES),
        target_std=tuple(float(target[a]["std"]) for a in AXES),
        name="audiobox-aesthetics",
    )
    member = Member(mcfg, {"wavlm": (n_layers, wcfg.embed_dim)})
    own = member.state_dict()
    new: dict[str, Tensor] = {
        "layer_mix.weight": torch.stack([state[f"layer_weights.{a}"].float() for a in AXES]),
        "target_mean": own["target_mean"], "target_std": own["target_std"],
    }
    for axis in AXES:
        theirs = _head_param_modules(list(state), f"proj_layer.{axis}.")
        ours = _head_param_modules(list(own), f"heads.{axis}.")
        if len(theirs) != len(ours):
            raise ValueError(f"Audiobox head {axis} has {len(theirs)} parameterised layers, the member "
                             f"{len(ours)}; check proj_num_layer/proj_ln in model_cfg.")
        for t, o in zip(theirs, ours, strict=True):
            for leaf in ("weight", "bias"):
                new[f"heads.{axis}.{o}.{leaf}"] = state[f"proj_layer.{axis}.{t}.{leaf}"]
    member.load_state_dict(new, strict=True)
    return AudioboxModel(wavlm.eval(), member.eval(), cfg, files, notes)
