"""End to end: calibrate a tiny random-weight bundle on audio made here; the runtime then trusts the statuses."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmmos.calibration.calibrate import CalibrationOptions, calibrate_bundle
from mmmos.calibration.reports import Thresholds

from .audio_factory import write_audio

pytest.importorskip("torch", reason="building the test bundle needs the export extra (torch)")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One tiny bundle made by ``mmmos-export --random-init --preset tiny`` and test audio, built once."""
    root = tmp_path_factory.mktemp("calib")
    cmd = [sys.executable, "-m", "mmmos.export.cli", str(root / "bundle"), "--random-init", "--preset", "tiny",
           "--num-members", "3", "--no-trt"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "bundle", write_audio(root / "audio", n=6)


@pytest.fixture()
def bundle(pristine: tuple[Path, Path], tmp_path: Path) -> Path:
    """A fresh copy of the tiny bundle per test (calibration edits it in place)."""
    return Path(shutil.copytree(pristine[0], tmp_path / "bundle"))


def _quiet(_: str) -> None:
    pass


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


NO_TORCH = r"""
import importlib.abc, pkgutil, sys

class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"torch is blocked in this test ({name})")
        return None

sys.meta_path.insert(0, BlockTorch())
import mmmos.calibration
for mod in pkgutil.iter_modules(mmmos.calibration.__path__):
    __import__(f"mmmos.calibration.{mod.name}")
from mmmos.calibration.cli import main
sys.argv = ["mmmos-calibrate", *sys.argv[1:]]
try:
    main()
finally:
    sys.stderr.write(f"TORCH-LOADED={'torch' in sys.modules}\n")
"""


def test_calibrate_writes_int8_report_and_statuses(bundle: Path, pristine: tuple[Path, Path]) -> None:
    # run as the console command, in a process where torch cannot be imported (calibration never needs it)
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, str(bundle), str(pristine[1])],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "TORCH-LOADED=False" in proc.stderr
    assert "int8\t" in proc.stdout and "fp16\t" in proc.stdout
    block = json.loads((bundle / "report.json").read_text())["calibration"]
    man = _manifest(bundle)
    for enc in man["encoders"]:
        assert enc["graphs"]["int8"] == f"{enc['name']}.int8.onnx"
        assert (bundle / enc["graphs"]["int8"]).is_file()
        assert enc["graphs"]["int8"] in man["files"]
        assert block["int8"]["encoders"][enc["name"]]["int8"]["n_quantized"] > 0
    from mmmos.runtime.trt_engine import unavailable_reason

    if unavailable_reason() is not None:  # no TensorRT/GPU: the TensorRT INT8 variant is skipped, with a reason
        assert block["int8"]["tensorrt"] == {"written": False, "skipped": unavailable_reason()}
        assert all("int8-trt" not in e["graphs"] for e in man["encoders"])
    assert "int8" not in man["ensemble"]["graphs"]  # heads stay fp32
    assert man["precisions"]["fp32"]["status"] == "passed"
    for p in ("fp16", "int8"):
        entry = man["precisions"][p]
        assert entry["status"] in ("passed", "failed")
        rep = block["precisions"][p]
        assert set(rep["per_axis"]) == {"PQ", "PC", "CE", "CU"}
        # INT8 is judged on the 3 files it was not calibrated on, and the calibration files are reported too
        assert rep["n_files"] == 3 and rep["on_calibration_files"]["n_files"] == 3
        assert rep["judged_on"].startswith("held out") and block["held_out"] is True
        # the status follows the rule on the recorded numbers
        lim = rep["thresholds"]
        ok = all(m["max_abs"] <= lim["max_abs"] and (not m["ranked"] or m["srcc"] >= lim["min_srcc"])
                 for m in rep["per_axis"].values())
        assert entry["status"] == ("passed" if ok else "failed")
        assert 0.0 < rep["max_abs"] < 1.0  # int8/fp16 change scores a little, not a lot
    def no_nan(token: str) -> None:
        raise AssertionError(f"report.json holds {token}, which strict JSON readers reject")

    report = json.loads((bundle / "report.json").read_text(), parse_constant=no_nan)
    assert "parity" in report and "checks" in report  # the exporter's sections are kept
    assert report["calibration"]["precisions"]["int8"]["per_axis"]["PQ"]["srcc"] is not None
    # the ensemble graph runs fp32 under int8: the report says which graphs produced the scores
    assert block["precisions"]["int8"]["graphs"]["ensemble"] == man["ensemble"]["graphs"]["fp32"]


def test_failed_precision_is_refused_unless_forced(bundle: Path, pristine: tuple[Path, Path]) -> None:
    opts = CalibrationOptions(thresholds={"int8": Thresholds(max_abs=1e-6, min_srcc=0.98)}, trt_int8=True)
    block = calibrate_bundle(bundle, pristine[1], opts, log=_quiet)
    assert block["precisions"]["int8"]["status"] == "failed"
    # forced TensorRT variant: symmetric QDQ graphs, hashed, and measured on ORT CPU; no implicit-INT8 table
    man = _manifest(bundle)
    for enc in man["encoders"]:
        assert enc["graphs"]["int8-trt"] in man["files"]
        assert block["int8"]["encoders"][enc["name"]]["int8-trt"]["settings"]["quantize_bias"] is False
    assert not (bundle / "trt_calibration").exists() and not any("trt_calibration" in f for f in man["files"])
    from mmmos.runtime.trt_engine import unavailable_reason

    if unavailable_reason() is not None:  # graphs forced on a machine without TensorRT/GPU: no plans
        assert block["int8"]["tensorrt"]["engines"] == {"status": "skipped", "reason": unavailable_reason()}
    assert block["precisions"]["int8-trt"]["thresholds"] == {"max_abs": 0.15, "min_srcc": 0.98}
    assert man["precisions"]["int8-trt"]["status"] == block["precisions"]["int8-trt"]["status"]
    assert any("max abs" in r for r in block["precisions"]["int8"]["reasons"])
    assert _manifest(bundle)["precisions"]["int8"]["status"] == "failed"

    from mmmos.runtime.bundle import Bundle
    from mmmos.runtime.errors import PrecisionError

    loaded = Bundle.load(bundle)  # sha256 list still matches after calibration rewrote files
    assert "int8" in loaded.graph_keys() and "int8" not in loaded.passed_keys()
    assert "fp32" in loaded.passed_keys()

    from mmmos.runtime import Scorer

    # calibration's own runner scores files exactly as the runtime does (same graphs, same averaging)
    fp32 = Scorer(bundle, backend="ort-cpu", precision="fp32", warn=_quiet).score(block["fp32_scores"]["files"])
    got = np.array([[r.scores[a] for a in ("PQ", "PC", "CE", "CU")] for r in fp32])
    assert np.abs(got - np.array(block["fp32_scores"]["mean"])).max() < 1e-4
    with pytest.raises(PrecisionError, match="int8"):
        Scorer(bundle, backend="ort-cpu", precision="int8", warn=_quiet)
    warnings: list[str] = []
    scorer = Scorer(bundle, backend="ort-cpu", precision="int8", force_precision=True, warn=warnings.append)
    assert any("int8" in w for w in warnings)  # forced: it runs, with a warning
    result = scorer.score(str(pristine[1] / "clip00.wav"))
    assert result.error is None and set(result.scores) == {"PQ", "PC", "CE", "CU"}

    from mmmos.calibration.bench import bench_bundle, format_table

    table = bench_bundle(bundle, repeats=1, warmup=0)
    assert set(table["wall_ms"]) >= {"fp32", "fp16", "int8"} and table["cpu_ms"]["int8"]["total"] > 0
    assert "speed-up" in format_table(table["wall_ms"])


def test_cli_runs_and_reports(bundle: Path, pristine: tuple[Path, Path]) -> None:
    from typer.testing import CliRunner

    from mmmos.calibration.cli import app

    labels = bundle.parent / "train.csv"  # a labelled manifest gives the target statistics
    rows = [f"{i},{pristine[1] / f'clip{i:02d}.wav'},{5 + i % 3},{3 + i % 2},{4 + i % 4},{6 - i % 3}" for i in range(6)]
    labels.write_text("sample_id,data_path,PQ,PC,CE,CU\n" + "\n".join(rows) + "\n")
    res = CliRunner().invoke(app, [str(bundle), str(pristine[1]), "--no-int8", "--max-files", "4",
                                   "--fp16-max-abs", "0", "--fp16-min-srcc", "1.1", "--targets", str(labels)])
    assert res.exit_code == 0, res.output
    assert "fp16\tfailed" in res.stdout
    man = _manifest(bundle)
    assert man["precisions"]["fp16"]["status"] == "failed" and man["precisions"]["fp16"]["n_files"] == 4
    assert "int8" not in man["precisions"]
    assert man["target_stats"]["mean"] == pytest.approx([6.0, 3.5, 31 / 6, 5.0])
    assert man["target_stats"]["n"] == [6, 6, 6, 6]
    bad = CliRunner().invoke(app, [str(bundle), str(bundle / "nope")])
    assert bad.exit_code == 2 and "does not exist" in bad.output


def test_trt_int8_plans_are_built_from_the_symmetric_graphs(bundle: Path, pristine: tuple[Path, Path],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from mmmos.runtime import AXES, Scorer

    from .. import fake_trt

    monkeypatch.setenv("MMMOS_CACHE_DIR", str(bundle.parent / "cache"))
    gpu = fake_trt.install(monkeypatch)  # TensorRT and a GPU "are present": int8-trt graphs and plans by default
    block = calibrate_bundle(bundle, pristine[1], CalibrationOptions(max_files=3, calib_windows=4), log=_quiet)
    man = _manifest(bundle)
    engines = block["int8"]["tensorrt"]["engines"]
    assert block["int8"]["tensorrt"]["written"] and engines["status"] == "built"
    want = [*(e["graphs"]["int8-trt"] for e in man["encoders"]), man["ensemble"]["graphs"]["fp32"]]
    assert sorted(p.name for p in gpu.rec.parsed) == sorted(want)  # never the ORT (uint8) int8 graphs
    folder = bundle / "engines" / engines["key"]
    assert sorted(p.name for p in folder.glob("*.plan")) == sorted(
        f"{g.removesuffix('.onnx')}.{man['files'][g][:16]}.plan" for g in want)  # the hash the runtime verifies
    with Scorer(bundle, backend="tensorrt", precision="int8", force_precision=True, warn=_quiet) as trt, \
            Scorer(bundle, backend="ort-cpu", precision="fp32", warn=_quiet) as cpu:
        assert trt.backend == "tensorrt"
        clip = str(pristine[1] / "clip00.wav")
        got, ref = trt.score(clip), cpu.score(clip)
    assert len(gpu.rec.parsed) == len(want)  # the shipped plans were loaded, nothing rebuilt
    assert max(abs(got.scores[a] - ref.scores[a]) for a in AXES) < 0.15  # the int8 gate
