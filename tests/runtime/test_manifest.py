"""The manifest, read and written in one place (runtime/manifest.py): hashes, format version, updates."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mmmos import AXES
from mmmos.runtime.errors import BundleError, BundleNotFoundError
from mmmos.runtime.manifest import (
    MANIFEST_NAME,
    REPORT_NAME,
    EncoderSpec,
    provenance,
    read_manifest,
    update_manifest,
    verify_files,
    write_json,
    write_manifest,
)


def _write(out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    (out / "wavlm.fp32.onnx").write_bytes(b"graph")
    (out / "engines" / "10.0-sm90-b1-8-32").mkdir(parents=True)
    (out / "engines" / "10.0-sm90-b1-8-32" / "wavlm.fp16.plan").write_bytes(b"plan")
    write_json(out / REPORT_NAME, {"ok": True, "nan": float("nan")})
    return write_manifest(
        out, encoders=[EncoderSpec("wavlm", 16000, 160000, graphs={"fp32": "wavlm.fp32.onnx"},
                                   outputs=("wavlm_pooled",))],
        ensemble=None, members=[], precisions={"fp32": {"status": "passed"}},
        provenance=provenance("random-init", preset="tiny", seed=0), untrained=True,
    )


def test_manifest_hashes_every_file_but_engines(tmp_path: Path) -> None:
    manifest = _write(tmp_path / "b")
    out = tmp_path / "b"
    assert json.loads((out / MANIFEST_NAME).read_text()) == manifest == read_manifest(out)
    assert manifest["format_version"] == 1 and manifest["axes"] == list(AXES) and manifest["untrained"] is True
    assert manifest["window"] == {"seconds": 10.0, "hop_seconds": 10.0}
    # engines are keyed by their graph's hash instead: a rebuilt plan must not invalidate the bundle
    assert set(manifest["files"]) == {"wavlm.fp32.onnx", "report.json"}
    assert manifest["files"]["wavlm.fp32.onnx"] == hashlib.sha256(b"graph").hexdigest()
    assert json.loads((out / REPORT_NAME).read_text())["nan"] is None  # strict JSON
    assert EncoderSpec.from_dict(manifest["encoders"][0]).outputs == ("wavlm_pooled",)
    verify_files(out, manifest, ["wavlm.fp32.onnx"])
    (out / "wavlm.fp32.onnx").write_bytes(b"tampered")
    with pytest.raises(BundleError, match="sha256"):
        verify_files(out, manifest, ["wavlm.fp32.onnx"])


def test_update_rehashes_changed_files_and_drops_vanished_ones(tmp_path: Path) -> None:
    manifest = _write(tmp_path / "b")
    out = tmp_path / "b"
    (out / "wavlm.int8.onnx").write_bytes(b"int8")
    write_json(out / REPORT_NAME, {"calibration": {}})
    manifest["encoders"][0]["graphs"]["int8"] = "wavlm.int8.onnx"
    update_manifest(out, manifest, ["wavlm.int8.onnx"])
    on_disk = read_manifest(out)
    assert on_disk["files"]["wavlm.int8.onnx"] == hashlib.sha256(b"int8").hexdigest()
    assert on_disk["files"][REPORT_NAME] == hashlib.sha256((out / REPORT_NAME).read_bytes()).hexdigest()
    (out / "wavlm.int8.onnx").unlink()
    update_manifest(out, on_disk)
    assert "wavlm.int8.onnx" not in read_manifest(out)["files"]


def test_read_manifest_rejects_other_versions(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"format_version": 99}))
    with pytest.raises(BundleError, match="format_version 99"):
        read_manifest(tmp_path)
    with pytest.raises(BundleNotFoundError):
        read_manifest(tmp_path / "missing")
