"""Target statistics from a labelled manifest, in AXES order, ddof=1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmmos.calibration.stats import members_mismatch, stats_from_labels, target_stats


def test_target_stats_from_challenge_csv(tmp_path: Path) -> None:
    rows = [(5.0, 3.0, 4.0, 6.0), (7.0, 2.0, 6.0, 5.0), (6.0, 4.0, 5.0, 7.0)]
    lines = ["sample_id,data_path,Production_Quality,Production_Complexity,Content_Enjoyment,Content_Usefulness"]
    lines += [f"{i},/your_path/{i}.wav,{pq},{pc},{ce},{cu}" for i, (pq, pc, ce, cu) in enumerate(rows)]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    st = target_stats(tmp_path / "train.csv")
    arr = np.array(rows)
    assert st["axes"] == ["PQ", "PC", "CE", "CU"]
    assert st["mean"] == pytest.approx(arr.mean(axis=0).tolist())
    assert st["std"] == pytest.approx(arr.std(axis=0, ddof=1).tolist())
    assert st["n"] == [3, 3, 3, 3]


def test_too_few_labels() -> None:
    with pytest.raises(ValueError, match="at least two"):
        stats_from_labels(np.array([[1.0, 2.0, 3.0, 4.0]]))


def test_members_mismatch() -> None:
    st = {"mean": [6.0, 3.5, 5.0, 5.7], "std": [1.3, 1.7, 1.7, 1.4]}
    manifest = {"members": [{"name": "a", "config": {"target_mean": st["mean"], "target_std": st["std"]}},
                            {"name": "b", "config": {"target_mean": [5.0] * 4, "target_std": [1.0] * 4}}]}
    assert members_mismatch(manifest, st) == ["b"]
