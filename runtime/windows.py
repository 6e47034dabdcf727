"""The window rule and the per-file folding, once (docs/contracts.md, "Windows").

A clip becomes `max(1, ceil(duration / 10 s))` windows; window `k` of an encoder covers samples
`[k*W, (k+1)*W)` of the clip at that encoder's rate, zero-padded, with `length = clip(L - k*W, 1, W)` valid
samples, and weighs `valid seconds / 10` in its file's score. A file's score is, per member, the weighted
mean of its window scores; then the mean and population std over members. The scorer, calibration, the
Triton python model and training all call the functions here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from .audio import Prepared

WINDOW_SECONDS = 10.0
"""Window length and hop (the Audiobox rule)."""


@dataclass(frozen=True)
class LengthRule:
    """How many samples of a window an encoder graph with a dynamic time axis is fed.

    A window of `valid` samples is fed `offset + k * step` samples, the fewest that hold the valid samples plus
    `margin` (what the encoder's receptive field reads past them), at least one step, at most `max_samples`
    (the full window's fed length). Zeros fill the fed samples past the valid ones. The graph then computes
    about the valid audio instead of the whole padded window; the encoder guarantees (and its tests check) that
    the pooled result equals the padded window's, or docs/contracts.md says by how much it differs.
    """

    margin: int
    step: int
    offset: int
    max_samples: int

    def fed_samples(self, valid: int) -> int:
        """Samples to feed for a window with `valid` valid samples."""
        k = max(1, math.ceil((int(valid) + self.margin - self.offset) / self.step))
        return min(self.offset + k * self.step, self.max_samples)

    @property
    def min_samples(self) -> int:
        """The shortest length ever fed (a window of one valid sample)."""
        return self.fed_samples(1)

    @classmethod
    def from_dict(cls, d: dict) -> LengthRule:
        """Parse a manifest `lengths` entry."""
        return cls(margin=int(d["margin"]), step=int(d["step"]), offset=int(d["offset"]),
                   max_samples=int(d["max_samples"]))

    def to_dict(self) -> dict[str, int]:
        """The manifest `lengths` entry."""
        return {"margin": self.margin, "step": self.step, "offset": self.offset, "max_samples": self.max_samples}


class EncoderInput(Protocol):
    """What the window rule needs of an encoder (`manifest.EncoderSpec` has it)."""

    @property
    def name(self) -> str: ...

    @property
    def sample_rate(self) -> int: ...

    @property
    def window_samples(self) -> int: ...

    def fed_samples(self, valid: int) -> int: ...


@dataclass(frozen=True)
class Window:
    """One window of one clip, for every encoder.

    Attributes:
        index: window number k within the clip.
        weight: valid seconds / window seconds, the weight of this window in the file average.
        wavs: encoder name -> float32 [fed_e], the window's samples zero-padded to what the encoder is fed: the whole
            window, or its valid samples plus the encoder's margin (`LengthRule`).
        lengths: encoder name -> number of valid samples (1..window_samples_e).
    """

    index: int
    weight: float
    wavs: dict[str, np.ndarray]
    lengths: dict[str, int]

    @property
    def start_s(self) -> float:
        """Where the window starts in its clip, in seconds."""
        return self.index * WINDOW_SECONDS


def num_windows(n_samples: int, sample_rate: int) -> int:
    """Number of windows of a clip: `max(1, ceil(duration / WINDOW_SECONDS))`."""
    # A tolerance so that exactly 10 s is one window, not two.
    return max(1, math.ceil(n_samples / (WINDOW_SECONDS * sample_rate) - 1e-12))


def window_weight(duration_s: float, index: int) -> float:
    """Valid seconds of window `index` over the window length (its weight in the file average)."""
    return min(max(duration_s - index * WINDOW_SECONDS, 0.0), WINDOW_SECONDS) / WINDOW_SECONDS


def iter_windows(clip: Prepared, encoders: Sequence[EncoderInput]) -> Iterator[Window]:
    """Yield the windows of one prepared clip (`audio.prepare`), for every encoder.

    Each window is a fresh zero-padded array, so the caller may keep it after the clip is gone. An encoder with a
    length rule is fed about the valid samples (a short last window costs its own length); the others the whole
    window.
    """
    for k in range(clip.n_windows):
        wavs: dict[str, np.ndarray] = {}
        lengths: dict[str, int] = {}
        for enc in encoders:
            x = clip.per_rate[enc.sample_rate]
            W = enc.window_samples
            # An empty tail still counts one sample, so no pooling divides by zero.
            valid = int(min(max(x.size - k * W, 1), W))
            fed = enc.fed_samples(valid)
            chunk = x[k * W : k * W + min(W, fed)]
            buf = np.zeros(fed, dtype=np.float32)
            buf[: chunk.size] = chunk
            wavs[enc.name] = buf
            lengths[enc.name] = valid
        yield Window(index=k, weight=window_weight(clip.duration_s, k), wavs=wavs, lengths=lengths)


def stack_windows(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Stack windows of one encoder into `[B, N]`, zero-padding each to the longest (windows of a batch may be fed
    different lengths; an encoder's result does not change with zeros past what it is fed)."""
    out = np.zeros((len(rows), max(r.shape[0] for r in rows)), dtype=np.float32)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out


@dataclass(frozen=True)
class FileScores:
    """One file's scores folded from its windows.

    Attributes:
        members: [M, 4] per-member file scores (AXES order).
        mean: [4] mean over members.
        std: [4] population std (ddof=0) over members.
    """

    members: np.ndarray
    mean: np.ndarray
    std: np.ndarray


def fold_windows(window_scores: np.ndarray, weights: np.ndarray) -> FileScores:
    """Fold one file's window scores `[n, M, 4]` (member scores per window) with their weights `[n]`."""
    scores = np.asarray(window_scores, np.float64)
    w = np.asarray(weights, np.float64)
    members = np.tensordot(w, scores, axes=1) / float(w.sum())
    return FileScores(members=members, mean=members.mean(axis=0), std=members.std(axis=0))


def weighted_segment_mean(values: np.ndarray, weights: np.ndarray, segment: np.ndarray, n_segments: int) -> np.ndarray:
    """Weighted mean of `values [W, ...]` per segment (e.g. window -> clip index `segment [W]`): `[n_segments, ...]`.

    The same weighting as `fold_windows`, vectorised over many files (training folds a whole dataset at once).
    """
    v = np.asarray(values, np.float64)
    w = np.asarray(weights, np.float64)
    sums = np.zeros((n_segments, *v.shape[1:]), np.float64)
    np.add.at(sums, segment, v * w.reshape(-1, *([1] * (v.ndim - 1))))
    total = np.bincount(segment, weights=w, minlength=n_segments)
    return sums / np.maximum(total, 1e-12).reshape(-1, *([1] * (v.ndim - 1)))
