"""load_m2d on checkpoints written here in the release formats (timm key names, EVAR / RuntimeM2D prefixes)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from mmmos.models.m2d import DEFAULT_NORM_STATS, M2D, M2DConfig
from mmmos.models.m2d_checkpoints import load_m2d, parse_sizes_by_name, reformat_state_dict

RELEASE = "m2d_clap_vit_base-80x1001p16x16-240128_AS-FT_enconly"
WEIGHTS = "weights_ep67it3124-0.48558.pth"


def release_file(tmp_path: Path, state: dict, folder: str = RELEASE) -> Path:
    """Save ``state`` as the release does: ``<folder>/weights_*.pth``."""
    path = tmp_path / folder / WEIGHTS
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def evar_state(model: M2D, norm_stats: list[float] | None = (-7.3, 4.5)) -> dict[str, torch.Tensor]:
    """An EVAR fine-tuning save: prefixed ViT keys, the nnAudio front-end buffers and a task head."""
    prefix = "module.ar.runtime.backbone."
    state = {prefix + k: v.clone() for k, v in model.backbone.state_dict().items()}
    if norm_stats is not None:
        state[prefix + "norm_stats"] = torch.tensor(norm_stats)
    state["module.ar.runtime.to_spec.mel_basis"] = torch.zeros(80, 201)
    state["module.ar.runtime.to_spec.stft.wsin"] = torch.zeros(201, 1, 400)
    state["module.ar.runtime.to_spec.stft.wcos"] = torch.zeros(201, 1, 400)
    state["module.head.mlp.mlp.0.weight"] = torch.zeros(527, model.out_dim)
    state["module.head.mlp.mlp.0.bias"] = torch.zeros(527)
    return state


@pytest.fixture(scope="module")
def tiny_source() -> M2D:
    torch.manual_seed(3)
    return M2D(M2DConfig.tiny()).eval()


def test_parse_sizes_by_name() -> None:
    assert parse_sizes_by_name(RELEASE) == ((80, 1001), (16, 16), "16k", "m2d_clap_vit_base")
    assert parse_sizes_by_name("m2d_vit_base-80x608p16x16p32k-240128") == ((80, 608), (16, 16), "32k", "m2d_vit_base")
    with pytest.raises(ValueError, match="folder name"):
        parse_sizes_by_name("downloads")


def test_full_release_checkpoint_round_trip(tmp_path: Path) -> None:
    """A full-size plain checkpoint (151 keys incl. norm_stats) loads with sizes from the folder name only."""
    torch.manual_seed(0)
    source = M2D(M2DConfig.full(), empty=True)
    with torch.no_grad():
        for p in source.parameters():
            p.normal_(0.0, 0.02)  # one cheap pass instead of timm-like init: only equality is checked
    state = dict(source.backbone.state_dict())
    state["norm_stats"] = torch.tensor([-7.25, 4.35])
    assert len(state) == 151
    path = release_file(tmp_path, {"model": state})
    model = load_m2d(path)
    assert model.config == M2DConfig(norm_stats=model.config.norm_stats)
    assert model.config.norm_stats == pytest.approx((-7.25, 4.35))
    assert model.frontend.mean.item() == pytest.approx(-7.25) and model.frontend.std.item() == pytest.approx(4.35)
    assert torch.equal(model.backbone.pos_embed, source.backbone.pos_embed)
    assert torch.equal(model.backbone.blocks[11].mlp.fc2.weight, source.backbone.blocks[11].mlp.fc2.weight)
    assert not model.training


def test_evar_checkpoint_with_extras(tmp_path: Path, tiny_source: M2D) -> None:
    """EVAR prefix stripped, to_spec/head dropped, norm_stats applied; output equals the source with those stats."""
    path = release_file(tmp_path, evar_state(tiny_source))
    model = load_m2d(path, num_heads=2)
    assert (model.config.dim, model.config.depth, model.config.num_heads) == (32, 2, 2)
    assert model.config.norm_stats == pytest.approx((-7.3, 4.5))
    expected = M2D(M2DConfig.tiny()).eval()
    expected.backbone.load_state_dict(tiny_source.backbone.state_dict())
    expected.set_norm_stats(-7.3, 4.5)
    wav = 0.2 * torch.randn(2, 160000)
    lengths = torch.tensor([160000, 77777])
    with torch.no_grad():
        got, got_mask = model(wav, lengths)
        want, want_mask = expected(wav, lengths)
        default_stats, _ = tiny_source(wav, lengths)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert torch.equal(got_mask, want_mask)
    assert not torch.allclose(got, default_stats, atol=1e-4)  # the checkpoint's norm_stats really were used


def test_runtime_m2d_prefix_and_clap_projectors(tmp_path: Path, tiny_source: M2D) -> None:
    """RuntimeM2D saves ('backbone.' + CLAP 'audio_proj.' / 'text_proj.') load; no norm_stats -> default."""
    state = {"backbone." + k: v for k, v in tiny_source.backbone.state_dict().items()}
    state["backbone.audio_proj.0.weight"] = torch.zeros(32, 32)
    state["backbone.text_proj.weight"] = torch.zeros(32, 768)
    state["text_encoder.embeddings.weight"] = torch.zeros(4, 4)  # outside the backbone: ignored like extract_weight
    model = load_m2d(release_file(tmp_path, state), num_heads=2)
    assert model.config.norm_stats == DEFAULT_NORM_STATS
    assert torch.equal(model.backbone.cls_token, tiny_source.backbone.cls_token)


def test_explicit_config_overrides_the_folder_name(tmp_path: Path, tiny_source: M2D) -> None:
    path = release_file(tmp_path, evar_state(tiny_source, norm_stats=None), folder="my_weights")
    model = load_m2d(path, config=M2DConfig.tiny())
    assert model.config == M2DConfig.tiny()
    with pytest.raises(ValueError, match="folder name"):
        load_m2d(path, num_heads=2)


def test_unexpected_key_is_an_error(tmp_path: Path, tiny_source: M2D) -> None:
    state = evar_state(tiny_source)
    state["module.ar.runtime.backbone.decoder_pred.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"unexpected \['decoder_pred.weight'\]"):
        load_m2d(release_file(tmp_path, state), num_heads=2)


def test_missing_key_is_an_error(tmp_path: Path, tiny_source: M2D) -> None:
    state = evar_state(tiny_source)
    del state["module.ar.runtime.backbone.norm.bias"]
    with pytest.raises(ValueError, match=r"missing \['norm.bias'\]"):
        load_m2d(release_file(tmp_path, state), num_heads=2)


def test_shape_mismatch_with_folder_sizes_is_an_error(tmp_path: Path, tiny_source: M2D) -> None:
    """Weights for 80x1001 in a folder that says 80x608 fail on pos_embed, not silently."""
    path = release_file(tmp_path, evar_state(tiny_source), folder="m2d_vit_base-80x608p16x16-220930")
    with pytest.raises(ValueError, match="pos_embed"):
        load_m2d(path, num_heads=2)


def test_missing_file_and_untrusted_pickle(tmp_path: Path, tiny_source: M2D) -> None:
    with pytest.raises(FileNotFoundError):
        load_m2d(tmp_path / RELEASE / WEIGHTS)
    state = {"model": evar_state(tiny_source), "args": argparse.Namespace(lr=1e-4)}
    path = release_file(tmp_path, state)
    with pytest.raises(ValueError, match="trust_pickle=True"):
        load_m2d(path, num_heads=2)
    assert load_m2d(path, num_heads=2, trust_pickle=True).config.dim == 32


def test_reformat_state_dict_rejects_bad_norm_stats() -> None:
    with pytest.raises(ValueError, match="norm_stats"):
        reformat_state_dict({"norm_stats": torch.zeros(3)})
