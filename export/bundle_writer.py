"""The bundle folder: refusing to overwrite, manifest.json with the sha256 of every file, report.json.

The manifest follows docs/contracts.md ("The bundle"); the runtime reads nothing else.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import mmmos
from mmmos import AXES
from mmmos.runtime.bundle import sha256_file  # one hashing rule for writer and reader

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REPORT = "report.json"
# What an export writes; --force removes exactly these, never anything else in the folder.
_BUNDLE_GLOBS: tuple[str, ...] = ("*.onnx", "*.onnx.data", MANIFEST, REPORT)


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
        if (out_dir / "engines").is_dir():
            shutil.rmtree(out_dir / "engines")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def bundle_files(out_dir: Path) -> list[str]:
    """Every file in the bundle except the manifest itself, as sorted POSIX paths relative to it."""
    out_dir = Path(out_dir)
    return sorted(
        p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file() and p.name != MANIFEST
    )


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write indented JSON (NaN is not JSON: callers pass None instead)."""
    Path(path).write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return Path(path)


def provenance(source: str, checkpoints: Iterable[Path] = (), **extra: Any) -> dict[str, Any]:
    """The manifest's provenance block: source kind, checkpoints with their sha256, version, time."""
    return {
        "source": source,
        **extra,
        "checkpoints": [{"path": str(p), "sha256": sha256_file(p)} for p in checkpoints if Path(p).is_file()],
        "mmmos_version": mmmos.__version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def write_manifest(
    out_dir: Path,
    *,
    encoders: list[dict[str, Any]],
    ensemble: dict[str, Any] | None,
    members: list[dict[str, Any]],
    precisions: dict[str, dict[str, Any]],
    provenance_block: dict[str, Any],
    untrained: bool,
) -> dict[str, Any]:
    """Write manifest.json last, with the sha256 of every other file in the bundle; returns it."""
    out_dir = Path(out_dir)
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "axes": list(AXES),
        "window": {"seconds": 10.0, "hop_seconds": 10.0},
        "untrained": bool(untrained),
        "encoders": encoders,
        "ensemble": ensemble,
        "members": members,
        "precisions": precisions,
        "provenance": provenance_block,
        "files": {name: sha256_file(out_dir / name) for name in bundle_files(out_dir)},
    }
    write_json(out_dir / MANIFEST, manifest)
    return manifest


def read_manifest(bundle_dir: Path) -> dict[str, Any]:
    """Read a bundle's manifest.json (for --encoders-from); a missing one is a FileNotFoundError."""
    path = Path(bundle_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{bundle_dir} has no {MANIFEST}; pass a folder written by mmmos-export.")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {manifest.get('format_version')!r}, this mmmos writes {FORMAT_VERSION}; "
            "re-export the bundle."
        )
    return manifest


def verify_files(bundle_dir: Path, manifest: dict[str, Any], names: Iterable[str]) -> None:
    """Check the sha256 of ``names`` against the manifest; a mismatch raises ValueError."""
    for name in names:
        want = manifest.get("files", {}).get(name)
        if want is None or sha256_file(Path(bundle_dir) / name) != want:
            raise ValueError(f"{Path(bundle_dir) / name} does not match the sha256 in its manifest; re-export it.")
