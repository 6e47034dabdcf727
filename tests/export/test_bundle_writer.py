"""Bundle folder rules: refuse a non-empty folder unless forced, and replace only the bundle's own files."""

from __future__ import annotations

from pathlib import Path

import pytest

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
