"""Pooling, normalisation and frame -> step alignment (mmmos.models.fusion)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmmos.models.fusion import PooledEncoder, align_to_steps, l2_normalize, masked_mean, step_assignment


class FakeEncoder(nn.Module):
    """Obeys the encoder contract with a strided linear frame map (small and fast)."""

    def __init__(self, name: str, hop: int = 400, dim: int = 8, layers: int = 3, sample_rate: int = 16000) -> None:
        super().__init__()
        self.name = name
        self.sample_rate = sample_rate
        self.window_samples = 10 * sample_rate
        self.frame_seconds = hop / sample_rate
        self.out_dim = dim
        self.hop = hop
        self.layers = layers
        self.proj = nn.Linear(hop, dim * (layers if name == "wavlm" else 1))

    def forward(self, wav: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Zero past lengths, frame by hop, project; valid iff frame start < length."""
        idx = torch.arange(wav.shape[1]).unsqueeze(0)
        wav = wav * (idx < lengths.unsqueeze(1)).to(wav.dtype)
        t = wav.shape[1] // self.hop
        x = self.proj(wav[:, : t * self.hop].reshape(wav.shape[0], t, self.hop))
        mask = (torch.arange(t).unsqueeze(0) * self.hop) < lengths.unsqueeze(1)
        if self.name == "wavlm":
            x = x.reshape(wav.shape[0], t, self.layers, self.out_dim).transpose(1, 2)
        return x, mask


def _prefix_mask(lengths: list[int], t: int) -> Tensor:
    return torch.arange(t).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


def test_masked_mean_counts_valid_frames_only() -> None:
    x = torch.randn(3, 10, 4)
    mask = _prefix_mask([10, 4, 1], 10)
    out = masked_mean(x, mask)
    for b, n in enumerate([10, 4, 1]):
        torch.testing.assert_close(out[b], x[b, :n].mean(0))
    noisy = x.clone()
    noisy[~mask] = 1e6  # whatever lies in padding must not matter
    torch.testing.assert_close(masked_mean(noisy, mask), out)


def test_masked_mean_layers_and_empty_rows() -> None:
    x = torch.randn(2, 3, 7, 5)  # [B, L, T, D] as WavLM
    mask = _prefix_mask([7, 2], 7)
    out = masked_mean(x, mask)
    assert out.shape == (2, 3, 5)
    torch.testing.assert_close(out[1], x[1, :, :2].mean(1))
    empty = masked_mean(x, torch.zeros(2, 7, dtype=torch.bool))
    assert torch.isfinite(empty).all() and (empty == 0).all()


def test_l2_normalize_matches_functional() -> None:
    x = torch.randn(4, 6, 16)
    x[0, 0] = 0.0  # the eps branch
    torch.testing.assert_close(l2_normalize(x), F.normalize(x, dim=-1, eps=1e-12))


def test_step_assignment_by_centre_time() -> None:
    a = step_assignment(n_frames=499, frame_seconds=0.02, window_seconds=10.0, steps=50)
    assert a.shape == (499, 50)
    assert (a.sum(1) == 1).all()  # every frame in exactly one step
    assert a[:10, 0].all() and a[10:20, 1].all()  # 0.2 s steps hold 10 frames of 20 ms
    assert a[498, 49] == 1
    b = step_assignment(n_frames=70, frame_seconds=0.16, window_seconds=10.0, steps=50)
    assert b[69, 49] == 1  # centre past the window goes to the last step


def test_align_to_steps_means_and_mask() -> None:
    x = torch.randn(2, 20, 3)
    mask = _prefix_mask([20, 7], 20)
    assign = step_assignment(20, 0.5, 10.0, 5)  # 4 frames per step
    frames, steps = align_to_steps(x, mask, assign)
    assert frames.shape == (2, 5, 3) and steps.dtype == torch.float32
    torch.testing.assert_close(frames[0, 2], x[0, 8:12].mean(0))
    torch.testing.assert_close(frames[1, 1], x[1, 4:7].mean(0))  # partial step: valid frames only
    assert steps[1].tolist() == [1, 1, 0, 0, 0]
    assert (frames[1, 2:] == 0).all()
    noisy = x.clone()
    noisy[~mask] = -3e4
    torch.testing.assert_close(align_to_steps(noisy, mask, assign)[0], frames)
    layered, _ = align_to_steps(torch.stack([x, 2 * x], 1), mask, assign)  # [B, L, T, D]
    torch.testing.assert_close(layered[:, 1], 2 * frames)


def test_align_rejects_wrong_frame_count() -> None:
    with pytest.raises(ValueError, match="assignment matrix"):
        align_to_steps(torch.randn(1, 9, 2), torch.ones(1, 9, dtype=torch.bool), step_assignment(10, 1.0, 10.0, 5))


@pytest.mark.parametrize("name", ["wavlm", "muq"])
def test_pooled_encoder_outputs(name: str) -> None:
    torch.manual_seed(0)
    enc = FakeEncoder(name).eval()
    pooled = PooledEncoder(enc, frames=True, steps=50)
    assert pooled.output_names == [f"{name}_pooled", f"{name}_frames", f"{name}_steps"]
    wav = torch.randn(2, enc.window_samples)
    lengths = torch.tensor([enc.window_samples, 30000])
    with torch.no_grad():
        p, f, s = pooled(wav, lengths)
        noisy = wav.clone()
        noisy[1, 30000:] = torch.randn(enc.window_samples - 30000) * 100
        p2, f2, s2 = pooled(noisy, lengths)
    if name == "wavlm":
        assert p.shape == (2, 3, 8) and f.shape == (2, 3, 50, 8)
        assert not torch.allclose(p.norm(dim=-1), torch.ones(2, 3))  # NOT normalised: members mix first
    else:
        assert p.shape == (2, 8) and f.shape == (2, 50, 8)
        torch.testing.assert_close(p.norm(dim=-1), torch.ones(2))
    assert s[0].sum() == 50 and s[1].sum() == 10  # 30000 samples = 1.875 s -> 10 steps of 0.2 s hold a frame
    torch.testing.assert_close(p2, p)
    torch.testing.assert_close(f2, f)
    assert torch.equal(s2, s)
    assert PooledEncoder(enc).output_names == [f"{name}_pooled"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_pooled_encoder_exports_with_frames(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    pytest.importorskip("onnx", reason="onnx not installed")
    torch.manual_seed(0)
    pooled = PooledEncoder(FakeEncoder("wavlm").eval(), frames=True).eval()
    n = pooled.encoder.window_samples
    path = tmp_path / "wavlm.onnx"
    names = pooled.output_names
    torch.onnx.export(
        pooled,
        (torch.randn(2, n), torch.tensor([n, 5000])),
        str(path),
        input_names=["wav", "lengths"],
        output_names=names,
        dynamic_axes={k: {0: "batch"} for k in ["wav", "lengths", *names]},
        opset_version=17,
        dynamo=False,
    )
    wav = torch.randn(3, n)
    lengths = torch.tensor([n, 12345, 1])
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"wav": wav.numpy(), "lengths": lengths.numpy()}
    )
    with torch.no_grad():
        want = pooled(wav, lengths)
    for g, w in zip(got, want, strict=True):
        assert g.shape == tuple(w.shape)
        assert abs(g - w.numpy()).max() < 1e-5


def test_l2_normalize_has_a_finite_gradient_at_zero() -> None:
    """An all-zero vector (an empty blstm-t step) must not turn every gradient NaN during training."""
    x = torch.zeros(2, 5, requires_grad=True)
    y = torch.tensor([[3.0, 4.0]], requires_grad=True)
    (l2_normalize(x).sum() + l2_normalize(y).sum()).backward()
    assert torch.isfinite(x.grad).all()
    assert torch.allclose(l2_normalize(y), torch.tensor([[0.6, 0.8]]))
