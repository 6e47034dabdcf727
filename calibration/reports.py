"""Precision reports: the runtime's precision gate (`mmmos.runtime.precision_gate`) applied to calibration audio.

`precision_report` makes report.json's block for one graph key (metrics per axis, worst case, limits, status,
reasons, and which axes were too narrow to rank); `precision_entry` is the manifest's `precisions[key]` entry
that the runtime reads.
"""

from __future__ import annotations

import numpy as np

from mmmos.runtime.precision_gate import Thresholds, compare, judge, thresholds_for

__all__ = ["Thresholds", "precision_entry", "precision_report", "thresholds_for"]


def precision_report(
    precision: str, reference: np.ndarray, other: np.ndarray, limits: Thresholds, graphs: dict[str, str]
) -> dict:
    """The report block of one precision: metrics per axis, worst case, limits, status and reasons."""
    per_axis = compare(reference, other)
    passed, reasons, unranked = judge(per_axis, limits)
    ranked = [m.srcc for m in per_axis.values() if m.ranked]
    return {
        "status": "passed" if passed else "failed",
        "n_files": int(reference.shape[0]),
        "thresholds": limits.to_dict(),
        "max_abs": max(m.max_abs for m in per_axis.values()),
        "mean_abs": float(np.mean([m.mean_abs for m in per_axis.values()])),
        "srcc": min(ranked) if ranked else None,  # over the axes whose order was judged
        "too_narrow_to_rank": unranked,
        "per_axis": {axis: m.to_dict() for axis, m in per_axis.items()},
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
        "too_narrow_to_rank": block["too_narrow_to_rank"],
        "n_files": block["n_files"],
        "thresholds": block["thresholds"],
        "checked": checked_at,
        "source": "mmmos-calibrate",
    }
