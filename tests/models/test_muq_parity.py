"""Parity with the original ``muq`` package (tencent-ailab/MuQ), same random weights, tiny-ish body.

``muq`` is not in CI (it drags torchvision, x_clip and a CUDA torch); build the separate environment with
``scripts/muq_parity_env.sh`` and run ``/work/venv-muq/bin/pytest tests/models/test_muq_parity.py``.
``muq`` 0.1.0 passes an EasyDict as the HF conformer config, which transformers >= 5 rejects (no
``_attn_implementation``), so it needs transformers < 5.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

muq = pytest.importorskip("muq", reason="the muq package is not installed (see scripts/muq_parity_env.sh)")
transformers = pytest.importorskip("transformers")
if int(transformers.__version__.split(".")[0]) >= 5:
    pytest.skip("muq 0.1.0 needs transformers < 5 (EasyDict config lacks _attn_implementation)",
                allow_module_level=True)

from mmmos.models.muq import MuQ  # noqa: E402
from mmmos.models.muq_checkpoints import config_from_dict, load_muq_state  # noqa: E402

MEAN, STD = 6.768444971712967, 18.417922652295623


def package_model() -> torch.nn.Module:
    """The package's MuQ built without download: tiny body (16 stem channels, width 64, 2 layers, 4 heads)."""
    w2v = transformers.Wav2Vec2ConformerConfig(
        hidden_size=64, num_attention_heads=4, intermediate_size=128, hidden_act="swish",
        position_embeddings_type="rotary", rotary_embedding_base=10000, conv_depthwise_kernel_size=31,
        layer_norm_eps=1e-5,
    ).to_dict()
    w2v.pop("id2label", None)  # EasyDict cannot take the int keys
    w2v.pop("label2id", None)
    cfg = muq.MuQConfig(conv_dim=16, encoder_dim=64, encoder_depth=2, w2v2_config=w2v,
                        stat={"melspec_2048_mean": MEAN, "melspec_2048_std": STD})
    torch.manual_seed(0)
    model = muq.MuQ(cfg)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
            if isinstance(m, torch.nn.LayerNorm):  # non-trivial affine LayerNorms
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def pair() -> tuple[torch.nn.Module, dict]:
    pkg = package_model()
    return pkg, dataclasses.asdict(pkg.config)


def ours(config_dict: dict, pkg: torch.nn.Module, sample_rate: int) -> MuQ:
    model = MuQ(config_from_dict(config_dict, sample_rate=sample_rate))
    load_muq_state(model, pkg.state_dict())
    return model.eval()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("sample_rate", [24000, 16000])
def test_last_hidden_state_matches_package(pair: tuple, sample_rate: int) -> None:
    pkg, cfg = pair
    model = ours(cfg, pkg, sample_rate)
    torch.manual_seed(1)
    wav = torch.randn(2, model.window_samples) * 0.1
    full = torch.full((2,), model.window_samples)
    with torch.no_grad():
        ref = pkg(wav, output_hidden_states=True).last_hidden_state
        got, mask = model(wav, full)
    assert got.shape == ref.shape and mask.all()
    assert rel_err(got, ref) < 1e-4


def test_frontend_matches_package(pair: tuple) -> None:
    pkg, cfg = pair
    model = ours(cfg, pkg, 24000)
    wav = torch.randn(2, 240000) * 0.3
    with torch.no_grad():
        ref = pkg.model.normalize(pkg.model.preprocessing(wav, features=["melspec_2048"]))["melspec_2048"]
        got = model.frontend(wav)
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() < 1e-4 * ref.abs().max().item()


def test_masked_matches_package_attention_mask(pair: tuple) -> None:
    pkg, cfg = pair
    model = ours(cfg, pkg, 24000)
    torch.manual_seed(2)
    wav = torch.randn(2, 240000) * 0.1
    lengths = torch.tensor([240000, 100000])
    wav[1, 100000:] = 0.0  # the package does not zero the tail itself
    sample_mask = torch.arange(240000)[None, :] < lengths[:, None]
    with torch.no_grad():
        ref = pkg(wav, attention_mask=sample_mask).last_hidden_state
        got, mask = model(wav, lengths)
    # The package subsamples the sample mask every int(N / T) = 960 samples: the same rule as ours at 24 kHz.
    assert torch.equal(mask, sample_mask[:, ::960][:, :250])
    assert rel_err(got[mask], ref[mask]) < 1e-4
