"""MuQ loader on checkpoint folders written here in the OpenMuQ/MuQ-large-msd-iter layout (package key names)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mmmos.models.muq import MuQ, MuQConfig
from mmmos.models.muq_checkpoints import MuQCheckpointError, config_from_dict, load_muq

MEAN, STD = 5.5, 17.25  # not the defaults, so the test sees that config.json's stat is read


def package_config(cfg: MuQConfig, **w2v_overrides: object) -> dict:
    """config.json as ``muq.MuQConfig`` fields (``PyTorchModelHubMixin`` writes the dataclass as a dict)."""
    w2v = {
        "hidden_size": cfg.encoder_dim, "num_hidden_layers": cfg.encoder_depth,
        "num_attention_heads": cfg.num_attention_heads, "intermediate_size": cfg.intermediate_size,
        "hidden_act": "swish", "hidden_dropout": 0.1, "activation_dropout": 0.1, "attention_dropout": 0.1,
        "layerdrop": 0.1, "feat_extract_activation": "gelu", "num_conv_pos_embeddings": 128,
        "num_conv_pos_embedding_groups": 16, "position_embeddings_type": "rotary",
        "rotary_embedding_base": 10000, "conv_depthwise_kernel_size": cfg.conv_depthwise_kernel_size,
        "conformer_conv_dropout": 0.1, "layer_norm_eps": 1e-5, "max_source_positions": 5000,
    }
    w2v.update(w2v_overrides)
    return {
        "label_rate": 25, "num_codebooks": 1, "codebook_dim": 16, "codebook_size": 4096,
        "features": ["melspec_2048"], "hop_length": 240, "n_mels": 128, "conv_dim": cfg.conv_dim,
        "encoder_dim": cfg.encoder_dim, "encoder_depth": cfg.encoder_depth, "mask_hop": 0.4, "mask_prob": 0.6,
        "is_flash": False, "stat": {"melspec_2048_mean": MEAN, "melspec_2048_std": STD, "melspec_2048_cnt": 1},
        "w2v2_config": w2v, "use_rvq_target": False, "use_vq_target": False, "use_encodec_target": False,
        "rvq_ckpt_path": None, "recon_loss_ratio": None, "resume_checkpoint": None, "rvq_n_codebooks": 8,
        "rvq_multi_layer_num": 1,
    }


def package_state(model: MuQ) -> dict[str, torch.Tensor]:
    """Our weights under the package's names, plus every training-only tensor the package saves."""
    cfg = model.config
    state = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    head = cfg.encoder_dim // cfg.num_attention_heads
    state.update({
        "model.linear.weight": torch.randn(4096, cfg.encoder_dim),
        "model.linear.bias": torch.randn(4096),
        "model.cls_token": torch.randn(cfg.encoder_dim),
        "model.quantizer_melspec_2048.random_projection": torch.randn(cfg.n_mels * 4, 16),
        "model.quantizer_melspec_2048.codebook": torch.randn(4096, 16),
        "model.conformer.embed_positions.inv_freq": 1.0 / (10000 ** (torch.arange(0, head, 2).float() / head)),
        "model.conformer.pos_conv_embed.conv.bias": torch.randn(cfg.encoder_dim),
        "model.conformer.pos_conv_embed.conv.parametrizations.weight.original0": torch.randn(1, 1, 128),
        "model.conformer.pos_conv_embed.conv.parametrizations.weight.original1": torch.randn(cfg.encoder_dim, 4, 128),
    })
    return state


@pytest.fixture(scope="module")
def source() -> MuQ:
    torch.manual_seed(0)
    # The package's mel is always 128 bands / n_fft 2048, so the checkpoint config is tiny in the body only.
    model = MuQ(MuQConfig.tiny(n_fft=2048, n_mels=128, conv_depthwise_kernel_size=31, mel_mean=MEAN, mel_std=STD))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def write_folder(folder: Path, model: MuQ, fmt: str = "safetensors", state: dict | None = None,
                 config: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config or package_config(model.config)))
    state = package_state(model) if state is None else state
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    else:
        torch.save(state, folder / "pytorch_model.bin")
    return folder


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_load_roundtrip(source: MuQ, tmp_path: Path, fmt: str) -> None:
    loaded = load_muq(write_folder(tmp_path / fmt, source, fmt))
    assert not loaded.training
    assert (loaded.config.mel_mean, loaded.config.mel_std) == (MEAN, STD)
    assert (loaded.config.encoder_dim, loaded.config.encoder_depth, loaded.config.conv_dim) == (64, 2, 16)
    wav = torch.randn(2, 240000) * 0.1
    lengths = torch.tensor([240000, 90000])
    with torch.no_grad():
        expected, _ = source(wav, lengths)
        got, _ = loaded(wav, lengths)
    assert torch.equal(expected, got)


def test_sample_rate_for_mmmos_feed(source: MuQ, tmp_path: Path) -> None:
    loaded = load_muq(write_folder(tmp_path / "ckpt", source), sample_rate=16000)
    assert loaded.sample_rate == 16000 and loaded.window_samples == 160000 and loaded.num_tokens == 167
    assert loaded.frontend.config.sample_rate == 24000  # the mel is still built for 24 kHz, as in the package


def test_missing_key_is_an_error(source: MuQ, tmp_path: Path) -> None:
    state = package_state(source)
    del state["model.conformer.layers.1.conv_module.depthwise_conv.weight"]
    with pytest.raises(MuQCheckpointError, match=r"missing.*depthwise_conv"):
        load_muq(write_folder(tmp_path / "ckpt", source, state=state))


def test_unexpected_key_is_an_error(source: MuQ, tmp_path: Path) -> None:
    state = package_state(source)
    state["model.conformer.layers.2.ffn1.output_dense.weight"] = torch.zeros(64, 128)
    with pytest.raises(MuQCheckpointError, match=r"unexpected.*layers\.2"):
        load_muq(write_folder(tmp_path / "ckpt", source, state=state))


def test_batchnorm_counters_are_optional(source: MuQ, tmp_path: Path) -> None:
    state = {k: v for k, v in package_state(source).items() if not k.endswith("num_batches_tracked")}
    load_muq(write_folder(tmp_path / "ckpt", source, state=state))


def test_shape_mismatch_is_an_error(source: MuQ, tmp_path: Path) -> None:
    config = package_config(source.config)
    config["w2v2_config"]["intermediate_size"] = 96
    with pytest.raises(MuQCheckpointError, match="shapes"):
        load_muq(write_folder(tmp_path / "ckpt", source, config=config))


def test_rotary_base_is_checked(source: MuQ, tmp_path: Path) -> None:
    config = package_config(source.config, rotary_embedding_base=500)
    with pytest.raises(MuQCheckpointError, match="inv_freq"):
        load_muq(write_folder(tmp_path / "ckpt", source, config=config))


def test_files_missing(source: MuQ, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load_muq(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(package_config(source.config)))
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        load_muq(tmp_path)


def test_config_translation() -> None:
    cfg = config_from_dict(package_config(MuQConfig.full()))
    full = MuQConfig.full(mel_mean=MEAN, mel_std=STD)
    assert cfg == full
    assert config_from_dict({"config": package_config(MuQConfig.full())}) == full  # nested variant
    with pytest.raises(NotImplementedError, match="rotary"):
        config_from_dict(package_config(MuQConfig.full(), position_embeddings_type="relative"))
    with pytest.raises(MuQCheckpointError, match="w2v2_config"):
        config_from_dict({"encoder_dim": 1024})
