"""Bundle folder rules: refuse a non-empty folder unless forced, sha256 of every file in the manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mmmos import AXES
from mmmos.export import bundle_writer as bw


def test_non_empty_folder_is_refused_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "old.fp32.onnx").write_bytes(b"old")
    (out / "notes.txt").write_text("mine")
    (out / "engines" / "k").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="--force"):
        bw.prepare_out_dir(out, force=False)
    bw.prepare_out_dir(out, force=True)
    # --force removes the bundle's own files only, never anything else.
    assert not (out / "old.fp32.onnx").exists() and not (out / "engines").exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert bw.prepare_out_dir(tmp_path / "new" / "b", force=False).is_dir()


def test_manifest_hashes_every_file(tmp_path: Path) -> None:
    out = bw.prepare_out_dir(tmp_path / "b", force=False)
    (out / "wavlm.fp32.onnx").write_bytes(b"graph")
    (out / "engines" / "10.0-sm90-b1-8-32").mkdir(parents=True)
    (out / "engines" / "10.0-sm90-b1-8-32" / "wavlm.fp16.plan").write_bytes(b"plan")
    bw.write_json(out / bw.REPORT, {"ok": True})
    manifest = bw.write_manifest(
        out, encoders=[{"name": "wavlm"}], ensemble=None, members=[], precisions={"fp32": {"status": "passed"}},
        provenance_block=bw.provenance("random-init", preset="tiny", seed=0), untrained=True,
    )
    on_disk = json.loads((out / bw.MANIFEST).read_text())
    assert on_disk == manifest
    assert manifest["format_version"] == 1 and manifest["axes"] == list(AXES) and manifest["untrained"] is True
    assert manifest["window"] == {"seconds": 10.0, "hop_seconds": 10.0}
    assert set(manifest["files"]) == {"wavlm.fp32.onnx", "report.json", "engines/10.0-sm90-b1-8-32/wavlm.fp16.plan"}
    assert manifest["files"]["wavlm.fp32.onnx"] == hashlib.sha256(b"graph").hexdigest()
    assert bw.read_manifest(out)["files"] == manifest["files"]
    bw.verify_files(out, manifest, ["wavlm.fp32.onnx"])
    (out / "wavlm.fp32.onnx").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="sha256"):
        bw.verify_files(out, manifest, ["wavlm.fp32.onnx"])


def test_read_manifest_rejects_other_versions(tmp_path: Path) -> None:
    (tmp_path / bw.MANIFEST).write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ValueError, match="format_version"):
        bw.read_manifest(tmp_path)
    with pytest.raises(FileNotFoundError):
        bw.read_manifest(tmp_path / "missing")
