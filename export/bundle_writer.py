"""The bundle folder on disk: refusing to overwrite, and replacing only what an export writes.

The manifest itself (schema, hashes, format version) is written by `mmmos.runtime.manifest`, the one
place that reads and writes it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from mmmos.runtime.manifest import ENGINES_DIR, MANIFEST_NAME, REPORT_NAME

# What an export writes; --force removes exactly these, never anything else in the folder.
_BUNDLE_GLOBS: tuple[str, ...] = ("*.onnx", "*.onnx.data", MANIFEST_NAME, REPORT_NAME)


class BundleExistsError(FileExistsError):
    """The output folder is not empty and --force was not given."""


def prepare_out_dir(out_dir: Path, force: bool) -> Path:
    """Create ``out_dir``; refuse a non-empty one unless ``force`` (then remove old bundle files only)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} is a file; pass a folder path for the bundle.")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not force:
            raise BundleExistsError(
                f"{out_dir} is not empty; choose an empty folder or pass --force to replace the bundle in it."
            )
        for pattern in _BUNDLE_GLOBS:
            for f in out_dir.glob(pattern):
                f.unlink()
        if (out_dir / ENGINES_DIR).is_dir():
            shutil.rmtree(out_dir / ENGINES_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir
