"""M2D encoder: shapes, parameter count, frame grid, masking, block maths, ONNX export."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

from mmmos.models.m2d import M2D, M2DConfig, count_parameters, expected_frames


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid frames (local, so this test does not depend on models/fusion.py)."""
    w = mask.to(x.dtype)[..., None]
    return (x * w).sum(1) / w.sum(1)


@pytest.fixture(scope="module")
def tiny() -> M2D:
    torch.manual_seed(0)
    return M2D(M2DConfig.tiny()).eval()


@pytest.fixture(scope="module")
def full() -> M2D:
    torch.manual_seed(0)
    return M2D(M2DConfig.full()).eval()


def test_full_parameter_count(full: M2D) -> None:
    """ViT-B/16 on the 5 x 62 grid: 85,492,992 parameters.

    The release's LocalViT reports 85,492,994: its extra 2 are the ``norm_stats`` parameter, which we keep as
    front-end constants. The front-end itself holds buffers only.
    """
    assert count_parameters(full) == 85_492_992
    assert count_parameters(full.frontend) == 0
    assert full.backbone.pos_embed.shape == (1, 311, 768)


def test_full_output_shape_on_10s(full: M2D) -> None:
    """One 10 s window at 16 kHz gives [B, 62, 3840] features and a [B, 62] mask."""
    assert (full.name, full.sample_rate, full.window_samples, full.out_dim) == ("m2d", 16000, 160000, 3840)
    assert full.frame_seconds == pytest.approx(0.16)
    wav = 0.1 * torch.randn(2, 160000)
    with torch.no_grad():
        features, mask = full(wav, torch.tensor([160000, 16000]))
    assert features.shape == (2, 62, 3840)
    assert features.dtype == torch.float32
    assert mask.shape == (2, 62) and mask.dtype == torch.bool
    assert torch.isfinite(features).all()
    assert mask[0].all() and int(mask[1].sum()) == 7  # starts 0, 2560, ..., 15360 < 16000


def test_tiny_preset(tiny: M2D) -> None:
    """Same grid, width 32: output 5 * 32 = 160 per frame."""
    with torch.no_grad():
        features, mask = tiny(torch.randn(3, 160000), torch.tensor([160000, 80000, 1]))
    assert features.shape == (3, 62, 160)
    assert mask.sum(1).tolist() == [62, 32, 1]


def test_frame_counts_match_encode_lms() -> None:
    """Output frames for other durations follow portable_m2d's chunking (research/encoders.md section 4.2)."""
    config = M2DConfig.full()
    seconds = [1.0, 5.0, 10.0, 10.01, 15.0, 20.0, 30.0]
    assert [expected_frames(config, round(s * 16000)) for s in seconds] == [7, 32, 62, 63, 94, 124, 186]


def test_chunked_window_runs_with_sliced_positions() -> None:
    """A ViT shorter than the window (80x608) encodes two chunks: 38 + 25 patch columns."""
    torch.manual_seed(0)
    model = M2D(replace(M2DConfig.tiny(), input_frames=608)).eval()
    assert model.num_frames == 63
    with torch.no_grad():
        features, _ = model(torch.randn(1, 160000), torch.tensor([160000]))
    assert features.shape == (1, 63, 160)
    # Frame 38 is the first of the second chunk: mel frame 608, sample 608 * 160.
    assert model.frame_starts[38].item() == 608 * 160


def test_mask_tail_does_not_change_valid_frames(tiny: M2D) -> None:
    """Silence vs loud noise past the valid length: pooled valid frames (and all features) are unchanged."""
    length = 70000
    torch.manual_seed(1)
    quiet = 0.1 * torch.randn(2, 160000)
    quiet[:, length:] = 0.0
    loud = quiet.clone()
    loud[:, length:] = 10.0 * torch.randn(2, 160000 - length)
    lengths = torch.tensor([length, length])
    with torch.no_grad():
        fq, mq = tiny(quiet, lengths)
        fl, ml = tiny(loud, lengths)
        fu, _ = tiny(loud, torch.tensor([160000, 160000]))
    assert torch.equal(mq, ml)
    assert int(mq[0].sum()) == 28  # ceil(70000 / 2560)
    torch.testing.assert_close(masked_mean(fl, ml), masked_mean(fq, mq), rtol=0, atol=1e-5)
    torch.testing.assert_close(fl, fq, rtol=0, atol=1e-5)
    assert (masked_mean(fu, ml) - masked_mean(fq, mq)).abs().max() > 1e-3  # the tail would matter unmasked


def test_batch_independence(tiny: M2D) -> None:
    """A window's features do not depend on what else is in the batch."""
    wav = torch.randn(3, 160000)
    lengths = torch.tensor([160000, 12345, 99999])
    with torch.no_grad():
        batched, _ = tiny(wav, lengths)
        single, _ = tiny(wav[1:2], lengths[1:2])
    torch.testing.assert_close(batched[1:2], single, rtol=0, atol=1e-5)


def test_zero_length_keeps_one_valid_frame(tiny: M2D) -> None:
    """An empty window still has one valid frame, so pooling never divides by zero."""
    with torch.no_grad():
        _, mask = tiny(torch.zeros(1, 160000), torch.tensor([0]))
    assert mask.sum().item() == 1 and bool(mask[0, 0])


def test_wrong_window_length_is_a_clear_error(tiny: M2D) -> None:
    with pytest.raises(ValueError, match="160000 samples"):
        tiny(torch.zeros(1, 1000), torch.tensor([1000]))


def test_patch_order_is_frequency_major(tiny: M2D) -> None:
    """Output frame t, band f equals token ``f * T + t`` of the ViT ('b (f t) d -> b t (f d)')."""
    wav = torch.randn(1, 160000)
    with torch.no_grad():
        features, _ = tiny(wav, torch.tensor([160000]))
        tokens = tiny.backbone(tiny.frontend(wav).unsqueeze(1), 62)  # [1, 5 * 62, 32]
    d, t_count = 32, 62
    for f in range(5):
        for t in (0, 17, 61):
            assert torch.equal(features[0, t, f * d : (f + 1) * d], tokens[0, f * t_count + t])


def test_block_matches_torch_transformer_layer() -> None:
    """Our pre-LN block (explicit matmul attention) equals torch's own pre-LN encoder layer with the same weights."""
    torch.manual_seed(0)
    config = M2DConfig.tiny()
    model = M2D(config).eval()
    block = model.backbone.blocks[0]
    ref = nn.TransformerEncoderLayer(
        config.dim, config.num_heads, int(config.dim * config.mlp_ratio), dropout=0.0, activation="gelu",
        layer_norm_eps=config.ln_eps, batch_first=True, norm_first=True,
    ).eval()
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(block.attn.qkv.weight)
        ref.self_attn.in_proj_bias.copy_(block.attn.qkv.bias)
        ref.self_attn.out_proj.load_state_dict(block.attn.proj.state_dict())
        ref.linear1.load_state_dict(block.mlp.fc1.state_dict())
        ref.linear2.load_state_dict(block.mlp.fc2.state_dict())
        ref.norm1.load_state_dict(block.norm1.state_dict())
        ref.norm2.load_state_dict(block.norm2.state_dict())
        x = torch.randn(2, 311, config.dim)
        torch.testing.assert_close(block(x), ref(x), rtol=1e-5, atol=1e-5)


def test_block_matches_timm() -> None:
    """Optional: parity with timm's ViT Block, the class the release's LocalViT is built from."""
    vit = pytest.importorskip("timm.models.vision_transformer", reason="timm not installed")
    torch.manual_seed(0)
    config = M2DConfig.tiny()
    block = M2D(config).backbone.blocks[1].eval()
    ref = vit.Block(config.dim, config.num_heads, config.mlp_ratio, qkv_bias=True,
                    norm_layer=partial(nn.LayerNorm, eps=1e-6)).eval()
    ref.load_state_dict(block.state_dict(), strict=True)  # same parameter names
    x = torch.randn(2, 311, config.dim)
    with torch.no_grad():
        torch.testing.assert_close(block(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_onnx_export_tiny_matches_eager(tiny: M2D, tmp_path, dynamo: bool) -> None:
    """The tiny encoder exports with a dynamic batch; ONNX Runtime matches eager within 1e-4."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    path = tmp_path / "m2d.onnx"
    example = (torch.randn(2, 160000), torch.tensor([160000, 40000]))
    if dynamo:
        batch = torch.export.Dim("batch")
        shapes = {"wav": {0: batch}, "lengths": {0: batch}}
        torch.onnx.export(tiny, example, path, input_names=["wav", "lengths"],
                          output_names=["features", "frame_mask"], dynamo=True, dynamic_shapes=shapes)
    else:
        axes = {name: {0: "batch"} for name in ("wav", "lengths", "features", "frame_mask")}
        torch.onnx.export(tiny, example, path, input_names=["wav", "lengths"],
                          output_names=["features", "frame_mask"], dynamo=False, opset_version=17,
                          dynamic_axes=axes)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    # No STFT/DFT (front-end is Conv1d) and no Clip (TensorRT lacks int64 Clip; lengths use Max).
    assert not ops & {"STFT", "DFT", "Clip"}, ops
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    wav = (0.3 * rng.standard_normal((3, 160000))).astype(np.float32)
    lengths = np.array([160000, 50000, 1], dtype=np.int64)
    features, mask = session.run(None, {"wav": wav, "lengths": lengths})
    with torch.no_grad():
        ref_features, ref_mask = tiny(torch.from_numpy(wav), torch.from_numpy(lengths))
    assert features.shape == (3, 62, 160)
    np.testing.assert_array_equal(mask, ref_mask.numpy())
    np.testing.assert_allclose(features, ref_features.numpy(), rtol=1e-4, atol=1e-4)
