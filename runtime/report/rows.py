"""Reading score rows: `mmmos-score` JSONL files, its CSV and challenge outputs, Ray output folders, stdin.

Rows stream lazily (a corpus of millions of rows is filtered without holding it). A line that is not a
row is skipped with a warning (counted in `RowReader.skipped`); a half-written last line of an
interrupted run is named as such.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..bundle import AXES
from ..errors import InputError

PART_GLOB = "part-*.jsonl"
"""The part files of a `mmmos-score --ray` output folder."""
MAX_WARNINGS = 5


@dataclass
class ScoreRow:
    """One row and where it came from.

    Attributes:
        data: the row as written (path, PQ..CU, std, duration_s, windows, error, model, timeline, ...).
        source: the file it was read from ("-" for stdin).
        line: its line number there.
    """

    data: dict[str, Any]
    source: str
    line: int

    @property
    def path(self) -> str:
        """The row's audio path ("" when it has none)."""
        return str(self.data.get("path") or "")

    @property
    def scores(self) -> dict[str, float] | None:
        """Axis -> score when the row was scored (all four finite numbers), else None."""
        if self.data.get("error"):
            return None
        out = {}
        for a in AXES:
            v = self.data.get(a)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                return None
            out[a] = float(v)
        return out

    @property
    def ok(self) -> bool:
        """True when the row holds scores (not an error row)."""
        return self.scores is not None

    @property
    def error(self) -> str:
        """The row's error, or why it counts as failed."""
        return str(self.data.get("error") or "the row has no scores")


def _finite(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def expand_inputs(specs: list[str]) -> list[str]:
    """Turn the command line's inputs into files to read ("-" stays): a folder gives its part-*.jsonl files.

    Raises:
        InputError: a missing input, or a folder without part files.
    """
    files: list[str] = []
    for spec in specs:
        if spec == "-":
            files.append(spec)
            continue
        p = Path(spec)
        if p.is_dir():
            parts = sorted(p.glob(PART_GLOB))
            if not parts:
                raise InputError(f"{spec} is a folder without {PART_GLOB} files (what mmmos-score --ray writes); "
                                 "give JSONL files or such a folder.")
            files.extend(str(x) for x in parts)
        elif p.is_file():
            files.append(spec)
        else:
            raise InputError(f"{spec} does not exist; give mmmos-score's JSONL output (or - for stdin).")
    if files.count("-") > 1:
        raise InputError("- (stdin) is given more than once; give it once.")
    return files


@dataclass
class RowReader:
    """Reads rows from files (see `expand_inputs`) and counts what it skipped.

    Args:
        files: JSONL / CSV / challenge .txt files, or "-" for JSONL on stdin.
        warn: where warnings go (stderr lines).
        stdin: the stream "-" reads (sys.stdin).
    """

    files: list[str]
    warn: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)
    stdin: IO[str] | None = None
    skipped: int = 0
    _warned: int = field(default=0, repr=False)

    def __iter__(self) -> Iterator[ScoreRow]:
        """Every row of every file, in order."""
        for f in self.files:
            yield from self._read(f)
        if self._warned > MAX_WARNINGS:
            self.warn(f"mmmos-report: warning: {self._warned - MAX_WARNINGS} more lines skipped "
                      f"({self.skipped} in all).")

    def _skip(self, where: str, why: str) -> None:
        self.skipped += 1
        self._warned += 1
        if self._warned <= MAX_WARNINGS:
            self.warn(f"mmmos-report: warning: {where}: {why}; skipped.")

    def _read(self, name: str) -> Iterator[ScoreRow]:
        low = name.lower()
        if name == "-":
            yield from self._jsonl(self.stdin if self.stdin is not None else sys.stdin, "-")
            return
        with open(name, encoding="utf-8", newline="") as fh:
            if low.endswith(".csv"):
                yield from self._csv(fh, name)
            elif low.endswith(".txt"):
                yield from self._challenge(fh, name)
            else:
                yield from self._jsonl(fh, name)

    def _jsonl(self, fh: IO[str], name: str) -> Iterator[ScoreRow]:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError:
                partial = not line.endswith("\n")
                self._skip(f"{name}:{n}", "a half-written last line (an interrupted run)" if partial
                           else "not a JSON row")
                continue
            if not isinstance(data, dict) or not isinstance(data.get("path"), str):
                self._skip(f"{name}:{n}", "not a score row (a JSON object with a 'path')")
                continue
            yield ScoreRow(data, name, n)

    def _csv(self, fh: IO[str], name: str) -> Iterator[ScoreRow]:
        """`mmmos-score --format csv` rows: path, start_time, end_time, PQ.., PQ_std.., duration_s, windows, error."""
        reader = csv.DictReader(fh)
        if "path" not in (reader.fieldnames or []):
            raise InputError(f"{name} has no 'path' column; give a CSV that mmmos-score --format csv wrote.")
        for n, rec in enumerate(reader, 2):
            data: dict[str, Any] = {"path": rec["path"]}
            for k in ("start_time", "end_time"):
                if rec.get(k):
                    data[k] = _finite(rec[k])
            data.update({a: _finite(rec.get(a)) for a in AXES})
            std = {a: _finite(rec.get(f"{a}_std")) for a in AXES}
            data["std"] = std if all(v is not None for v in std.values()) else None
            data["duration_s"] = _finite(rec.get("duration_s"))
            data["windows"] = int(_finite(rec.get("windows")) or 0)
            data["error"] = rec.get("error") or None
            model = rec.get("model") or ""
            if model:
                name_, _, sha = model.partition("@")
                data["model"] = {"name": name_, "sha256": sha}
            extra = {k: v for k, v in rec.items() if k not in data and not k.endswith("_std") and k != "model"}
            data.update(extra)
            yield ScoreRow(data, name, n)

    def _challenge(self, fh: IO[str], name: str) -> Iterator[ScoreRow]:
        """`mmmos-score --format challenge` lines `wavID,PQ,PC,CE,CU` (the id stands in for the path)."""
        for n, line in enumerate(fh, 1):
            parts = [p.strip() for p in line.split(",")]
            if not line.strip():
                continue
            values = [_finite(p) for p in parts[1:]]
            if len(parts) != 5 or any(v is None for v in values):
                self._skip(f"{name}:{n}", "not a wavID,PQ,PC,CE,CU line")
                continue
            data: dict[str, Any] = {"path": parts[0], **dict(zip(AXES, values, strict=True)), "std": None,
                                    "duration_s": None, "windows": 0, "error": None}
            yield ScoreRow(data, name, n)


def row_fields(rows: list[ScoreRow]) -> set[str]:
    """The top-level field names present in any of `rows`."""
    names: set[str] = set()
    for r in rows:
        names.update(r.data)
    return names


def display_name(path: str) -> str:
    """A short name for a path: its file name (the full path goes in a tooltip)."""
    return os.path.basename(path.rstrip("/\\")) or path
