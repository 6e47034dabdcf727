"""WavLM checkpoint loaders on checkpoints written here in the real formats (unilm, Hugging Face, Audiobox)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from mmmos.models.wavlm import WavLM, WavLMConfig
from mmmos.models.wavlm_checkpoints import (
    CheckpointFormatError,
    hf_to_unilm_state_dict,
    load_wavlm,
    unilm_cfg_dict,
    wavlm_from_state_dict,
)

N = 160000


def unilm_cfg(cfg: WavLMConfig) -> dict:
    """The `cfg` dict a unilm checkpoint carries (plus pretraining keys our loader must ignore)."""
    return {**unilm_cfg_dict(cfg), "dropout": 0.1, "mask_prob": 0.8, "encoder_layerdrop": 0.05}


def source_model(seed: int = 0) -> WavLM:
    """A tiny WavLM with random weights, biases and norm affines."""
    torch.manual_seed(seed)
    model = WavLM(WavLMConfig.tiny())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def outputs(model: torch.nn.Module, seed: int = 1) -> torch.Tensor:
    """Hidden states on a padded batch of two windows."""
    torch.manual_seed(seed)
    with torch.no_grad():
        return model(torch.randn(2, N), torch.tensor([N, 77777]))[0]


def test_unilm_checkpoint(tmp_path: Path) -> None:
    """Microsoft `WavLM-Base+.pt` layout: {'cfg': dict, 'model': state dict}; config comes from `cfg`."""
    src = source_model()
    path = tmp_path / "WavLM-Base+.pt"
    torch.save({"cfg": unilm_cfg(src.cfg), "model": src.state_dict()}, path)
    loaded = load_wavlm(path)
    assert loaded.cfg == src.cfg and not loaded.training
    torch.testing.assert_close(outputs(loaded), outputs(src), atol=0, rtol=0)


def test_unilm_checkpoint_with_parametrized_weight_norm(tmp_path: Path) -> None:
    """Newer torch `parametrizations.weight.original0/1` names for the pos-conv weight norm load too."""
    src = source_model()
    sd = {
        re.sub(
            r"weight_g$",
            "parametrizations.weight.original0",
            re.sub(r"weight_v$", "parametrizations.weight.original1", k),
        ): v
        for k, v in src.state_dict().items()
    }
    assert "encoder.pos_conv.0.parametrizations.weight.original1" in sd
    path = tmp_path / "wavlm.pt"
    torch.save({"cfg": unilm_cfg(src.cfg), "model": sd}, path)
    torch.testing.assert_close(outputs(load_wavlm(path)), outputs(src), atol=0, rtol=0)


def audiobox_checkpoint(src: WavLM) -> dict:
    """Audiobox Aesthetics `checkpoint.pt` layout (Lightning-style `state_dict` with `model.` prefix, heads beside)."""
    sd = {f"model.wavlm_model.{k}": v for k, v in src.state_dict().items()}
    for axis in ("CE", "CU", "PC", "PQ"):
        sd[f"model.proj_layer.{axis}.0.weight"] = torch.randn(1, src.out_dim)
        sd[f"model.proj_layer.{axis}.0.bias"] = torch.randn(1)
        sd[f"model.layer_weights.{axis}"] = torch.ones(src.num_layers_out) / src.num_layers_out
    return {
        "state_dict": sd,
        "model_cfg": {"proj_num_layer": 1, "nth_layer": 13, "precision": "32"},
        "target_transform": {a: {"mean": 5.0, "std": 2.0} for a in ("CE", "CU", "PC", "PQ")},
    }


def test_audiobox_checkpoint(tmp_path: Path) -> None:
    """Audiobox `checkpoint.pt`: the `model.wavlm_model.*` keys load; heads are ignored."""
    src = source_model()
    path = tmp_path / "checkpoint.pt"
    torch.save(audiobox_checkpoint(src), path)
    loaded = load_wavlm(path, audiobox_config=WavLMConfig.tiny())
    torch.testing.assert_close(outputs(loaded), outputs(src), atol=0, rtol=0)
    # Without a config Audiobox means Base+: a tiny checkpoint then fails with a clear message.
    with pytest.raises(CheckpointFormatError, match="does not match the model config"):
        load_wavlm(path)


def test_state_dict_with_prefix_for_safetensors_folder() -> None:
    """The exporter's entry: an already loaded state dict (Audiobox HF layout `wavlm_model.*`) plus prefix."""
    src = source_model()
    sd = {f"wavlm_model.{k}": v for k, v in src.state_dict().items()} | {"proj_layer.PQ.0.bias": torch.zeros(1)}
    loaded = wavlm_from_state_dict(sd, prefix="wavlm_model.", config=WavLMConfig.tiny())
    torch.testing.assert_close(outputs(loaded), outputs(src), atol=0, rtol=0)
    with pytest.raises(CheckpointFormatError, match="no key starts with"):
        wavlm_from_state_dict(sd, prefix="model.wavlm_model.", config=WavLMConfig.tiny())


def test_missing_and_unexpected_keys_are_listed(tmp_path: Path) -> None:
    """A damaged state dict names the missing and unexpected keys."""
    sd = dict(source_model().state_dict())
    sd.pop("encoder.layers.1.fc1.weight")
    sd["encoder.layers.1.extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save({"cfg": unilm_cfg(WavLMConfig.tiny()), "model": sd}, path)
    with pytest.raises(CheckpointFormatError, match=r"missing \[encoder\.layers\.1\.fc1\.weight\].*extra\.weight"):
        load_wavlm(path)
    torch.save({"weights": sd}, path)
    with pytest.raises(CheckpointFormatError, match="neither unilm"):
        load_wavlm(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_wavlm(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load_wavlm(tmp_path)


def hf_config(cfg: WavLMConfig) -> dict:
    """A Hugging Face WavLM config.json for `cfg` (post-LN, group-norm extractor)."""
    return {
        "model_type": "wavlm",
        "architectures": ["WavLMModel"],
        "conv_dim": [d for d, _, _ in cfg.conv_layers],
        "conv_kernel": [k for _, k, _ in cfg.conv_layers],
        "conv_stride": [s for _, _, s in cfg.conv_layers],
        "conv_bias": cfg.conv_bias,
        "feat_extract_norm": "group",
        "feat_extract_activation": "gelu",
        "hidden_act": "gelu",
        "hidden_size": cfg.embed_dim,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_conv_pos_embeddings": cfg.conv_pos,
        "num_conv_pos_embedding_groups": cfg.conv_pos_groups,
        "num_buckets": cfg.num_buckets,
        "max_bucket_distance": cfg.max_distance,
        "do_stable_layer_norm": False,
        "layer_norm_eps": 1e-5,
    }


# unilm -> HF names, written independently of the loader's HF -> unilm rules (so the test checks them).
_TO_HF = (
    (r"^feature_extractor\.conv_layers\.(\d+)\.0\.", r"feature_extractor.conv_layers.\1.conv."),
    (r"^feature_extractor\.conv_layers\.0\.2\.", "feature_extractor.conv_layers.0.layer_norm."),
    (r"^layer_norm\.", "feature_projection.layer_norm."),
    (r"^post_extract_proj\.", "feature_projection.projection."),
    (r"^encoder\.pos_conv\.0\.weight_g$", "encoder.pos_conv_embed.conv.parametrizations.weight.original0"),
    (r"^encoder\.pos_conv\.0\.weight_v$", "encoder.pos_conv_embed.conv.parametrizations.weight.original1"),
    (r"^encoder\.pos_conv\.0\.bias$", "encoder.pos_conv_embed.conv.bias"),
    (r"self_attn\.grep_linear\.", "attention.gru_rel_pos_linear."),
    (r"self_attn\.grep_a$", "attention.gru_rel_pos_const"),
    (r"self_attn\.relative_attention_bias\.", "attention.rel_attn_embed."),
    (r"self_attn_layer_norm\.", "layer_norm."),
    (r"self_attn\.", "attention."),
    (r"\.fc1\.", ".feed_forward.intermediate_dense."),
    (r"\.fc2\.", ".feed_forward.output_dense."),
    (r"^mask_emb$", "masked_spec_embed"),
)


def to_hf(sd: dict) -> dict:
    """Our unilm-named state dict in Hugging Face names, as `WavLMForCTC` would save it (`wavlm.` + a head)."""
    out = {}
    for key, value in sd.items():
        for pattern, repl in _TO_HF:
            key = re.sub(pattern, repl, key)
        out[f"wavlm.{key}"] = value.contiguous()
    out["lm_head.weight"] = torch.zeros(4, 64)
    return out


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_hf_folder_from_key_mapping(tmp_path: Path, weights: str) -> None:
    """HF folder written from the key layout (no transformers needed): loads and reproduces the source."""
    src = source_model()
    sd = to_hf(src.state_dict())
    assert "wavlm.encoder.layers.0.attention.rel_attn_embed.weight" in sd
    if weights.endswith("safetensors"):
        from safetensors.torch import save_file

        save_file(sd, str(tmp_path / weights))
    else:
        torch.save(sd, tmp_path / weights)
    (tmp_path / "config.json").write_text(json.dumps(hf_config(src.cfg)))
    loaded = load_wavlm(tmp_path)
    assert loaded.cfg == src.cfg
    torch.testing.assert_close(outputs(loaded), outputs(src), atol=0, rtol=0)


def test_hf_weight_g_names_and_missing_mask_emb() -> None:
    """Older HF `pos_conv_embed.conv.weight_g/_v` names map too; an absent `masked_spec_embed` is filled."""
    src = source_model()
    sd = {
        k.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        ): v
        for k, v in to_hf(src.state_dict()).items()
        if k != "wavlm.masked_spec_embed"
    }
    mapped = hf_to_unilm_state_dict(sd, src.cfg)
    assert set(mapped) == set(src.state_dict())
    torch.testing.assert_close(mapped["encoder.pos_conv.0.weight_g"], src.state_dict()["encoder.pos_conv.0.weight_g"])


def test_hf_transformers_parity(tmp_path: Path) -> None:
    """A tiny `transformers.WavLMModel` saved with save_pretrained loads and matches HF's hidden states (1e-4)."""
    transformers = pytest.importorskip("transformers")
    cfg = WavLMConfig.tiny()
    torch.manual_seed(0)
    hf = transformers.WavLMModel(transformers.WavLMConfig(**hf_config(cfg))).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hf.save_pretrained(tmp_path)
    loaded = load_wavlm(tmp_path)
    torch.manual_seed(1)
    wav = torch.randn(2, N)
    with torch.no_grad():
        expected = torch.stack(hf(wav, output_hidden_states=True).hidden_states, dim=1)
        hidden, _ = loaded(wav, torch.tensor([N, N]))
    assert expected.shape == hidden.shape == (2, cfg.num_layers + 1, 499, cfg.embed_dim)
    torch.testing.assert_close(hidden, expected, atol=1e-4, rtol=0)
