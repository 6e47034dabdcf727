"""Export-friendly log-mel front-ends: Conv1d DFT + mel matrix + log with a floor, always fp32.

Why not ``torch.stft``: it needs complex tensors, which the TorchScript ONNX exporter rejects and which the
dynamo exporter turns into an ONNX ``STFT`` op that TensorRT runs in fp32 only (research/encoders.md section 5).
A real-valued Conv1d with a fixed ``[cos; -sin] x window`` basis computes the same spectrum with ops every
backend has, and the mel matrix is a MatMul. The reference formulas reproduced here:

- MuQ (torchaudio): ``MelSpectrogram(sr=24000, n_fft=2048, hop=240, n_mels=128)`` (periodic Hann, centre
  reflect padding, power 2, htk mel, no norm) -> ``AmplitudeToDB`` = ``10 * log10(clamp(x, 1e-10))``,
  last frame dropped, ``(x - mean) / std``.
- M2D (nnAudio): ``MelSpectrogram(sr=16000, n_fft=400, hop=160, n_mels=80, fmin=50, fmax=8000)`` (periodic
  Hann, centre reflect, power 2, slaney mel) -> ``log(x + eps)`` -> ``(x - mean) / std``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FLOAT32_EPS = float(np.finfo(np.float32).eps)
"""``torch.finfo(torch.float32).eps``: the offset nnAudio/M2D add before ``log``."""


@dataclass(frozen=True)
class LogMelConfig:
    """Parameters of a log-mel front-end (see the module docstring for the two reference settings)."""

    sample_rate: int
    n_fft: int
    hop_length: int
    n_mels: int
    f_min: float = 0.0
    f_max: float | None = None
    win_length: int | None = None
    htk: bool = False
    mel_norm: Literal["slaney"] | None = "slaney"
    log: Literal["db", "ln"] = "ln"
    floor: float = FLOAT32_EPS
    """``db``: power is clamped to at least ``floor``; ``ln``: ``floor`` is added before the log."""
    mean: float = 0.0
    std: float = 1.0
    drop_last_frame: bool = False

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` input samples (centre padding, optional last-frame drop)."""
        frames = num_samples // self.hop_length + 1
        return frames - 1 if self.drop_last_frame else frames


def dft_basis(n_fft: int, win_length: int | None = None) -> np.ndarray:
    """Real DFT basis ``[2 * (n_fft // 2 + 1), n_fft]``: rows ``cos`` then ``-sin``, times a periodic Hann window.

    A window shorter than ``n_fft`` is zero-padded on both sides, as ``torch.stft`` does.
    """
    win_length = win_length or n_fft
    n = np.arange(win_length)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_length)  # periodic Hann (torch / scipy fftbins=True)
    left = (n_fft - win_length) // 2
    padded = np.zeros(n_fft)
    padded[left : left + win_length] = window
    k = np.arange(n_fft // 2 + 1)[:, None]
    phase = 2.0 * np.pi * k * np.arange(n_fft)[None, :] / n_fft
    # float64 until the very end so the basis itself adds no error beyond fp32 rounding.
    return np.concatenate([np.cos(phase) * padded, -np.sin(phase) * padded]).astype(np.float32)


def mel_matrix(config: LogMelConfig) -> np.ndarray:
    """Mel filterbank ``[n_mels, n_fft // 2 + 1]`` from librosa (exact for slaney; htk/no-norm matches torchaudio)."""
    import librosa  # heavy import, only needed when a front-end is built

    return librosa.filters.mel(
        sr=config.sample_rate,
        n_fft=config.n_fft,
        n_mels=config.n_mels,
        fmin=config.f_min,
        fmax=config.f_max if config.f_max is not None else config.sample_rate / 2,
        htk=config.htk,
        norm=config.mel_norm,
        dtype=np.float32,
    )


class LogMelFrontend(nn.Module):
    """Waveform ``[B, N]`` -> normalised log-mel ``[B, n_mels, frames]`` in fp32.

    The basis, mel matrix and statistics are non-persistent buffers: they are derived from the config, so they
    never appear in (or conflict with) checkpoint state dicts, and the exporter bakes them in as constants.
    """

    def __init__(self, config: LogMelConfig) -> None:
        super().__init__()
        if config.hop_length <= 0:
            raise ValueError(f"hop_length must be positive, got {config.hop_length}")
        self.config = config
        self.register_buffer("basis", torch.from_numpy(dft_basis(config.n_fft, config.win_length))[:, None, :],
                             persistent=False)
        self.register_buffer("mel", torch.from_numpy(mel_matrix(config)), persistent=False)
        self.register_buffer("mean", torch.tensor(float(config.mean)), persistent=False)
        self.register_buffer("std", torch.tensor(float(config.std)), persistent=False)
        self.n_freq = config.n_fft // 2 + 1

    def set_stats(self, mean: float, std: float) -> None:
        """Replace the normalisation statistics (e.g. the ``norm_stats`` read from a checkpoint)."""
        self.mean.fill_(float(mean))
        self.std.fill_(float(std))

    def power_spectrogram(self, wav: torch.Tensor) -> torch.Tensor:
        """Power spectrum ``[B, n_fft // 2 + 1, frames]`` with centre reflect padding."""
        pad = self.config.n_fft // 2
        x = F.pad(wav.float()[:, None, :], (pad, pad), mode="reflect")
        spec = F.conv1d(x, self.basis, stride=self.config.hop_length)
        real, imag = spec[:, : self.n_freq], spec[:, self.n_freq :]
        return real * real + imag * imag  # re^2 + im^2: exact, and no sqrt-then-square round trip

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Compute the normalised log-mel spectrogram of ``wav`` ``[B, N]`` (N > n_fft // 2)."""
        mel = torch.matmul(self.mel, self.power_spectrogram(wav))
        if self.config.log == "db":
            logmel = 10.0 * torch.log10(torch.clamp(mel, min=self.config.floor))
        else:
            logmel = torch.log(mel + self.config.floor)
        if self.config.drop_last_frame:
            logmel = logmel[..., :-1]
        return (logmel - self.mean) / self.std
