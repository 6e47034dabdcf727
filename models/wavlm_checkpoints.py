"""Load WavLM weights from Microsoft unilm, Hugging Face and Meta Audiobox Aesthetics checkpoints.

All three end as a unilm-named state dict loaded with `strict=True` into `mmmos.models.wavlm.WavLM`.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .wavlm import WavLM, WavLMConfig

AUDIOBOX_PREFIX = "model.wavlm_model."

# Hugging Face -> unilm key renames (applied in order on the key with any `wavlm.` prefix removed).
_HF_RULES: tuple[tuple[str, str], ...] = (
    (r"^feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.0."),
    # GroupNorm (first layer, "group" mode) sits at index 2; LayerNorm ("layer" mode) inside the transpose block.
    (r"^feature_extractor\.conv_layers\.(\d+)\.layer_norm\.", r"feature_extractor.conv_layers.\1.<NORM>."),
    (r"^feature_projection\.layer_norm\.", "layer_norm."),
    (r"^feature_projection\.projection\.", "post_extract_proj."),
    (r"^encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original0$", "encoder.pos_conv.0.weight_g"),
    (r"^encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original1$", "encoder.pos_conv.0.weight_v"),
    (r"^encoder\.pos_conv_embed\.conv\.", "encoder.pos_conv.0."),
    (r"^encoder\.layers\.(\d+)\.attention\.gru_rel_pos_linear\.", r"encoder.layers.\1.self_attn.grep_linear."),
    (r"^encoder\.layers\.(\d+)\.attention\.gru_rel_pos_const$", r"encoder.layers.\1.self_attn.grep_a"),
    (r"^encoder\.layers\.(\d+)\.attention\.rel_attn_embed\.", r"encoder.layers.\1.self_attn.relative_attention_bias."),
    (r"^encoder\.layers\.(\d+)\.attention\.", r"encoder.layers.\1.self_attn."),
    (r"^encoder\.layers\.(\d+)\.layer_norm\.", r"encoder.layers.\1.self_attn_layer_norm."),
    (r"^encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.", r"encoder.layers.\1.fc1."),
    (r"^encoder\.layers\.(\d+)\.feed_forward\.output_dense\.", r"encoder.layers.\1.fc2."),
    (r"^masked_spec_embed$", "mask_emb"),
)

# Newer torch `parametrizations.weight_norm` names inside unilm-style state dicts.
_PARAM_RULES: tuple[tuple[str, str], ...] = (
    (r"\.parametrizations\.weight\.original0$", ".weight_g"),
    (r"\.parametrizations\.weight\.original1$", ".weight_v"),
)


class CheckpointFormatError(ValueError):
    """A checkpoint does not match the WavLM layout it claims to be."""


def _torch_load(path: Path, trust_pickle: bool) -> object:
    """torch.load with weights_only unless the caller trusts the file (arbitrary pickles can run code)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as e:
        raise CheckpointFormatError(
            f"{path} holds Python objects that the safe loader refuses ({str(e).splitlines()[0]}); "
            "if you trust the file, call load_wavlm(path, trust_pickle=True)."
        ) from e


def _rename(key: str, rules: tuple[tuple[str, str], ...]) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def _few(keys: set[str] | list[str], n: int = 5) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_unilm_state_dict(model: WavLM, state_dict: Mapping[str, Tensor]) -> WavLM:
    """Load a unilm-named WavLM state dict into `model` strictly; raise CheckpointFormatError listing bad keys.

    Accepts pos-conv weight norm as `weight_g`/`weight_v`, as torch's `parametrizations.weight.original0/1`, or
    already baked as `encoder.pos_conv.0.weight` (then the model is baked first).
    """
    sd = {_rename(k, _PARAM_RULES): v for k, v in state_dict.items()}
    if "encoder.pos_conv.0.weight" in sd and "encoder.pos_conv.0.weight_v" not in sd:
        model.bake_weight_norm()
    own = model.state_dict()
    missing = set(own) - set(sd)
    unexpected = set(sd) - set(own)
    if missing or unexpected:
        raise CheckpointFormatError(
            f"WavLM state dict does not match the model config: missing [{_few(missing)}], "
            f"unexpected [{_few(unexpected)}]; check the checkpoint format/prefix and the config."
        )
    bad = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in sd.items() if v.shape != own[k].shape]
    if bad:
        raise CheckpointFormatError(
            f"WavLM tensor shapes differ from the config: {_few(bad)}; use the matching config."
        )
    model.load_state_dict(sd, strict=True)
    return model.eval()


def wavlm_from_state_dict(
    state_dict: Mapping[str, Tensor],
    prefix: str = AUDIOBOX_PREFIX,
    config: WavLMConfig | None = None,
    window_samples: int = 160000,
) -> WavLM:
    """Build a WavLM from the keys of `state_dict` that start with `prefix` (others are ignored).

    With the default prefix this reads an Audiobox Aesthetics state dict (`model.wavlm_model.*`, config Base+);
    the exporter reuses it for the Audiobox safetensors folder. `config` defaults to `WavLMConfig.full()`.
    """
    sub = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not sub:
        raise CheckpointFormatError(
            f"no key starts with {prefix!r} (first keys: {_few(list(state_dict))}); pass the right prefix."
        )
    model = WavLM(config or WavLMConfig.full(), window_samples=window_samples)
    return load_unilm_state_dict(model, sub)


def hf_to_unilm_state_dict(state_dict: Mapping[str, Tensor], config: WavLMConfig) -> dict[str, Tensor]:
    """Rename a Hugging Face `WavLMModel` state dict (optionally `wavlm.`-prefixed) to unilm names.

    Keys outside the WavLM body (e.g. `lm_head`, `projector` of task heads) are dropped when the `wavlm.` prefix is
    present. HF omits `masked_spec_embed` when its masking probs are 0; `mask_emb` is then filled with zeros (it is
    used only in pretraining).
    """
    if any(k.startswith("wavlm.") for k in state_dict):
        state_dict = {k[len("wavlm.") :]: v for k, v in state_dict.items() if k.startswith("wavlm.")}
    norm_index = "2.1" if config.extractor_mode == "layer_norm" else "2"
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        out[_rename(key, _HF_RULES).replace("<NORM>", norm_index)] = value
    out.setdefault("mask_emb", torch.zeros(config.embed_dim))
    return out


def _load_hf_folder(folder: Path, window_samples: int) -> WavLM:
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder} has no config.json; pass a Hugging Face WavLM model folder.")
    config = WavLMConfig.from_hf_config(json.loads(cfg_path.read_text()))
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        sd = load_file(str(folder / "model.safetensors"))
    elif (folder / "pytorch_model.bin").is_file():
        sd = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{folder} has neither model.safetensors nor pytorch_model.bin; download the weights.")
    model = WavLM(config, window_samples=window_samples)
    return load_unilm_state_dict(model, hf_to_unilm_state_dict(sd, config))


def load_wavlm(
    path: str | Path,
    window_samples: int = 160000,
    trust_pickle: bool = False,
    audiobox_config: WavLMConfig | None = None,
) -> WavLM:
    """Load WavLM from any supported checkpoint; returns the model in eval mode.

    - a Hugging Face folder (config.json + model.safetensors or pytorch_model.bin), e.g. microsoft/wavlm-base-plus;
    - Microsoft unilm `WavLM-Base+.pt` (dict with `cfg` and `model`);
    - Meta Audiobox Aesthetics `checkpoint.pt` (dict with `state_dict`, keys `model.wavlm_model.*`); it stores no
      WavLM config (Audiobox hard-codes Base+), so `audiobox_config` defaults to `WavLMConfig.full()`.
    """
    path = Path(path)
    if path.is_dir():
        return _load_hf_folder(path, window_samples)
    if not path.is_file():
        raise FileNotFoundError(f"WavLM checkpoint {path} does not exist; pass a .pt file or a Hugging Face folder.")
    ckpt = _torch_load(path, trust_pickle)
    if not isinstance(ckpt, Mapping):
        raise CheckpointFormatError(
            f"{path} is a {type(ckpt).__name__}, not a checkpoint dict; pass a WavLM checkpoint."
        )
    if "cfg" in ckpt and "model" in ckpt:
        cfg = ckpt["cfg"]
        cfg = cfg if isinstance(cfg, Mapping) else vars(cfg)
        model = WavLM(WavLMConfig.from_unilm_cfg(dict(cfg)), window_samples=window_samples)
        return load_unilm_state_dict(model, ckpt["model"])
    if "state_dict" in ckpt:
        return wavlm_from_state_dict(ckpt["state_dict"], AUDIOBOX_PREFIX, audiobox_config, window_samples)
    raise CheckpointFormatError(
        f"{path} has keys [{_few([str(k) for k in ckpt])}], neither unilm ('cfg', 'model') nor Audiobox "
        "('state_dict'); pass one of those checkpoints."
    )


def unilm_cfg_dict(cfg: WavLMConfig) -> dict[str, Any]:
    """The ``cfg`` dict of a unilm/Audiobox WavLM for ``cfg``: the inverse of ``WavLMConfig.from_unilm_cfg``.

    Used to build the original code's model (parity tests) and to write checkpoints in the unilm format.
    """
    return {
        "extractor_mode": cfg.extractor_mode,
        "encoder_layers": cfg.num_layers,
        "encoder_embed_dim": cfg.embed_dim,
        "encoder_ffn_embed_dim": cfg.ffn_dim,
        "encoder_attention_heads": cfg.num_heads,
        "activation_fn": "gelu",
        "layer_norm_first": cfg.layer_norm_first,
        "conv_feature_layers": " + ".join(f"[({d},{k},{s})]" for d, k, s in cfg.conv_layers),
        "conv_bias": cfg.conv_bias,
        "conv_pos": cfg.conv_pos,
        "conv_pos_groups": cfg.conv_pos_groups,
        "relative_position_embedding": cfg.relative_position_embedding,
        "num_buckets": cfg.num_buckets,
        "max_distance": cfg.max_distance,
        "gru_rel_pos": cfg.gru_rel_pos,
        "normalize": cfg.normalize,
    }
