"""Precision reports: per-axis max / mean absolute difference and Spearman correlation against fp32.

A precision *passes* when, on every axis, its file-level scores (0-10 scale) stay within ``max_abs`` of
fp32's and rank the files like fp32 does (SRCC >= ``min_srcc``). The manifest's ``precisions[p]`` entry
that the runtime reads is derived from this report (``precision_entry``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from mmmos import AXES


@dataclass(frozen=True)
class Thresholds:
    """Pass limits for one precision: every axis needs max abs diff <= ``max_abs`` and SRCC >= ``min_srcc``."""

    max_abs: float
    min_srcc: float

    def to_dict(self) -> dict[str, float]:
        """JSON form, as written into the report."""
        return asdict(self)


DEFAULT_THRESHOLDS: dict[str, Thresholds] = {
    "fp16": Thresholds(max_abs=0.05, min_srcc=0.995),
    "int8": Thresholds(max_abs=0.15, min_srcc=0.98),
}
"""Issue 6 defaults; a precision not listed here uses the int8 (loosest) limits."""


def thresholds_for(precision: str, overrides: dict[str, Thresholds] | None = None) -> Thresholds:
    """The limits for ``precision``: an override, else the default, else the int8 limits."""
    if overrides and precision in overrides:
        return overrides[precision]
    return DEFAULT_THRESHOLDS.get(precision, DEFAULT_THRESHOLDS["int8"])


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties given their average rank (``scipy.stats.rankdata(method="average")``)."""
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

    When one side is constant the correlation is undefined: it is 1.0 if both sides are identical and NaN
    otherwise (a NaN never passes a threshold, so an undefined correlation cannot certify a precision).
    """
    ra, rb = rankdata(a), rankdata(b)
    da, db = ra - ra.mean(), rb - rb.mean()
    denom = float(np.sqrt((da * da).sum() * (db * db).sum()))
    if denom == 0.0:
        return 1.0 if np.array_equal(np.asarray(a), np.asarray(b)) else float("nan")
    return float((da * db).sum() / denom)


def compare(reference: np.ndarray, other: np.ndarray) -> dict[str, dict[str, float]]:
    """Per-axis ``{"max_abs", "mean_abs", "srcc"}`` of ``other [F, 4]`` against ``reference [F, 4]``."""
    if reference.shape != other.shape or reference.ndim != 2 or reference.shape[1] != len(AXES):
        raise ValueError(f"expected two [F, 4] score arrays of one shape, got {reference.shape} and {other.shape}.")
    out: dict[str, dict[str, float]] = {}
    for i, axis in enumerate(AXES):
        diff = np.abs(other[:, i].astype(np.float64) - reference[:, i].astype(np.float64))
        out[axis] = {
            "max_abs": float(diff.max()) if diff.size else float("nan"),
            "mean_abs": float(diff.mean()) if diff.size else float("nan"),
            "srcc": spearman(reference[:, i], other[:, i]),
        }
    return out


def judge(per_axis: dict[str, dict[str, float]], limits: Thresholds) -> tuple[bool, list[str]]:
    """Pass/fail against ``limits`` and, for a failure, one reason per offending axis and metric."""
    reasons: list[str] = []
    for axis, m in per_axis.items():
        if not m["max_abs"] <= limits.max_abs:  # written so that NaN fails
            reasons.append(f"{axis}: max abs diff {m['max_abs']:.4g} > {limits.max_abs:g}")
        if not m["srcc"] >= limits.min_srcc:
            reasons.append(f"{axis}: SRCC {m['srcc']:.4g} < {limits.min_srcc:g}")
    return not reasons, reasons


def precision_report(
    precision: str, reference: np.ndarray, other: np.ndarray, limits: Thresholds, graphs: dict[str, str]
) -> dict:
    """The report block of one precision: metrics per axis, worst case, limits, status and reasons."""
    per_axis = compare(reference, other)
    passed, reasons = judge(per_axis, limits)
    return {
        "status": "passed" if passed else "failed",
        "n_files": int(reference.shape[0]),
        "thresholds": limits.to_dict(),
        "max_abs": max(m["max_abs"] for m in per_axis.values()),
        "mean_abs": float(np.mean([m["mean_abs"] for m in per_axis.values()])),
        "srcc": min(m["srcc"] for m in per_axis.values()),
        "per_axis": per_axis,
        "reasons": reasons,
        "graphs": graphs,
    }


def precision_entry(block: dict, checked_at: str) -> dict:
    """The manifest's ``precisions[p]`` entry made from a report block (status + worst-axis numbers)."""
    return {
        "status": block["status"],
        "max_abs": block["max_abs"],
        "mean_abs": block["mean_abs"],
        "srcc": block["srcc"],
        "n_files": block["n_files"],
        "thresholds": block["thresholds"],
        "checked": checked_at,
        "source": "mmmos-calibrate",
    }
