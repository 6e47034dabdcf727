"""Precision report maths: ranks, Spearman, per-axis comparison and the pass/fail rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmmos.calibration.reports import precision_entry, precision_report
from mmmos.runtime.precision_gate import Thresholds, compare, judge, rankdata, spearman, thresholds_for


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
    assert per_axis["CE"].max_abs == pytest.approx(0.2)
    assert per_axis["PQ"].max_abs == 0.0
    assert per_axis["CE"].srcc == pytest.approx(1.0)
    ok, reasons, unranked = judge(per_axis, Thresholds(max_abs=0.15, min_srcc=0.98))
    assert not ok and len(reasons) == 1 and reasons[0].startswith("CE: max abs")
    assert judge(per_axis, Thresholds(max_abs=0.25, min_srcc=0.98))[0]
    assert unranked == []  # 10 clips 0.9 apart: spread far beyond the differences on every axis


def test_nan_never_passes() -> None:
    per_axis = compare(np.zeros((3, 4)), np.full((3, 4), np.nan))
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


def test_rank_is_judged_only_where_fp32_scores_have_an_order() -> None:
    # 19 clips whose fp32 scores span less than int8's own noise (the full random bundle on real clips: max abs
    # 0.0097, Spearman 0.954 on PC): the old rule refused int8 on a rank no precision could keep.
    rng = np.random.default_rng(4)
    ref = 5.0 + 0.004 * rng.standard_normal((19, 4))
    other = ref + np.clip(0.003 * rng.standard_normal((19, 4)), -0.0097, 0.0097)
    block = precision_report("int8", ref, other, thresholds_for("int8"), {})
    assert block["status"] == "passed" and block["too_narrow_to_rank"] == ["PQ", "PC", "CE", "CU"]
    assert block["srcc"] is None and min(m["srcc"] for m in block["per_axis"].values()) < 0.98
    # A set spread far beyond the noise is ranked, and a real distortion of its order fails there.
    spread = np.tile(np.linspace(1, 9, 40)[:, None], (1, 4))
    noisy = spread + 0.01 * rng.standard_normal(spread.shape)
    ranked = precision_report("int8", spread, noisy, thresholds_for("int8"), {})
    assert ranked["status"] == "passed" and ranked["too_narrow_to_rank"] == [] and ranked["srcc"] > 0.99
    # Two far-apart groups (speech and music, say): ranked, and an order reversed inside each group fails on PC
    # although no score moved by more than 0.02.
    groups = np.concatenate([3.0 + 0.001 * np.arange(20), 7.0 + 0.001 * np.arange(20)])
    ref2 = np.tile(groups[:, None], (1, 4))
    other2 = ref2.copy()
    other2[:, 1] = np.concatenate([groups[:20][::-1], groups[20:][::-1]])
    bad = precision_report("int8", ref2, other2, thresholds_for("int8"), {})
    assert bad["status"] == "failed" and bad["reasons"] == [f"PC: SRCC {bad['per_axis']['PC']['srcc']:.4g} < 0.98"]


def test_a_handful_of_files_is_too_few_to_rank() -> None:
    # 6 held-out files 0.003 apart on average: one swap of the closest two (errors 6e-4) is Spearman 0.94
    ref = np.tile(np.array([5.000, 5.004, 5.0045, 5.011, 5.016, 5.020])[:, None], (1, 4))
    other = ref.copy()
    other[1, 2] += 0.0005
    other[2, 2] -= 0.0002
    block = precision_report("int8", ref, other, thresholds_for("int8"), {})
    assert block["per_axis"]["CE"]["srcc"] < 0.98 and "CE" in block["too_narrow_to_rank"]
    assert block["status"] == "passed"
