"""AudioMOS 2025 Track 2 metrics: MSE, LCC, SRCC, KTAU per axis, at utterance and system level.

Definitions follow the challenge's reference evaluation (research/paper.md section 7): MSE = mean of
squared errors, LCC = Pearson, SRCC = Spearman (Pearson of average ranks), KTAU = Kendall's tau-b (the
``scipy.stats.kendalltau`` default). System score = mean over the system's clips, for truth and prediction
alike. Implemented in numpy so the numbers do not depend on a scipy version; tests compare with scipy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mmmos import AXES

METRICS: tuple[str, ...] = ("MSE", "LCC", "SRCC", "KTAU")
"""Metric names, in the challenge's order."""

_CHALLENGE_PREFIX = "audiomos2025-track2-"


def mse(truth: np.ndarray, pred: np.ndarray) -> float:
    """Mean squared error."""
    t, p = np.asarray(truth, np.float64), np.asarray(pred, np.float64)
    return float(np.mean((t - p) ** 2))


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's linear correlation coefficient; NaN when either input is constant or has < 2 values."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size < 2:
        return math.nan
    xm, ym = x - x.mean(), y - y.mean()
    den = math.sqrt(float(np.dot(xm, xm)) * float(np.dot(ym, ym)))
    if den == 0.0:
        return math.nan
    return float(np.clip(np.dot(xm, ym) / den, -1.0, 1.0))


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks starting at 1, ties get the average of their ranks (scipy's ``method='average'``)."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # Start index of every run of equal values; a run [a, b) gets rank (a + 1 + b) / 2.
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], xs.size]
    avg = (starts + 1 + ends) / 2.0
    ranks = np.empty_like(x)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (Pearson of average ranks)."""
    return pearson(rankdata(x), rankdata(y))


def kendall_tau_b(x: np.ndarray, y: np.ndarray, chunk: int = 2048) -> float:
    """Kendall's tau-b with tie correction; NaN when either input is constant. O(n^2) in row chunks."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = x.size
    if n < 2:
        return math.nan
    s = 0.0  # sum over pairs i<j of sign(dx) * sign(dy)
    n1 = 0  # pairs i<j tied in x
    n2 = 0  # pairs i<j tied in y
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        dx = np.sign(x[start:stop, None] - x[None, :])
        dy = np.sign(y[start:stop, None] - y[None, :])
        # Keep only pairs with j > i (upper triangle in global indices).
        upper = np.arange(n)[None, :] > np.arange(start, stop)[:, None]
        s += float(np.sum(dx * dy * upper))
        n1 += int(np.sum((dx == 0) & upper))
        n2 += int(np.sum((dy == 0) & upper))
    n0 = n * (n - 1) // 2
    den = math.sqrt(float(n0 - n1) * float(n0 - n2))
    if den == 0.0:
        return math.nan
    return float(np.clip(s / den, -1.0, 1.0))


def axis_metrics(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The four metrics for one axis."""
    return {
        "MSE": mse(truth, pred),
        "LCC": pearson(truth, pred),
        "SRCC": spearman(truth, pred),
        "KTAU": kendall_tau_b(truth, pred),
    }


def system_of(sample_id: str) -> str | None:
    """System id of an ``audiomos2025-track2-<system>-<clip>`` id (any directory and extension ignored), else None."""
    base = sample_id.replace("\\", "/").rsplit("/", 1)[-1]
    if not base.startswith(_CHALLENGE_PREFIX):
        return None
    rest = base[len(_CHALLENGE_PREFIX) :]
    return rest.split("-")[0] or None


def systems_for(ids: Sequence[str], systems: Sequence[str | None] | None = None) -> list[str] | None:
    """Per-clip system ids: the given ``systems`` column if complete, else parsed from challenge ids, else None."""
    if systems is not None and all(s not in (None, "") for s in systems):
        return [str(s) for s in systems]
    parsed = [system_of(i) for i in ids]
    if parsed and all(p is not None for p in parsed):
        return [str(p) for p in parsed]
    return None


def system_means(values: np.ndarray, systems: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Mean of ``values`` ([N, A]) per system, systems in sorted order."""
    names = sorted(set(systems))
    idx = {s: k for k, s in enumerate(names)}
    codes = np.array([idx[s] for s in systems])
    values = np.asarray(values, np.float64)
    sums = np.zeros((len(names), values.shape[1]))
    np.add.at(sums, codes, values)
    counts = np.bincount(codes, minlength=len(names)).astype(np.float64)
    return names, sums / counts[:, None]


def evaluate(
    truth: np.ndarray,
    pred: np.ndarray,
    ids: Sequence[str] | None = None,
    systems: Sequence[str | None] | None = None,
    axes: Sequence[str] = AXES,
) -> dict[str, Any]:
    """Challenge metrics for ``[N, A]`` truth and predictions.

    Returns ``{"utterance": {axis: {metric: value}}, "system": {...}}``; the ``system`` level is present
    only when every clip has a system (a ``systems`` column, or challenge-style ``ids``), and the result
    has ``{"n_utterances": N, "n_systems": S}`` under ``"counts"``.
    """
    truth = np.asarray(truth, np.float64)
    pred = np.asarray(pred, np.float64)
    if truth.shape != pred.shape or truth.ndim != 2 or truth.shape[1] != len(axes):
        raise ValueError(
            f"truth {truth.shape} and pred {pred.shape} must both be [N, {len(axes)}]; align them by id first."
        )
    out: dict[str, dict[str, dict[str, float]]] = {
        "utterance": {a: axis_metrics(truth[:, k], pred[:, k]) for k, a in enumerate(axes)}
    }
    counts = {"n_utterances": int(truth.shape[0])}
    sys_ids = systems_for(list(ids) if ids is not None else [""] * truth.shape[0], systems)
    if sys_ids is not None:
        _, ts = system_means(truth, sys_ids)
        _, ps = system_means(pred, sys_ids)
        out["system"] = {a: axis_metrics(ts[:, k], ps[:, k]) for k, a in enumerate(axes)}
        counts["n_systems"] = int(ts.shape[0])
    result: dict[str, Any] = dict(out)
    result["counts"] = counts
    return result


def mean_metric(result: dict[str, Any], metric: str, level: str = "utterance") -> float:
    """Mean of one metric over the axes of an :func:`evaluate` result (NaN-aware: NaN if all are NaN)."""
    vals = [v[metric] for v in result[level].values()]
    finite = [v for v in vals if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table: one row per level and axis, one column per metric."""
    lines = [f"{'level':<10}{'axis':<6}" + "".join(f"{m:>10}" for m in METRICS)]
    for level in ("utterance", "system"):
        if level not in result:
            continue
        for axis, vals in result[level].items():
            lines.append(f"{level:<10}{axis:<6}" + "".join(f"{vals[m]:>10.4f}" for m in METRICS))
    return "\n".join(lines)
