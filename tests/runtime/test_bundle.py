"""Bundle loading, checksums, precision choice, default locations (runtime/bundle.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mmmos.runtime.bundle import Bundle, default_bundle_dir, resolve_bundle_dir
from mmmos.runtime.errors import BundleError, BundleNotFoundError, PrecisionError
from mmmos.runtime.names import graph_key

from ..bundle_factory import make_bundle


def _copy(bundle: tuple[Path, object], tmp_path: Path) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(bundle[0], dst)
    return dst


def test_loads_contract_fields(bundle: tuple[Path, object]) -> None:
    b = Bundle.load(bundle[0])
    assert [e.name for e in b.encoders] == ["wavlm", "muq"]
    assert b.ensemble_inputs == ("wavlm_pooled", "muq_pooled") and b.n_members == 3
    assert b.untrained and b.window_seconds == 10.0
    assert b.graph_keys() == ["fp32", "fp16"] and b.passed_keys() == ["fp32"]


def test_checksum_mismatch_and_missing_file(bundle: tuple[Path, object], tmp_path: Path) -> None:
    root = _copy(bundle, tmp_path)
    Bundle.load(root)  # fills the stamp cache
    g = root / "muq.fp32.onnx"
    g.write_bytes(g.read_bytes() + b"\0")
    with pytest.raises(BundleError, match=r"checksum mismatch.*re-export"):
        Bundle.load(root)
    g.unlink()
    with pytest.raises(BundleError, match="missing"):
        Bundle.load(root)
    Bundle.load(root, verify=False)  # the caller may skip verification


def test_unknown_format_version(bundle: tuple[Path, object], tmp_path: Path) -> None:
    root = _copy(bundle, tmp_path)
    man = json.loads((root / "manifest.json").read_text())
    man["format_version"] = 99
    (root / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(BundleError, match="format_version 99"):
        Bundle.load(root)


def test_precision_choice(bundle: tuple[Path, object]) -> None:
    b = Bundle.load(bundle[0])
    assert b.choose_precision("fp32", "ort-cpu") == ("fp32", None)
    with pytest.raises(PrecisionError, match="unchecked"):
        b.choose_precision("fp16", "ort-cpu")
    assert "warning" in (b.choose_precision("fp16", "ort-cpu", force=True)[1] or "")
    with pytest.raises(PrecisionError, match="not in bundle"):
        b.choose_precision("int8", "ort-cpu", force=True)
    assert b.ensemble_graph("fp16").name == "ensemble.fp32.onnx"  # ensemble falls back to fp32


def test_auto_precision_is_fp16_on_a_gpu_only_when_it_passed(bundle: tuple[Path, object], tmp_path: Path) -> None:
    b = Bundle.load(bundle[0])  # fp16 graphs, unchecked
    assert b.choose_precision("auto", "tensorrt")[0] == "fp32"
    root = _copy(bundle, tmp_path)
    man = json.loads((root / "manifest.json").read_text())
    man["precisions"]["fp16"] = {"status": "passed"}
    (root / "manifest.json").write_text(json.dumps(man))
    passed = Bundle.load(root)
    assert passed.choose_precision("auto", "tensorrt")[0] == "fp16"  # what export builds engines for
    assert passed.choose_precision("auto", "ort-cuda")[0] == "fp16"
    assert passed.choose_precision("auto", "ort-cpu")[0] == "fp32"  # CPU kernels run fp16 no faster


def test_int8_on_tensorrt_reads_the_symmetric_qdq_graphs(bundle: tuple[Path, object], tmp_path: Path) -> None:
    root = _copy(bundle, tmp_path)
    man = json.loads((root / "manifest.json").read_text())
    for e in man["encoders"]:
        e["graphs"]["int8"] = e["graphs"]["fp32"]  # stand-ins: only the keys matter here
    man["precisions"]["int8"] = {"status": "passed"}
    (root / "manifest.json").write_text(json.dumps(man))
    b = Bundle.load(root)
    assert b.choose_precision("int8", "ort-cpu")[0] == "int8"
    with pytest.raises(PrecisionError, match=r"'int8-trt' graphs.*--trt-int8"):
        b.choose_precision("int8", "tensorrt")  # ORT's uint8/zero-point graph would not parse in TensorRT
    for e in man["encoders"]:
        e["graphs"]["int8-trt"] = e["graphs"]["fp32"]
    man["precisions"]["int8-trt"] = {"status": "passed"}
    (root / "manifest.json").write_text(json.dumps(man))
    b = Bundle.load(root)
    assert b.choose_precision("int8", "tensorrt")[0] == "int8"
    trt_graph = root / man["encoders"][0]["graphs"]["int8-trt"]
    assert b.encoder_graph(b.encoders[0], graph_key("int8", "tensorrt")) == trt_graph


def test_resolution_order(bundle: tuple[Path, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BundleNotFoundError, match="mmmos-export"):
        resolve_bundle_dir(None)
    assert default_bundle_dir().is_relative_to(tmp_path)  # MMMOS_CACHE_DIR (conftest)
    make_bundle(default_bundle_dir(), seed=3)
    assert resolve_bundle_dir(None) == default_bundle_dir()
    monkeypatch.setenv("MMMOS_BUNDLE", str(bundle[0]))
    assert resolve_bundle_dir(None) == bundle[0]
    with pytest.raises(BundleNotFoundError, match="--bundle"):
        resolve_bundle_dir(tmp_path / "nothing")
