"""Labelled manifests: the AudioMOS 2025 Track 2 CSV and Audiobox-style JSONL.

- CSV: ``sample_id,data_path,Production_Quality,Production_Complexity,Content_Enjoyment,Content_Usefulness``
  (the challenge lists), or any CSV with a ``path``/``data_path`` column and the axes named ``PQ/PC/CE/CU``.
- JSONL: one object per line with ``path`` (or ``data_path``) and the four axes, named ``PQ/PC/CE/CU`` or
  spelled out; a list of ratings is averaged (the human-annotation files keep the 10 raw ratings).

Relative paths resolve against ``root`` (default: the manifest's folder); the challenge lists' placeholder
prefix ``/your_path/`` is replaced by ``root``. Rows whose audio file is missing or unreadable are reported
(count and first paths) and skipped, never dropped silently.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmmos import AXES

AXIS_ALIASES: dict[str, str] = {
    "pq": "PQ",
    "production_quality": "PQ",
    "pc": "PC",
    "production_complexity": "PC",
    "ce": "CE",
    "content_enjoyment": "CE",
    "cu": "CU",
    "content_usefulness": "CU",
}
"""Lower-cased column names accepted for each axis."""

PLACEHOLDER_PREFIX = "/your_path/"
"""Path prefix of the challenge CSVs, to be replaced by ``--root``."""

_ID_KEYS = ("sample_id", "id", "key", "wavid", "utt_id")
_PATH_KEYS = ("path", "data_path", "audio_path", "audio_filepath", "file")
_SYSTEM_KEYS = ("system", "system_id", "sys")


@dataclass
class Clip:
    """One labelled row: its id, resolved audio path, labels in AXES order (NaN where absent), system."""

    id: str
    path: str
    labels: tuple[float, float, float, float]
    system: str | None = None

    @property
    def labelled(self) -> bool:
        """True when all four axes have a finite label."""
        return all(math.isfinite(v) for v in self.labels)


@dataclass
class Manifest:
    """The rows kept, and the rows skipped with a one-line reason each."""

    clips: list[Clip]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    source: str = ""

    def report(self, limit: int = 5) -> str:
        """One short text: how many rows were skipped and the first few paths with their reason."""
        if not self.skipped:
            return ""
        head = "; ".join(f"{p} ({why})" for p, why in self.skipped[:limit])
        more = f"; ... {len(self.skipped) - limit} more" if len(self.skipped) > limit else ""
        return f"{self.source}: skipped {len(self.skipped)} of {len(self.skipped) + len(self.clips)} rows: {head}{more}"


def _norm_key(k: str) -> str:
    return k.strip().lower().replace(" ", "_").replace("-", "_")


def _value(v: Any) -> float:
    """A label: a number, a numeric string, or a list of ratings (averaged); empty -> NaN."""
    if v is None or v == "":
        return math.nan
    if isinstance(v, list | tuple):
        vals = [float(x) for x in v]
        return sum(vals) / len(vals) if vals else math.nan
    return float(v)


def _pick(row: dict[str, Any], keys: Iterable[str]) -> Any:
    for k in keys:
        if k in row and row[k] not in (None, ""):
            return row[k]
    return None


def resolve_path(raw: str, root: Path) -> Path:
    """Resolve a manifest path: the challenge placeholder and relative paths go under ``root``."""
    if raw.startswith(PLACEHOLDER_PREFIX):
        return root / raw[len(PLACEHOLDER_PREFIX) :]
    p = Path(raw).expanduser()
    return p if p.is_absolute() else root / p


def _rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV or JSONL file as dicts with normalised keys."""
    text = path.read_text(encoding="utf-8-sig")
    rows: list[dict[str, Any]] = []
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n} is not valid JSON ({e.msg}); fix or remove that line.") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{n} is not a JSON object; every line must be one.")
            rows.append({_norm_key(k): v for k, v in obj.items()})
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        for r in reader:
            rows.append({_norm_key(k): v for k, v in r.items() if k is not None})
    return rows


def _readable(path: Path) -> str | None:
    """None if soundfile can open the file's header, else a one-line reason."""
    if not path.is_file():
        return "missing"
    try:
        import soundfile

        info = soundfile.info(str(path))
    except Exception as e:  # soundfile raises its own LibsndfileError and RuntimeError subclasses
        return f"unreadable: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    if info.frames == 0:
        return "empty"
    return None


def load_manifest(
    path: str | Path,
    root: str | Path | None = None,
    check_files: bool = True,
    require_labels: bool = False,
    warn: bool = True,
) -> Manifest:
    """Read a CSV or JSONL manifest.

    ``check_files`` opens each audio header and skips missing/unreadable rows (reported in
    ``Manifest.skipped``, and on stderr when ``warn``); ``require_labels`` also skips rows lacking an axis.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist; pass a CSV or JSONL file.")
    base = Path(root) if root is not None else path.parent
    clips: list[Clip] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for n, row in enumerate(_rows(path), 1):
        raw = _pick(row, _PATH_KEYS)
        if raw is None:
            raise ValueError(f"{path} row {n} has no path column (one of {', '.join(_PATH_KEYS)}); add one.")
        labels = [math.nan] * 4
        for k, v in row.items():
            axis = AXIS_ALIASES.get(k)
            if axis is not None:
                labels[AXES.index(axis)] = _value(v)
        resolved = resolve_path(str(raw), base)
        cid = str(_pick(row, _ID_KEYS) or raw)
        system = _pick(row, _SYSTEM_KEYS)
        clip = Clip(id=cid, path=str(resolved), labels=tuple(labels), system=None if system is None else str(system))  # type: ignore[arg-type]
        if cid in seen:
            skipped.append((str(raw), f"duplicate id {cid}"))
            continue
        if require_labels and not clip.labelled:
            skipped.append((str(raw), "missing label(s)"))
            continue
        if check_files:
            why = _readable(resolved)
            if why is not None:
                skipped.append((str(resolved), why))
                continue
        seen.add(cid)
        clips.append(clip)
    manifest = Manifest(clips=clips, skipped=skipped, source=str(path))
    if warn and skipped:
        print(manifest.report(), file=sys.stderr)
    return manifest
