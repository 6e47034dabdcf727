"""The precision gate, once: when does a precision's graph score close enough to fp32 to be offered?

A precision passes when, on every axis, its file-level scores (0-10 scale) stay within `max_abs` of fp32's,
and, where the files' fp32 scores are far enough apart to have an order, it ranks them like fp32 (Spearman
>= `min_srcc`). "Far enough apart" means the fp32 scores' spread (std over files) is at least
`RANKABLE_SPREAD` times the precision's own noise (rms of its differences from fp32): there, noise alone
keeps Spearman above 0.998, so a lower one is a real distortion of the order. A set narrower than that
(random weights, a homogeneous set of clean speech), or of fewer than `MIN_RANKED_FILES` files, has no
order the precision could keep: its rank is not judged and the report says so. `mmmos-export` (on its probe
windows) and `mmmos-calibrate` (on real audio) both judge with this module; the runtime offers only
precisions whose status is "passed".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from mmmos import AXES

RANKABLE_SPREAD = 20.0
"""An axis is ranked only when the fp32 scores' std over files is at least this many times the rms difference."""

MIN_RANKED_FILES = 10
"""Fewer files than this are too few to rank: one swap of two close neighbours among 6 files is Spearman 0.94,
however small the precision's error (seen on a 6-file held-out check)."""


@dataclass(frozen=True)
class Thresholds:
    """Pass limits for one precision: per axis max abs diff <= `max_abs`, and Spearman >= `min_srcc` where ranked."""

    max_abs: float
    min_srcc: float

    def to_dict(self) -> dict[str, float]:
        """JSON form, as written into reports."""
        return asdict(self)


DEFAULT_THRESHOLDS: dict[str, Thresholds] = {
    "fp16": Thresholds(max_abs=0.05, min_srcc=0.995),
    "int8": Thresholds(max_abs=0.15, min_srcc=0.98),
}
"""The documented gates; a graph key not listed (e.g. int8-trt) uses the int8 (loosest) limits."""


def thresholds_for(key: str, overrides: dict[str, Thresholds] | None = None) -> Thresholds:
    """The limits for a graph key: an override, else the default, else the int8 limits."""
    if overrides and key in overrides:
        return overrides[key]
    return DEFAULT_THRESHOLDS.get(key, DEFAULT_THRESHOLDS["int8"])


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties given their average rank (`scipy.stats.rankdata(method="average")`)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.shape[0], np.float64)
    xs = x[order]
    i = 0
    while i < xs.shape[0]:
        j = i
        while j + 1 < xs.shape[0] and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two 1-D arrays.

    When one side is constant it is 1.0 if both sides are identical and NaN otherwise.
    """
    ra, rb = rankdata(a), rankdata(b)
    da, db = ra - ra.mean(), rb - rb.mean()
    denom = float(np.sqrt((da * da).sum() * (db * db).sum()))
    if denom == 0.0:
        return 1.0 if np.array_equal(np.asarray(a), np.asarray(b)) else float("nan")
    return float((da * db).sum() / denom)


def rankable(reference: np.ndarray, other: np.ndarray) -> bool:
    """Whether the files' fp32 scores are far enough apart, given the precision's noise, to judge their order."""
    r = np.asarray(reference, np.float64)
    noise = float(np.sqrt(np.mean((np.asarray(other, np.float64) - r) ** 2))) if r.size else 0.0
    return r.shape[0] >= MIN_RANKED_FILES and float(np.std(r)) >= RANKABLE_SPREAD * noise


@dataclass(frozen=True)
class AxisComparison:
    """How one axis of a precision's file scores compares with fp32's."""

    max_abs: float
    mean_abs: float
    srcc: float
    spread: float
    ranked: bool

    def to_dict(self) -> dict[str, float | bool]:
        """JSON form, as written into reports."""
        return asdict(self)


def compare(reference: np.ndarray, other: np.ndarray) -> dict[str, AxisComparison]:
    """Per-axis comparison of `other [F, 4]` with `reference [F, 4]` (file-level scores, AXES order)."""
    if reference.shape != other.shape or reference.ndim != 2 or reference.shape[1] != len(AXES):
        raise ValueError(f"expected two [F, 4] score arrays of one shape, got {reference.shape} and {other.shape}.")
    out: dict[str, AxisComparison] = {}
    for k, axis in enumerate(AXES):
        diff = np.abs(other[:, k].astype(np.float64) - reference[:, k].astype(np.float64))
        out[axis] = AxisComparison(
            max_abs=float(diff.max()) if diff.size else float("nan"),
            mean_abs=float(diff.mean()) if diff.size else float("nan"),
            srcc=spearman(reference[:, k], other[:, k]), spread=float(np.std(reference[:, k])) if diff.size else 0.0,
            ranked=rankable(reference[:, k], other[:, k]))
    return out


def judge(per_axis: dict[str, AxisComparison], limits: Thresholds) -> tuple[bool, list[str], list[str]]:
    """(passed, one reason per failing axis and metric, axes whose order could not be judged)."""
    reasons: list[str] = []
    unranked: list[str] = []
    for axis, m in per_axis.items():
        if not m.max_abs <= limits.max_abs:  # written so that NaN fails
            reasons.append(f"{axis}: max abs diff {m.max_abs:.4g} > {limits.max_abs:g}")
        if not m.ranked:
            unranked.append(axis)
        elif not m.srcc >= limits.min_srcc:
            reasons.append(f"{axis}: SRCC {m.srcc:.4g} < {limits.min_srcc:g}")
    return not reasons, reasons, unranked
