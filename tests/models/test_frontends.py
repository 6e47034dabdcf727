"""LogMelFrontend against the reference formulas computed independently in numpy (float64).

Reference: centre reflect padding, periodic Hann from scipy, ``np.fft.rfft``, ``|X|^2``, librosa mel matrix
(float64), then ``log(x + eps)`` (M2D / nnAudio) or ``10 log10(clamp(x, 1e-10))`` with the last frame dropped
(MuQ / torchaudio), then ``(x - mean) / std``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

librosa = pytest.importorskip("librosa")
signal = pytest.importorskip("scipy.signal")

from mmmos.models.frontends import FLOAT32_EPS, LogMelConfig, LogMelFrontend  # noqa: E402

M2D_CONFIG = LogMelConfig(
    sample_rate=16000, n_fft=400, win_length=400, hop_length=160, n_mels=80, f_min=50.0, f_max=8000.0,
    htk=False, mel_norm="slaney", log="ln", floor=FLOAT32_EPS, mean=-7.1, std=4.2,
)
MUQ_CONFIG = LogMelConfig(
    sample_rate=24000, n_fft=2048, hop_length=240, n_mels=128, f_min=0.0, f_max=12000.0,
    htk=True, mel_norm=None, log="db", floor=1e-10, mean=6.7684, std=18.4179, drop_last_frame=True,
)


def reference_mel_power(wav: np.ndarray, config: LogMelConfig) -> np.ndarray:
    """Mel power ``[n_mels, frames]`` of a 1-D signal, all in float64."""
    n_fft, hop = config.n_fft, config.hop_length
    padded = np.pad(wav.astype(np.float64), n_fft // 2, mode="reflect")
    frames = 1 + (len(padded) - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    window = signal.get_window("hann", n_fft, fftbins=True)  # periodic Hann
    power = np.abs(np.fft.rfft(padded[index] * window, axis=-1)) ** 2  # [frames, n_fft // 2 + 1]
    mel = librosa.filters.mel(
        sr=config.sample_rate, n_fft=n_fft, n_mels=config.n_mels, fmin=config.f_min, fmax=config.f_max,
        htk=config.htk, norm=config.mel_norm, dtype=np.float64,
    )
    return mel @ power.T


def reference_logmel(wav: np.ndarray, config: LogMelConfig) -> np.ndarray:
    """The normalised log-mel ``[n_mels, frames]`` the reference code computes."""
    mel = reference_mel_power(wav, config)
    db = config.log == "db"
    logmel = 10.0 * np.log10(np.maximum(mel, config.floor)) if db else np.log(mel + config.floor)
    if config.drop_last_frame:
        logmel = logmel[:, :-1]
    return (logmel - config.mean) / config.std


def make_signal(sample_rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """A chirp plus noise: energy in every band, so relative errors are meaningful everywhere."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    chirp = 0.5 * np.sin(2 * np.pi * (100.0 * t + 0.5 * (sample_rate / 2.5 - 100.0) / seconds * t**2))
    return (chirp + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)


@pytest.mark.parametrize("config", [M2D_CONFIG, MUQ_CONFIG], ids=["m2d", "muq"])
def test_mel_power_matches_numpy_reference(config: LogMelConfig) -> None:
    """The Conv1d-DFT power spectrum through the mel matrix equals the float64 STFT reference to 1e-4 relative."""
    wav = make_signal(config.sample_rate, 1.0)
    frontend = LogMelFrontend(config)
    with torch.no_grad():
        ours = torch.matmul(frontend.mel, frontend.power_spectrogram(torch.from_numpy(wav)[None]))[0].numpy()
    ref = reference_mel_power(wav, config)
    assert ours.shape == ref.shape
    # Only bins holding energy: filters outside f_min..f_max (none here) or all-zero htk rows would be 0 / 0.
    significant = ref > 1e-6 * ref.max()
    assert significant.mean() > 0.99
    rel = np.abs(ours[significant] - ref[significant]) / ref[significant]
    assert rel.max() < 1e-4


@pytest.mark.parametrize("config", [M2D_CONFIG, MUQ_CONFIG], ids=["m2d", "muq"])
def test_logmel_matches_numpy_reference(config: LogMelConfig) -> None:
    """The full front-end (log, drop-last, normalisation) equals the reference within 1e-4 relative to its range."""
    wav = np.stack([make_signal(config.sample_rate, 1.0, seed=s) for s in (0, 1)])
    wav[1, wav.shape[1] // 2 :] = 0.0  # digital silence: the floor must keep it finite and exact
    with torch.no_grad():
        ours = LogMelFrontend(config)(torch.from_numpy(wav)).numpy()
    ref = np.stack([reference_logmel(w, config) for w in wav])
    assert ours.shape == ref.shape == (2, config.n_mels, config.num_frames(wav.shape[1]))
    assert np.isfinite(ours).all()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_frame_counts() -> None:
    """Centre padding gives ``N // hop + 1`` frames: 1001 for M2D on 10 s, 1000 for MuQ (last one dropped)."""
    assert M2D_CONFIG.num_frames(160000) == 1001
    assert MUQ_CONFIG.num_frames(240000) == 1000
    with torch.no_grad():
        out = LogMelFrontend(M2D_CONFIG)(torch.zeros(1, 16000))
    assert out.shape == (1, 80, 101)


def test_set_stats_and_fp32() -> None:
    """``set_stats`` changes the normalisation; the output is fp32 even for fp64 input."""
    wav = torch.from_numpy(make_signal(16000, 0.5)).double()[None]
    frontend = LogMelFrontend(M2D_CONFIG)
    with torch.no_grad():
        before = frontend(wav)
        frontend.set_stats(0.0, 1.0)
        raw = frontend(wav)
    assert raw.dtype == torch.float32
    torch.testing.assert_close(before, (raw + 7.1) / 4.2, rtol=1e-5, atol=1e-5)


def test_silence_is_finite_at_the_floor() -> None:
    """All-zero input gives exactly the normalised floor, never -inf."""
    with torch.no_grad():
        m2d = LogMelFrontend(M2D_CONFIG)(torch.zeros(1, 4000))
        muq = LogMelFrontend(MUQ_CONFIG)(torch.zeros(1, 4800))
    torch.testing.assert_close(m2d, torch.full_like(m2d, (np.log(FLOAT32_EPS) + 7.1) / 4.2))
    torch.testing.assert_close(muq, torch.full_like(muq, (-100.0 - 6.7684) / 18.4179))


def test_basis_and_stats_are_not_in_the_state_dict() -> None:
    """Bases are derived from the config, so checkpoints never carry (or conflict with) them."""
    assert LogMelFrontend(M2D_CONFIG).state_dict() == {}
