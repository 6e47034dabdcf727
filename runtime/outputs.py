"""Result writers (`table`, `jsonl`, `csv`, `challenge`), safe `--output` opening and `--resume` keys."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Literal, get_args

from .bundle import AXES, ModelId
from .errors import InputError, OutputError
from .inputs import InputItem, row_key
from .results import ScoreResult

Format = Literal["table", "jsonl", "csv", "challenge"]
"""Output formats: a table for people, JSONL rows, CSV, the AudioMOS challenge's `wavID,PQ,PC,CE,CU` lines."""
FORMATS: tuple[Format, ...] = get_args(Format)
CSV_COLUMNS = ["path", "start_time", "end_time", *AXES, *(f"{a}_std" for a in AXES), "duration_s", "windows",
               "error", "model"]


def _fmt(v: Any) -> str:
    return "" if v is None else str(v)


class Writer:
    """Writes one result per `write` call and flushes, so an interrupted run keeps every finished row.

    Args:
        stream: where rows go.
        header: write the format's header first (not when appending).
        timeline: add each file's per-window scores (JSONL only).
    """

    def __init__(self, stream: IO[str], header: bool = True, timeline: bool = False) -> None:
        self.stream = stream
        self.header = header
        self.timeline = timeline

    def write(self, r: ScoreResult) -> None:
        """Write one result."""
        raise NotImplementedError

    def _out(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


class JsonlWriter(Writer):
    """One JSON object per line (the row of `ScoreResult.to_row`)."""

    def write(self, r: ScoreResult) -> None:
        """Write one JSON line."""
        self._out(json.dumps(r.to_row(timeline=self.timeline), ensure_ascii=False) + "\n")


class CsvWriter(Writer):
    """CSV with a header: path, start_time, end_time, PQ..CU, PQ_std..CU_std, duration_s, windows, error."""

    def write(self, r: ScoreResult) -> None:
        """Write one CSV row (and the header first, unless appending)."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        if self.header:
            w.writerow(CSV_COLUMNS)
            self.header = False
        row = r.to_row()
        std = row["std"] or {}
        w.writerow([_fmt(row["path"]), _fmt(row.get("start_time")), _fmt(row.get("end_time")),
                    *(_fmt(row[a]) for a in AXES), *(_fmt(std.get(a)) for a in AXES),
                    _fmt(row["duration_s"]), row["windows"], _fmt(row["error"]), _fmt(r.model)])
        self._out(buf.getvalue())


class ChallengeWriter(Writer):
    """AudioMOS 2025 track 2 answer lines `wavID,PQ,PC,CE,CU` (wavID = file stem), no header.

    The format has no error column, so a failed input's line goes to `on_error` (stderr) instead.
    """

    def __init__(self, stream: IO[str], header: bool = True, on_error: Callable[[str], None] | None = None) -> None:
        super().__init__(stream, header)
        self.on_error = on_error or (lambda _m: None)

    def write(self, r: ScoreResult) -> None:
        """Write one answer line, or report the error."""
        if r.scores is None:
            self.on_error(f"{r.path}: {r.error}")
            return
        wav_id = Path(r.path).stem if r.path else "array"
        self._out(",".join([wav_id, *(f"{r.scores[a]:.6f}" for a in AXES)]) + "\n")


class TableWriter(Writer):
    """A human-readable table, streamed one row at a time (columns fixed so no buffering is needed)."""

    def write(self, r: ScoreResult) -> None:
        """Write one table line (and the header first)."""
        if self.header:
            if r.model is not None:
                self._out(f"model {r.model}\n")
            self._out(" ".join(f"{a:>6}" for a in AXES) + f" {'±std':>6} {'dur_s':>8} {'win':>4}  path\n")
            self.header = False
        name = r.path if r.path is not None else "<array>"
        if r.start_time is not None or r.end_time is not None:
            name += f" [{_fmt(r.start_time) or '0'}-{_fmt(r.end_time) or 'end'}]"
        if r.scores is None or r.std is None:
            self._out(" ".join(f"{'-':>6}" for _ in AXES) + f" {'-':>6} {'-':>8} {0:>4}  {name}  error: {r.error}\n")
            return
        spread = max(r.std.values())
        self._out(" ".join(f"{r.scores[a]:6.2f}" for a in AXES)
                  + f" {spread:6.2f} {r.duration_s or 0:8.2f} {r.windows:>4}  {name}\n")


def make_writer(fmt: str, stream: IO[str], header: bool = True,
                on_error: Callable[[str], None] | None = None, timeline: bool = False) -> Writer:
    """The writer for a format name (`timeline` adds per-window scores to JSONL rows).

    Raises:
        ValueError: unknown format, or a timeline asked of a format other than JSONL.
    """
    if timeline and fmt != "jsonl":
        raise ValueError(f"--timeline needs --format jsonl (the {fmt} format has no place for it).")
    if fmt == "jsonl":
        return JsonlWriter(stream, header, timeline)
    if fmt == "csv":
        return CsvWriter(stream, header)
    if fmt == "challenge":
        return ChallengeWriter(stream, header, on_error)
    if fmt == "table":
        return TableWriter(stream, header)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}.")


def format_for(path: str | None, stdout_is_tty: bool) -> Format:
    """Default format: from the output file's extension, else table on a terminal, jsonl otherwise."""
    if path:
        by_ext: dict[str, Format] = {".csv": "csv", ".txt": "challenge", ".jsonl": "jsonl", ".json": "jsonl"}
        return by_ext.get(Path(path).suffix.lower(), "jsonl")
    return "table" if stdout_is_tty else "jsonl"


def item_key(item: InputItem | ScoreResult, fmt: str) -> Any:
    """What --resume compares: (path, start, end), or the file stem for `challenge` (its only key)."""
    if fmt == "challenge":
        return Path(item.path).stem if item.path else None
    return row_key(item.path, item.start_time, item.end_time)


def _drop_partial_last_line(path: Path) -> None:
    """An interrupted run can leave a half-written last line; cut it so appended rows stay parseable."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(path, "r+b") as fh:
            fh.truncate(cut)


def _row_model(row: dict[str, Any], fmt: str) -> str | None:
    """The `name@sha` of the model a written row names (None when the row names none)."""
    if fmt == "csv":
        return row.get("model") or None
    model = row.get("model")
    return f"{model.get('name')}@{model.get('sha256')}" if isinstance(model, dict) else None


def _check_model(path: Path, where: str, found: str | None, model: ModelId | None) -> None:
    """Refuse to append rows of `model` to a file holding rows of another (or of an unnamed) model."""
    if model is None or found == str(model):
        return
    what = f"rows of model {found}" if found else "rows that name no model (an older mmmos wrote them)"
    raise OutputError(f"{path} holds {what} ({where}), but this run scores with {model}; --resume would mix "
                      "models in one file: write to another file, or pass --force to start it over.")


def done_keys(path: Path, fmt: str, model: ModelId | None = None) -> set[Any]:
    """Keys of the rows already in an output file (error rows count as done).

    Args:
        path: the output file.
        fmt: its format.
        model: when given, every row must name this model (a file of another model's rows is refused).

    Raises:
        InputError: the file is not in the given format.
        OutputError: a row names another model.
    """
    if not path.is_file():
        return set()
    _drop_partial_last_line(path)
    keys: set[Any] = set()
    with open(path, encoding="utf-8", newline="") as fh:
        if fmt == "jsonl":
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    keys.add(row_key(row.get("path"), row.get("start_time"), row.get("end_time")))
                except (ValueError, AttributeError):
                    raise InputError(f"{path}:{n} is not a JSONL row; --resume needs a file this tool wrote "
                                     "in the same --format.") from None
                _check_model(path, f"line {n}", _row_model(row, fmt), model)
        elif fmt == "csv":
            reader = csv.DictReader(fh)
            if reader.fieldnames and "path" not in reader.fieldnames:
                raise InputError(f"{path} has no 'path' column; --resume needs a file this tool wrote as csv.")
            for n, row in enumerate(reader, 2):
                keys.add(row_key(row.get("path"), row.get("start_time"), row.get("end_time")))
                _check_model(path, f"line {n}", _row_model(row, fmt), model)
        elif fmt == "challenge":
            for line in fh:
                if line.strip():
                    keys.add(line.split(",", 1)[0].strip())
        else:
            raise InputError(f"--resume does not work with --format {fmt}; use jsonl, csv or challenge.")
    return keys


def check_output(path: str, *, force: bool, resume: bool) -> bool:
    """Check that --output may be written; return whether it already holds rows.

    Raises:
        OutputError: the file exists (non-empty) and neither --force nor --resume was given, or is a folder.
    """
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"--output {path} is a directory; give a file name.")
    exists = p.exists() and p.stat().st_size > 0
    if exists and not (force or resume):
        raise OutputError(f"{path} exists; pass --force to overwrite it or --resume to add only missing inputs.")
    return exists


def open_output(path: str, *, force: bool, resume: bool) -> tuple[IO[str], bool]:
    """Open --output safely (see `check_output`).

    Returns:
        (stream, needs_header): header only when the file is new or overwritten.
    """
    p = Path(path)
    exists = check_output(path, force=force, resume=resume)
    if p.parent and not p.parent.exists():
        os.makedirs(p.parent, exist_ok=True)
    mode = "a" if (resume and exists) else "w"
    return open(p, mode, encoding="utf-8", newline=""), not (resume and exists)
