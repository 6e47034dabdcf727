"""`mmmos-bench` end to end on a tiny numpy-built bundle with tiny lengths and batches (no timed assertions)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("matplotlib")

from mmmos.benchmarks.cli import app, available_backends, parse_list

from ..bundle_factory import make_bundle


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime's sha256 stamp cache goes to tmp_path, not the user's home."""
    monkeypatch.setenv("MMMOS_CACHE_DIR", str(tmp_path / "cache"))


def test_cli_writes_every_report_file(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    make_bundle(bundle, members=3)
    out = tmp_path / "out"
    readme = tmp_path / "README.md"
    res = CliRunner().invoke(app, [
        "--bundle", str(bundle), "--out", str(out), "--lengths", "1,12", "--batches", "1,2",
        "--backends", "ort-cpu", "--warmup", "0", "--repeats", "2", "--e2e-repeats", "1",
        "--no-baselines", "--no-audiobox", "--readme", str(readme),
    ])
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    assert [(r["backend"], r["precision"]) for r in rep["runs"]] == [("ort-cpu", "fp32")]  # fp16 is unchecked
    run = rep["runs"][0]
    assert "error" not in run, run
    assert sorted(run["batches"]) == ["1", "2"] and sorted(run["lengths"]) == ["1", "12"]
    assert set(run["batches"]["2"]["split_median_s"]) == {"encoder:wavlm", "encoder:muq", "ensemble"}
    assert run["batches"]["1"]["split_method"] == "runner hook"
    assert run["cold_start"]["total_s"] > 0 and run["memory"]["peak_rss_mb"] > 0
    assert len(run["batches"]["1"]["latency"]["times"]) == 2
    # The factory's encoders project [50 frames x S samples] onto L*D=24 (wavlm) and D2=6 (muq) outputs.
    assert rep["flops"]["encoder:wavlm"]["flops"] == 2 * 50 * 3200 * 24
    assert rep["flops"]["encoder:muq"]["flops"] == 2 * 50 * 4800 * 6
    assert rep["flops"]["ensemble"]["flops"] == 2 * 3 * (8 * 3 + 4 * 8 + 4 * 6)
    assert rep["peaks"]["fp32"]["gflops"] > 0
    assert rep["summary"]["best"]["label"] == "ort-cpu fp32"
    assert rep["machine"]["versions"]["onnxruntime"]
    for name in ("report.md", "latency_vs_length.png", "throughput_vs_batch.png"):
        assert (out / name).stat().st_size > 0
    assert "| ort-cpu fp32 | 2 |" in readme.read_text()


def test_cli_reports_an_unavailable_backend_and_a_missing_bundle(tmp_path: Path) -> None:
    if "tensorrt" in available_backends():
        pytest.skip("tensorrt is installed here, so it is not an unavailable backend")
    bundle = tmp_path / "bundle"
    make_bundle(bundle, members=2, precisions={"fp32": {"status": "passed"}})
    out = tmp_path / "out"
    res = CliRunner().invoke(app, [
        "--bundle", str(bundle), "--out", str(out), "--lengths", "1", "--batches", "1", "--backends", "tensorrt",
        "--warmup", "0", "--repeats", "1", "--e2e-repeats", "1", "--no-flops", "--no-baselines", "--no-audiobox",
    ])
    assert res.exit_code == 0, res.output
    run = json.loads((out / "report.json").read_text())["runs"][0]
    assert "unavailable" in run["error"] or "fell back" in run["error"]
    res = CliRunner().invoke(app, ["--bundle", str(tmp_path / "none"), "--out", str(out)])
    assert res.exit_code == 2


def test_parse_list_refuses_bad_values() -> None:
    assert parse_list("1,10,60") == [1.0, 10.0, 60.0]
    assert parse_list("1,8", int) == [1, 8]
    for bad in ("", "a,b", "0,1", "-1"):
        with pytest.raises(Exception, match="list"):
            parse_list(bad)


def test_cli_and_runtime_worker_do_not_import_torch() -> None:
    import subprocess

    code = ("import sys; import mmmos.benchmarks.cli, mmmos.benchmarks.worker, mmmos.benchmarks.runtime_bench, "
            "mmmos.benchmarks.report, mmmos.benchmarks.flops, mmmos.benchmarks.peak, mmmos.benchmarks.versus, "
            "mmmos.benchmarks.versus_stats, mmmos.benchmarks.versus_report, mmmos.benchmarks.versus_worker, "
            "mmmos.benchmarks.op_profile, mmmos.benchmarks.torchaudio_standin; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
