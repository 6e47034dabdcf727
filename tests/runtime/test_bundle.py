"""Bundle loading, checksums, precision choice, default locations (runtime/bundle.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mmmos.runtime.bundle import Bundle, default_bundle_dir, resolve_bundle_dir
from mmmos.runtime.errors import BundleError, BundleNotFoundError, PrecisionError

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
    assert b.available_precisions() == ["fp32", "fp16"] and b.passed_precisions() == ["fp32"]


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
    assert b.check_precision("fp32") is None
    with pytest.raises(PrecisionError, match="unchecked"):
        b.check_precision("fp16")
    assert "warning" in (b.check_precision("fp16", force=True) or "")
    with pytest.raises(PrecisionError, match="not in bundle"):
        b.check_precision("int8", force=True)
    assert b.ensemble_graph("fp16").name == "ensemble.fp32.onnx"  # ensemble falls back to fp32


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
