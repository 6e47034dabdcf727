"""Presets and the PyTorch reference pipeline on the tiny tri-encoder preset (mmmos.models.presets / reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmmos import AXES
from mmmos.models.ensemble import random_members
from mmmos.models.fusion import PooledEncoder
from mmmos.models.presets import PRESETS, build_encoders, encoder_dims, get_preset
from mmmos.models.reference import ReferenceModel


@pytest.fixture(scope="module")
def reference() -> ReferenceModel:
    """Tiny wavlm + muq + m2d with six random members covering the three aggregators."""
    encoders = build_encoders("tiny", seed=0)
    return ReferenceModel(encoders, random_members(encoder_dims(encoders), 6, seed=0, hidden=32))


def _windows(ref: ReferenceModel, batch: int, valid: list[int] | None = None) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(1)
    wavs, lengths = {}, {}
    for name, pooled in ref.encoders.items():
        n = pooled.encoder.window_samples
        wavs[name] = 0.1 * torch.randn(batch, n, generator=g)
        frac = valid or [1.0] * batch
        lengths[name] = torch.tensor([max(1, int(f * n)) for f in frac], dtype=torch.int64)
    return wavs, lengths


def test_presets() -> None:
    assert set(PRESETS) == {"tiny", "full"}
    assert get_preset("tiny").name == "tiny"
    with pytest.raises(KeyError, match="unknown preset"):
        get_preset("huge")


def test_build_encoders_is_deterministic() -> None:
    a = build_encoders("tiny", seed=3, names=("m2d",))
    b = build_encoders(get_preset("tiny"), seed=3)
    assert list(b) == ["wavlm", "muq", "m2d"] and list(a) == ["m2d"]
    assert all(not m.training for m in b.values())
    for (k, v), (_, w) in zip(a["m2d"].state_dict().items(), b["m2d"].state_dict().items(), strict=True):
        assert torch.equal(v, w), k
    c = build_encoders("tiny", seed=4, names=("m2d",))
    assert not torch.equal(next(iter(c["m2d"].parameters())), next(iter(a["m2d"].parameters())))


def test_tiny_encoder_dims_and_pooled_shapes(reference: ReferenceModel) -> None:
    dims = encoder_dims({n: p.encoder for n, p in reference.encoders.items()})
    assert set(dims) == {"wavlm", "muq", "m2d"}
    wavs, lengths = _windows(reference, 2, [1.0, 0.3])
    pooled = PooledEncoder(reference.encoders["wavlm"].encoder, frames=True)
    with torch.no_grad():
        p, f, s = pooled(wavs["wavlm"], lengths["wavlm"])
    n_layers, d = dims["wavlm"]
    assert p.shape == (2, n_layers, d) and f.shape == (2, n_layers, 50, d) and s.shape == (2, 50)
    assert s[0].sum() == 50 and 14 <= s[1].sum() <= 16  # 3 s of 10 s valid


def test_reference_shared_encoders_equal_the_naive_ensemble(reference: ReferenceModel) -> None:
    """Sharing the encoders across members changes nothing (speed is measured by mmmos-bench, not here)."""
    wavs, lengths = _windows(reference, 1)
    scores, mean, std = reference.forward_windows(wavs, lengths)
    assert scores.shape == (1, 6, 4) and mean.shape == (1, 4) and std.shape == (1, 4)
    naive = reference.forward_naive(wavs, lengths)
    for a, b in zip((scores, mean, std), naive, strict=True):
        torch.testing.assert_close(a, b)


def test_reference_batch_independence_and_padding(reference: ReferenceModel) -> None:
    wavs, lengths = _windows(reference, 3, [1.0, 0.45, 0.05])
    full, _, _ = reference.forward_windows(wavs, lengths)
    alone, _, _ = reference.forward_windows(
        {k: v[1:2] for k, v in wavs.items()}, {k: v[1:2] for k, v in lengths.items()}
    )
    torch.testing.assert_close(full[1:2], alone, rtol=1e-5, atol=1e-5)
    noisy = {k: v.clone() for k, v in wavs.items()}
    for k, v in noisy.items():
        v[2, int(lengths[k][2]) :] = 5.0  # junk past the valid length cannot change a score
    again, _, _ = reference.forward_windows(noisy, lengths)
    torch.testing.assert_close(again, full, rtol=1e-5, atol=1e-5)


def test_score_waveform_windows_and_file_average(reference: ReferenceModel) -> None:
    sr = 22050
    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal(int(25 * sr))).astype(np.float32)
    out = reference.score_waveform(wav, sr)
    assert out["window_scores"].shape == (3, 6, 4)
    np.testing.assert_allclose(out["weights"], [1.0, 1.0, 0.5])
    w = out["weights"][:, None, None]
    members = (out["window_scores"] * w).sum(0) / w.sum()
    np.testing.assert_allclose(out["member_scores"], members, rtol=1e-6)
    for i, axis in enumerate(AXES):
        assert out[axis] == pytest.approx(float(members[:, i].mean()), rel=1e-6)
        assert out["std"][axis] == pytest.approx(float(members[:, i].std()), rel=1e-5)
    assert out["duration_s"] == pytest.approx(25.0)
    stereo = reference.score_waveform(np.stack([wav, wav], axis=1), sr)  # channel mean of identical channels
    np.testing.assert_allclose(stereo["member_scores"], out["member_scores"], rtol=1e-6)


def test_score_waveform_rejects_bad_audio(reference: ReferenceModel) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        reference.score_waveform(np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(ValueError, match="NaN"):
        reference.score_waveform(np.array([0.0, np.nan], dtype=np.float32), 16000)
