"""The PyTorch reference pipeline: encoders -> pooling -> ensemble, and per-file scoring of a waveform.

This is what the ONNX/TensorRT runtime is checked against. ``forward_windows`` runs each encoder once per
window and shares its outputs across members (what the exported graphs do); ``forward_naive`` re-runs
the encoders for every member (how the reference MMMOS code would score an ensemble), for benchmarks.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import soxr
import torch
from torch import Tensor, nn

from mmmos import AXES
from mmmos.models.ensemble import Ensemble
from mmmos.models.fusion import PooledEncoder
from mmmos.models.members import Member

WINDOW_SECONDS = 10.0


class ReferenceModel(nn.Module):
    """Encoders (a dict in bundle order) plus ensemble members, wired as the bundle would be.

    Each encoder is wrapped in a ``PooledEncoder``; frame outputs are computed only for encoders that some
    ``blstm-t`` member reads.
    """

    def __init__(self, encoders: dict[str, nn.Module], members: list[Member] | Ensemble, steps: int = 50) -> None:
        super().__init__()
        self.ensemble = members if isinstance(members, Ensemble) else Ensemble(list(members))
        needed = set(self.ensemble.input_names)
        missing = sorted({n.rsplit("_", 1)[0] for n in needed} - set(encoders))
        if missing:
            raise ValueError(f"members read encoders {missing} that were not given; pass them in `encoders`.")
        self.encoders = nn.ModuleDict(
            {name: PooledEncoder(enc, frames=f"{name}_frames" in needed, steps=steps) for name, enc in encoders.items()}
        )
        self.eval()

    def _encode(self, names: list[str], wavs: dict[str, Tensor], lengths: dict[str, Tensor]) -> dict[str, Tensor]:
        """Run the pooled encoders in ``names`` and collect their named outputs."""
        outputs: dict[str, Tensor] = {}
        for name in names:
            pooled = self.encoders[name]
            outputs.update(zip(pooled.output_names, pooled(wavs[name], lengths[name]), strict=True))
        return outputs

    @torch.no_grad()
    def forward_windows(self, wavs: dict[str, Tensor], lengths: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Score windows: ``wavs[e] [B, N_e]``, ``lengths[e] [B]`` -> ``(scores [B, M, 4], mean, std)``.

        Each encoder runs once and all members share its outputs.
        """
        used = [n for n in self.encoders if any(k.startswith(f"{n}_") for k in self.ensemble.input_names)]
        return self.ensemble(self._encode(used, wavs, lengths))

    @torch.no_grad()
    def forward_naive(self, wavs: dict[str, Tensor], lengths: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Same result as ``forward_windows``, but re-running the encoders for every member (the slow way)."""
        per_member = []
        for member in self.ensemble.members:
            used = [n for n in self.encoders if n in member.config.encoders]
            per_member.append(member(self._encode(used, wavs, lengths)))
        scores = torch.stack(per_member, dim=1)
        mean = scores.mean(dim=1)
        std = torch.sqrt(((scores - mean.unsqueeze(1)) ** 2).mean(dim=1))
        return scores, mean, std

    def score_waveform(self, wav: np.ndarray, sr: int, batch_size: int = 8) -> dict[str, Any]:
        """Score one clip per the contract's window and per-file rules.

        ``wav``: 1-D samples, or 2-D ``[frames, channels]`` (soundfile layout; mixed to mono by the channel
        mean). Each encoder gets the clip resampled (soxr) to its own rate, cut into 10 s windows (last one
        zero-padded). Returns ``{"PQ": ..., "PC": ..., "CE": ..., "CU": ..., "std": {axis: ...},
        "member_scores": [M, 4], "window_scores": [K, M, 4], "weights": [K], "duration_s": ...}``.
        """
        x = np.asarray(wav, dtype=np.float32)
        if x.ndim == 2:
            x = x.mean(axis=1)
        if x.ndim != 1 or x.size == 0:
            raise ValueError(f"expected a non-empty 1-D or [frames, channels] waveform, got shape {np.shape(wav)}.")
        if not np.all(np.isfinite(x)):
            raise ValueError("the waveform holds NaN or inf samples; clean or re-decode the audio.")
        if sr <= 0:
            raise ValueError(f"sample rate must be positive, got {sr}.")
        duration = x.size / float(sr)
        n_windows = max(1, math.ceil(duration / WINDOW_SECONDS))
        # Weight = valid seconds / 10, measured on the source samples.
        src_window = WINDOW_SECONDS * sr
        weights = np.array(
            [min(max(x.size - k * src_window, 0.0), src_window) / src_window for k in range(n_windows)],
            dtype=np.float32,
        )
        wins: dict[str, np.ndarray] = {}
        lens: dict[str, np.ndarray] = {}
        for name, pooled in self.encoders.items():
            rate = int(pooled.encoder.sample_rate)
            width = int(pooled.encoder.window_samples)
            y = x if rate == sr else soxr.resample(x, sr, rate).astype(np.float32)
            padded = np.zeros(n_windows * width, dtype=np.float32)
            take = min(y.size, padded.size)
            padded[:take] = y[:take]
            wins[name] = padded.reshape(n_windows, width)
            lens[name] = np.clip(y.size - np.arange(n_windows) * width, 1, width).astype(np.int64)
        chunks = []
        for start in range(0, n_windows, batch_size):
            sl = slice(start, start + batch_size)
            scores, _, _ = self.forward_windows(
                {k: torch.from_numpy(v[sl]) for k, v in wins.items()},
                {k: torch.from_numpy(v[sl]) for k, v in lens.items()},
            )
            chunks.append(scores.numpy())
        window_scores = np.concatenate(chunks, axis=0)  # [K, M, 4]
        member_scores = (window_scores * weights[:, None, None]).sum(axis=0) / weights.sum()
        mean = member_scores.mean(axis=0)
        std = member_scores.std(axis=0)  # population (ddof=0)
        result: dict[str, Any] = {axis: float(mean[i]) for i, axis in enumerate(AXES)}
        result["std"] = {axis: float(std[i]) for i, axis in enumerate(AXES)}
        result.update(member_scores=member_scores, window_scores=window_scores, weights=weights, duration_s=duration)
        return result
