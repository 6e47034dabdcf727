"""`mmmos-bench profile`: ORT profile aggregation, the window feed (with and without a length rule) and the
command on a tiny numpy-built bundle (no timed assertions; about 1 s)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from mmmos.benchmarks.cli import app
from mmmos.benchmarks.op_profile import aggregate, window_feed
from mmmos.runtime.manifest import EncoderSpec
from mmmos.runtime.windows import LengthRule

from ..bundle_factory import make_bundle


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMMOS_CACHE_DIR", str(tmp_path / "cache"))


def _node(name: str, op: str, ts: int, dur: int) -> dict:
    return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}


def test_aggregate_counts_only_the_profiled_runs_per_run() -> None:
    events = [
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 100},  # warm-up: not counted
        _node("mm", "MatMul", 1, 90), _node("add", "Add", 50, 10),
        {"cat": "Session", "name": "model_run", "ts": 200, "dur": 5000},
        _node("mm", "MatMul", 201, 3000), _node("mm2", "MatMul", 3300, 1000), _node("add", "Add", 4400, 1000),
        {"cat": "Node", "name": "mm_fence_before", "ts": 201, "dur": 0, "args": {"op_name": "MatMul"}},
        {"cat": "Session", "name": "model_run", "ts": 6000, "dur": 3000},
        _node("mm", "MatMul", 6001, 1000), _node("mm2", "MatMul", 7000, 1000), _node("add", "Add", 8000, 2000),
    ]
    agg = aggregate(events, runs=2)
    assert agg["run_ms"] == [5.0, 3.0]
    assert agg["node_total_ms"] == pytest.approx(4.5)  # (5000 + 4000) us over 2 runs
    assert agg["by_op"][0] == {"op": "MatMul", "ms": pytest.approx(3.0), "share": pytest.approx(3 / 4.5), "nodes": 2}
    assert agg["by_op"][1]["op"] == "Add" and agg["by_op"][1]["nodes"] == 1
    assert [n["node"] for n in agg["by_node"]] == ["mm", "add", "mm2"]
    assert sum(o["share"] for o in agg["by_op"]) == pytest.approx(1.0)


def test_window_feed_follows_the_encoders_length_rule() -> None:
    wav = np.arange(1, 160001, dtype=np.float32)
    padded = EncoderSpec("wavlm", 16000, 160000)
    feed = window_feed(padded, wav, 32000)
    assert feed["wav"].shape == (1, 160000) and feed["lengths"].tolist() == [32000]
    rule = LengthRule(margin=80, step=1280, offset=5, max_samples=160005)
    dyn = EncoderSpec("wavlm", 16000, 160000, lengths=rule)
    feed = window_feed(dyn, wav, 32000)
    assert feed["wav"].shape == (1, rule.fed_samples(32000)) and feed["wav"].shape[1] < 160000
    assert np.array_equal(feed["wav"][0], wav[: feed["wav"].shape[1]])
    full = window_feed(dyn, wav, 160000)  # fed past the window: zeros there
    assert full["wav"].shape == (1, 160005) and np.all(full["wav"][0, 160000:] == 0)
    assert full["wav"][0, 159999] == wav[-1]


def test_profile_command_on_a_tiny_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    make_bundle(bundle, members=2)
    out = tmp_path / "prof"
    res = CliRunner().invoke(app, ["profile", "--bundle", str(bundle), "--top", "3", "--warmup", "1", "--runs", "2",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    prof = json.loads((out / "profile-fp32.json").read_text())
    assert set(prof["graphs"]) == {"encoder:wavlm", "encoder:muq"}
    wavlm = prof["graphs"]["encoder:wavlm"]
    assert wavlm["fed_samples"] == wavlm["valid_samples"] == 160000 and wavlm["dynamic_length"] is False
    assert len(wavlm["run_ms"]) == 2 and wavlm["node_total_ms"] > 0
    assert "MatMul" in {o["op"] for o in wavlm["by_op"]}
    assert sum(o["share"] for o in wavlm["by_op"]) == pytest.approx(1.0)
    assert prof["command"].startswith("mmmos-bench profile --bundle ")
    md = (out / "profile-fp32.md").read_text()
    assert "#### encoder:muq" in md and "| op type | ms per run | share | nodes |" in md
    assert md.count("| `") <= 2 * 3  # --top 3 nodes per graph
    assert not list(tmp_path.glob("**/ort_*.json"))  # raw profiles are removed
    res = CliRunner().invoke(app, ["profile", "--bundle", str(bundle), "--precision", "int8", "--out", str(out)])
    assert res.exit_code == 2 and "no 'int8' graph" in res.output
