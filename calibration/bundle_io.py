"""Writing calibration results into a bundle: the `calibration` block of report.json and the updated manifest.

The manifest is written back by the runtime's `update_manifest` (the one writer), which re-hashes the files
calibration added or changed, so a calibrated bundle still passes the runtime's verification.
"""

from __future__ import annotations

from pathlib import Path

from mmmos.runtime.manifest import REPORT_NAME, read_report, update_manifest, write_json


def save_calibration(bundle: Path, manifest: dict, calibration: dict, new_files: list[str]) -> None:
    """Write the ``calibration`` block into report.json and the updated manifest (hashes refreshed).

    The report's other sections (the exporter's parity and op checks) are kept as they are.
    """
    report = read_report(bundle)
    report["calibration"] = calibration
    write_json(bundle / REPORT_NAME, report)
    update_manifest(bundle, manifest, new_files)
