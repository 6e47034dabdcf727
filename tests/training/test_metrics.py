"""Challenge metrics against scipy on fixed data, and the system-level grouping."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mmmos.training.metrics import evaluate, kendall_tau_b, pearson, rankdata, spearman, system_of


def _data(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.round(rng.uniform(0, 10, size=(n, 4)), 1)  # ties on purpose
    pred = truth + rng.normal(0, 1.5, size=(n, 4))
    pred[:40] = np.round(pred[:40])  # ties in predictions too
    return truth, pred


def test_against_scipy() -> None:
    truth, pred = _data()
    for a in range(4):
        t, p = truth[:, a], pred[:, a]
        assert pearson(t, p) == pytest.approx(stats.pearsonr(t, p)[0], abs=1e-9)
        assert spearman(t, p) == pytest.approx(stats.spearmanr(t, p)[0], abs=1e-9)
        assert kendall_tau_b(t, p, chunk=64) == pytest.approx(stats.kendalltau(t, p)[0], abs=1e-9)
        assert np.allclose(rankdata(t), stats.rankdata(t), atol=0)


def test_evaluate_utterance_and_system_levels() -> None:
    truth, pred = _data(n=120, seed=1)
    ids = [f"audiomos2025-track2-sys{k % 7}-utt{k}" for k in range(120)]
    res = evaluate(truth, pred, ids=ids)
    assert res["counts"] == {"n_utterances": 120, "n_systems": 7}
    u = res["utterance"]["PC"]
    assert u["MSE"] == pytest.approx(float(np.mean((truth[:, 1] - pred[:, 1]) ** 2)), abs=1e-12)
    assert u["KTAU"] == pytest.approx(stats.kendalltau(truth[:, 1], pred[:, 1])[0], abs=1e-9)
    # system level: means over each system's clips, then the metrics over systems
    sys = np.array([k % 7 for k in range(120)])
    ts = np.array([truth[sys == s].mean(0) for s in range(7)])
    ps = np.array([pred[sys == s].mean(0) for s in range(7)])
    s = res["system"]["CU"]
    assert s["SRCC"] == pytest.approx(stats.spearmanr(ts[:, 3], ps[:, 3])[0], abs=1e-9)
    assert s["LCC"] == pytest.approx(stats.pearsonr(ts[:, 3], ps[:, 3])[0], abs=1e-9)
    assert s["MSE"] == pytest.approx(float(np.mean((ts[:, 3] - ps[:, 3]) ** 2)), abs=1e-12)


def test_system_column_and_absent_systems() -> None:
    truth, pred = _data(n=30, seed=2)
    res = evaluate(truth, pred, ids=[f"clip{k}" for k in range(30)])
    assert "system" not in res
    res = evaluate(truth, pred, ids=[f"clip{k}" for k in range(30)], systems=[str(k % 3) for k in range(30)])
    assert res["counts"]["n_systems"] == 3


def test_system_of_and_degenerate_inputs() -> None:
    assert system_of("/data/audiomos2025-track2-sys0v1wm-utt0dJodp.wav") == "sys0v1wm"
    assert system_of("librispeech-123") is None
    assert math.isnan(pearson(np.ones(5), np.arange(5.0)))
    assert math.isnan(kendall_tau_b(np.ones(5), np.arange(5.0)))
    with pytest.raises(ValueError, match="must both be"):
        evaluate(np.zeros((3, 4)), np.zeros((3, 3)))
