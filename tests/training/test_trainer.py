"""The trainer on synthetic cached features: it learns, keeps the best epoch, and round-trips to disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmmos.training.cache_store import CachedSet
from mmmos.training.member_io import load_member, read_member_json
from mmmos.training.trainer import FitOptions, fit, predict_clips


def test_cached_set_reads_what_was_written(synth_caches: dict[str, Path]) -> None:
    data = CachedSet(synth_caches["train"])
    assert data.n_clips == 96 and data.labels.shape == (96, 4)
    assert data.dims() == {"wavlm": (3, 16), "muq": 8, "m2d": 12}
    assert data.encoders() == ["wavlm", "muq", "m2d"]
    idx = np.array([data.n_windows - 1, 0, 17])  # across shards, out of order
    got = data.gather(["muq_pooled"], idx)["muq_pooled"]
    assert got.dtype == np.float32 and got.shape == (3, 8)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-2)  # float16 storage
    with pytest.raises(KeyError, match="no output"):
        data.gather(["nope_pooled"], idx)


def test_fit_learns_and_round_trips(synth_caches: dict[str, Path], tmp_path: Path) -> None:
    train, dev = CachedSet(synth_caches["train"]), CachedSet(synth_caches["dev"])
    opts = FitOptions(aggregator="mlp", loss="utmos", epochs=25, batch_size=16, lr=3e-3, seed=0)
    res = fit(train, dev, opts, out_dir=tmp_path / "m", progress=False)
    srcc = [res.dev_scores["dev"]["utterance"][a]["SRCC"] for a in ("PQ", "PC", "CE", "CU")]
    assert min(srcc) > 0.8, srcc
    assert res.history[0]["dev_loss"] > min(h["dev_loss"] for h in res.history)
    assert res.best_epoch == int(np.argmin([h["dev_loss"] for h in res.history])) + 1
    meta = read_member_json(tmp_path / "m")
    assert meta["config"]["target_mean"] == pytest.approx(list(train.labels.mean(0)))
    assert meta["encoders_identity"]["encoders"][0]["graphs"]["fp32"] == "wavlm-a"
    assert "system" in meta["dev_scores"]["dev"]  # challenge-style ids -> system level
    member, _ = load_member(tmp_path / "m")
    assert np.allclose(predict_clips(member, dev), predict_clips(res.member, dev), atol=1e-6)


@pytest.mark.parametrize(("aggregator", "loss"), [("blstm-t", "ccc"), ("blstm-e", "dcq"), ("mlp", "contrastive")])
def test_other_aggregators_and_losses_train(synth_caches: dict[str, Path], aggregator: str, loss: str) -> None:
    train, dev = CachedSet(synth_caches["train"]), CachedSet(synth_caches["dev"])
    opts = FitOptions(aggregator=aggregator, loss=loss, epochs=2, batch_size=32, hidden=16, lr=1e-3,
                      encoders=("muq", "m2d"))
    res = fit(train, dev, opts, progress=False)
    assert res.member.config.encoders == ("muq", "m2d")
    assert np.isfinite(predict_clips(res.member, dev)).all()
    assert len(res.history) == 2
    # empty frame steps (the synthetic last windows have some) must not turn the gradients NaN
    assert all(np.isfinite(h["train_loss"]) for h in res.history)


def test_fit_refuses_mixed_encoders(synth_caches: dict[str, Path]) -> None:
    train, other = CachedSet(synth_caches["train"]), CachedSet(synth_caches["other"])
    with pytest.raises(ValueError, match="different graph"):
        fit(train, other, FitOptions(epochs=1), progress=False)
    with pytest.raises(ValueError, match="not in cache"):
        fit(train, train, FitOptions(epochs=1, encoders=("hubert",)), progress=False)


def test_fit_cli(synth_caches: dict[str, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mmmos.training.cli import app

    out = tmp_path / "member"
    args = ["fit", str(synth_caches["train"]), "--dev", str(synth_caches["dev"]), "--out", str(out),
            "--aggregator", "blstm-e", "--loss", "ccc", "--encoders", "m2d,wavlm", "--epochs", "2",
            "--hidden", "8", "--select-by", "srcc"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    meta = read_member_json(out)
    assert meta["config"]["encoders"] == ["wavlm", "m2d"]  # bundle order, whatever the option's order
    assert meta["training"]["select_by"] == "srcc" and len(json.loads((out / "history.json").read_text())) == 2
    res = CliRunner().invoke(app, [*args[:-2], "--select-by", "best"])
    assert res.exit_code == 2 and "select_by must be one of" in res.output


def test_diverging_training_stops_with_a_clear_error(synth_caches: dict[str, Path]) -> None:
    train, dev = CachedSet(synth_caches["train"]), CachedSet(synth_caches["dev"])
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        fit(train, dev, FitOptions(epochs=2, lr=1e30, loss="dcq"), progress=False)
