"""Writing calibration results into a bundle: manifest ``precisions``, new graphs, ``report.json``, sha256 list.

Every file calibration adds or changes that the manifest lists (report.json, INT8 graphs) gets its sha256
re-computed with the runtime's ``mmmos.runtime.bundle.sha256_file`` (the exporter's too), so a calibrated
bundle still passes the runtime's verification.
Writes go to a temporary file first and are then renamed, so an interrupted run never leaves half a manifest.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from mmmos.runtime.bundle import sha256_file

REPORT_FILE = "report.json"
MANIFEST_FILE = "manifest.json"


def _clean(value: Any) -> Any:
    """Replace NaN/inf by None (strict JSON readers reject them) in nested dicts/lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename), NaN written as null."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_clean(data), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_report(bundle: Path) -> dict:
    """The bundle's report.json (an empty dict when there is none yet)."""
    path = bundle / REPORT_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def graph_files(bundle: Path, graph: str) -> list[str]:
    """A graph and its external-data file (``X.onnx.data``) when it has one, relative to the bundle."""
    names = [graph]
    if (bundle / (graph + ".data")).is_file():
        names.append(graph + ".data")
    return names


def refresh_hashes(bundle: Path, manifest: dict, names: list[str]) -> None:
    """Re-hash ``names`` into ``manifest["files"]``, and drop entries whose file no longer exists.

    A manifest without a ``files`` list is left without one (the runtime then verifies nothing).
    """
    files = manifest.get("files")
    if files is None:
        return
    for name in names:
        if (bundle / name).is_file():
            files[name] = sha256_file(bundle / name)
    for name in [n for n in files if not (bundle / n).is_file()]:
        del files[name]


def save_calibration(bundle: Path, manifest: dict, calibration: dict, new_files: list[str]) -> None:
    """Write the ``calibration`` block into report.json and the updated manifest (hashes refreshed).

    The report's other sections (the exporter's parity and op checks) are kept as they are.
    """
    report = read_report(bundle)
    report["calibration"] = calibration
    write_json(bundle / REPORT_FILE, report)
    listed = set(manifest.get("files") or {})
    # report.json is re-hashed only when the exporter chose to list it; new graphs always are
    refresh = [*new_files, REPORT_FILE] if REPORT_FILE in listed else list(new_files)
    refresh_hashes(bundle, manifest, refresh)
    write_json(bundle / MANIFEST_FILE, manifest)
