"""Precision report maths: ranks, Spearman, per-axis comparison and the pass/fail rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmmos.calibration.reports import (
    Thresholds,
    compare,
    judge,
    precision_entry,
    precision_report,
    rankdata,
    spearman,
    thresholds_for,
)


def test_rankdata_averages_ties() -> None:
    assert rankdata(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_spearman_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a = rng.standard_normal(40)
    b = a + 0.5 * rng.standard_normal(40)
    b[3] = b[7]  # a tie
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)


def test_spearman_constant_side() -> None:
    assert spearman(np.ones(5), np.ones(5)) == 1.0
    assert math.isnan(spearman(np.ones(5), np.arange(5.0)))


def test_compare_and_judge() -> None:
    ref = np.tile(np.linspace(1, 9, 10)[:, None], (1, 4))
    other = ref.copy()
    other[0, 2] += 0.2  # CE is off by 0.2 on one file, ranks unchanged
    per_axis = compare(ref, other)
    assert per_axis["CE"]["max_abs"] == pytest.approx(0.2)
    assert per_axis["PQ"]["max_abs"] == 0.0
    assert per_axis["CE"]["srcc"] == pytest.approx(1.0)
    ok, reasons = judge(per_axis, Thresholds(max_abs=0.15, min_srcc=0.98))
    assert not ok and len(reasons) == 1 and reasons[0].startswith("CE: max abs")
    assert judge(per_axis, Thresholds(max_abs=0.25, min_srcc=0.98))[0]


def test_nan_never_passes() -> None:
    per_axis = {"PQ": {"max_abs": float("nan"), "mean_abs": 0.0, "srcc": 1.0}}
    assert not judge(per_axis, Thresholds(1.0, 0.0))[0]


def test_report_block_and_manifest_entry() -> None:
    ref = np.random.default_rng(1).uniform(0, 10, (8, 4))
    block = precision_report("fp16", ref, ref + 0.01, thresholds_for("fp16"), {"wavlm": "w.onnx"})
    assert block["status"] == "passed"
    assert block["thresholds"] == {"max_abs": 0.05, "min_srcc": 0.995}
    entry = precision_entry(block, "now")
    assert entry["status"] == "passed" and entry["max_abs"] == pytest.approx(0.01)
    failed = precision_report("int8", ref, ref + 0.01, Thresholds(1e-6, 0.98), {})
    assert failed["status"] == "failed" and failed["reasons"]


def test_threshold_defaults_and_overrides() -> None:
    assert thresholds_for("int8") == Thresholds(0.15, 0.98)
    assert thresholds_for("int8", {"int8": Thresholds(1e-6, 0.99)}).max_abs == 1e-6
    assert thresholds_for("int8-trt") == thresholds_for("int8")


def test_compare_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\[F, 4\]"):
        compare(np.zeros((3, 4)), np.zeros((3, 3)))
