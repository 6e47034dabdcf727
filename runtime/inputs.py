"""Input expansion: audio files, folders, Audiobox `.jsonl` manifests, challenge `.csv` lists, `-` (stdin).

Everything is lazy (a generator), so a manifest of millions of rows is never held in memory. A bad
row in a manifest becomes an item with `error` set: it gets an error row, and the run goes on.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from .audio import AUDIO_EXTENSIONS

# Key of a result row: what --resume compares (path, start_time, end_time).
RowKey = tuple[str, float | None, float | None]


@dataclass
class InputItem:
    """One thing to score: a file (or a segment of one) or an in-memory waveform.

    Attributes:
        path: the file, as given or found (None for an array).
        start_time: segment start in seconds, or None.
        end_time: segment end in seconds, or None.
        array: samples for an in-memory input ([N] or [N, C]), else None.
        sample_rate: the array's rate, else None.
        error: set when the item is already known to be bad (e.g. a malformed manifest row).
        extra: manifest fields other than the ones above, kept for the caller.
    """

    path: str | None = None
    start_time: float | None = None
    end_time: float | None = None
    array: np.ndarray | None = None
    sample_rate: int | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> RowKey:
        """The (path, start_time, end_time) that identifies this item's row in an output file."""
        return row_key(self.path, self.start_time, self.end_time)


def row_key(path: str | None, start_time: Any = None, end_time: Any = None) -> RowKey:
    """Normalise a row identity so that a row read back from a file compares equal to its input."""

    def num(v: Any) -> float | None:
        if v is None or v == "":
            return None
        return round(float(v), 6)

    return (str(path) if path is not None else "", num(start_time), num(end_time))


def is_audio_name(name: str) -> bool:
    """True when a file name has one of the audio extensions a folder walk picks up."""
    return os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS


def walk_folder(folder: str) -> Iterator[str]:
    """Yield audio paths under `folder`, recursively, in sorted order (deterministic runs).

    Symbolic links to folders are not followed (no cycles); links to files and dangling links with an
    audio extension are yielded, so a dangling one gets its error row. A folder whose name has an audio
    extension (e.g. `x.wav/`) is yielded too, because a user listing it expects a row for it.
    """
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    for e in entries:
        path = os.path.join(folder, e.name)
        if e.is_dir(follow_symlinks=False):
            if is_audio_name(e.name):
                yield path
            else:
                yield from walk_folder(path)
        elif is_audio_name(e.name):
            yield path


def _resolve(raw: str, base: Path) -> str:
    """Resolve a manifest path: as given (relative to the working folder), else relative to the manifest."""
    p = Path(os.path.expanduser(raw))
    if p.is_absolute() or p.exists() or p.is_symlink():
        return str(p)
    alt = base / p
    return str(alt) if (alt.exists() or alt.is_symlink()) else str(p)


def _time(value: Any) -> float | None:
    if value is None or value == "":
        return None
    return float(value)


def _from_record(rec: dict[str, Any], base: Path, where: str) -> InputItem:
    """Turn one manifest record (jsonl object or csv row) into an item; bad records get `error`."""
    raw = rec.get("path") or rec.get("data_path")
    if not raw or not isinstance(raw, str):
        return InputItem(path=where, error=f"{where}: no 'path' (or 'data_path') field")
    extra = {k: v for k, v in rec.items() if k not in ("path", "data_path", "start_time", "end_time")}
    try:
        start, end = _time(rec.get("start_time")), _time(rec.get("end_time"))
    except (TypeError, ValueError):
        return InputItem(path=_resolve(raw, base), error=f"{where}: start_time/end_time must be numbers")
    return InputItem(path=_resolve(raw, base), start_time=start, end_time=end, extra=extra)


def read_jsonl(path: str) -> Iterator[InputItem]:
    """Yield the items of an Audiobox-style JSONL manifest (`path`, optional `start_time`/`end_time`)."""
    base = Path(path).parent
    try:
        fh = open(path, encoding="utf-8")  # noqa: SIM115 - closed below, generator-owned
    except OSError as exc:
        yield InputItem(path=path, error=f"cannot read manifest: {exc.strerror or exc}")
        return
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                yield InputItem(path=where, error=f"{where}: invalid JSON ({exc.msg})")
                continue
            if not isinstance(rec, dict):
                yield InputItem(path=where, error=f"{where}: expected a JSON object")
                continue
            yield _from_record(rec, base, where)


def read_csv(path: str) -> Iterator[InputItem]:
    """Yield the items of a CSV list with a `data_path` or `path` column (the challenge list format)."""
    base = Path(path).parent
    try:
        fh = open(path, encoding="utf-8", newline="")  # noqa: SIM115 - closed below, generator-owned
    except OSError as exc:
        yield InputItem(path=path, error=f"cannot read list: {exc.strerror or exc}")
        return
    with fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        if "path" not in cols and "data_path" not in cols:
            yield InputItem(path=path, error=f"{path}: CSV has no 'data_path' or 'path' column (has {cols})")
            return
        for lineno, rec in enumerate(reader, 2):
            yield _from_record(dict(rec), base, f"{path}:{lineno}")


def read_stdin(stream: IO[str] | None = None) -> Iterator[InputItem]:
    """Yield one file item per non-empty line of stdin."""
    for line in stream if stream is not None else sys.stdin:
        p = line.strip()
        if p:
            yield InputItem(path=p)


def expand(specs: Iterable[str], stdin: IO[str] | None = None) -> Iterator[InputItem]:
    """Expand CLI inputs into items, lazily and in order.

    `-` reads paths from stdin; `*.jsonl` and `*.csv` files are manifests; folders are walked
    recursively; anything else is an audio file (missing ones get their error row when decoded).
    """
    for spec in specs:
        if spec == "-":
            yield from read_stdin(stdin)
            continue
        low = spec.lower()
        if os.path.isdir(spec) and not is_audio_name(spec.rstrip("/\\")):
            yield from (InputItem(path=p) for p in walk_folder(spec))
        elif low.endswith(".jsonl"):
            yield from read_jsonl(spec)
        elif low.endswith(".csv"):
            yield from read_csv(spec)
        else:
            yield InputItem(path=spec)
