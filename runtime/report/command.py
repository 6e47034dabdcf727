"""What `mmmos-report` does once its command line is parsed: `ReportCommand` (the parsed value) and `run`.

Rows stream from the inputs through the filter (accepted / rejected lists are written as they go) and, for
a report, are kept to draw the page. Every output is written to a temporary file beside it and renamed at
the end, so a failed run leaves no half-written file. Results go to files (or stdout), progress and
warnings to stderr. Exit codes: 0 done, 1 done but some input lines were not rows (skipped, with a
warning), 2 usage or input error, 130 interrupted.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path
from typing import IO, Literal

from ..errors import MMMOSRuntimeError, OutputError
from .audio_links import DEFAULT_EMBED_LIMIT_MB, AudioSources
from .filter_expr import Filter, FilterSyntaxError
from .grouping import Grouper, parse_group_by
from .html_page import PageInput, render_page
from .rows import RowReader, ScoreRow, expand_inputs, row_fields

EXIT_OK, EXIT_SKIPPED_LINES, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
ListFormat = Literal["auto", "paths", "jsonl"]
"""How --accepted / --rejected are written: one path per line, or the rows as JSONL (auto: by the extension)."""
FIELD_CHECK_ROWS = 1000
"""Rows read before a curation-only run checks that the filter's fields exist (a report reads them all)."""


@dataclass(frozen=True)
class ReportCommand:
    """One parsed `mmmos-report` invocation (see `cli.py` for the options' meaning)."""

    inputs: list[str]
    output: str | None = None
    force: bool = False
    grouper: Grouper = field(default_factory=lambda: parse_group_by("auto"))
    top: int = 5
    timelines: int = 20
    bins: int = 20
    embed_audio: bool = False
    embed_limit_mb: float = DEFAULT_EMBED_LIMIT_MB
    audio_root: str | None = None
    title: str | None = None
    filter: Filter | None = None
    accepted: str | None = None
    rejected: str | None = None
    list_format: ListFormat = "auto"
    quiet: bool = False
    command: str = "mmmos-report"


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def check_target(path: str, force: bool) -> None:
    """Refuse to overwrite a non-empty file without --force, or to write onto a folder.

    Raises:
        OutputError: the file exists and `force` is False, or the path is a folder.
    """
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{path} is a folder; give a file name.")
    if p.exists() and p.stat().st_size > 0 and not force:
        raise OutputError(f"{path} exists; pass --force to overwrite it.")


class _AtomicFile:
    """A text file written under a temporary name beside its target and renamed on `commit`."""

    def __init__(self, target: str) -> None:
        self.target = Path(target)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=".tmp", dir=self.target.parent)
        os.chmod(self.tmp, 0o666 & ~_umask())  # mkstemp makes it private; the result is an ordinary file
        self.fh: IO[str] = os.fdopen(fd, "w", encoding="utf-8", newline="\n")

    def commit(self) -> None:
        self.fh.close()
        os.replace(self.tmp, self.target)

    def discard(self) -> None:
        self.fh.close()
        Path(self.tmp).unlink(missing_ok=True)


def check_filter_fields(flt: Filter, rows: list[ScoreRow]) -> None:
    """Every field the filter names must exist in some row (a typo would silently reject everything).

    Raises:
        FilterSyntaxError: a field no row has, with the closest names.
    """
    present = row_fields(rows)
    for f in flt.fields():
        root = f.path if f.path in present else f.path.split(".")[0]
        if root in present:
            continue
        close = difflib.get_close_matches(root, sorted(present), n=3, cutoff=0.5)
        close += [n for n in present if n.lower() == root.lower() and n not in close]
        hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else \
            f"the rows have: {', '.join(sorted(present))}"
        raise FilterSyntaxError(f"no row has a field {root!r} ({hint})", f.pos, flt.text)


def _list_line(row: ScoreRow, fmt: ListFormat, target: str | None) -> str:
    as_jsonl = fmt == "jsonl" or (fmt == "auto" and target is not None and target.lower().endswith(".jsonl"))
    return (json.dumps(row.data, ensure_ascii=False) if as_jsonl else row.path) + "\n"


@dataclass
class _Curation:
    """Sorts rows into accepted / rejected and writes the lists: to files, to stdout for "-", and the accepted
    paths to stdout when neither list nor a report is asked for."""

    flt: Filter
    cmd: ReportCommand
    stdout: IO[str]
    files: list[_AtomicFile] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"accepted": 0, "rejected": 0, "failed": 0})

    def __post_init__(self) -> None:
        accepted = self.cmd.accepted or ("-" if not self.cmd.rejected and self.cmd.output is None else None)
        self.acc, self.rej = self._open(accepted), self._open(self.cmd.rejected)
        self.names = {"acc": accepted, "rej": self.cmd.rejected}
        self.to_stdout = "-" in (accepted, self.cmd.rejected)

    def _open(self, target: str | None) -> IO[str] | None:
        if target is None:
            return None
        if target == "-":
            return self.stdout
        f = _AtomicFile(target)
        self.files.append(f)
        return f.fh

    def add(self, row: ScoreRow) -> bool:
        """File one row; True when accepted (error rows are always rejected)."""
        ok = row.ok and self.flt.matches(row.data)
        self.counts["accepted" if ok else "rejected"] += 1
        self.counts["failed"] += not row.ok
        out, name = (self.acc, self.names["acc"]) if ok else (self.rej, self.names["rej"])
        if out is not None:
            out.write(_list_line(row, self.cmd.list_format, name))
        return ok


def _rows(cmd: ReportCommand, reader: RowReader) -> tuple[list[ScoreRow], Iterator[ScoreRow]]:
    """The first rows (all of them for a report) and an iterator over the rest."""
    it = iter(reader)
    head = list(it) if cmd.output else list(islice(it, FIELD_CHECK_ROWS))
    return head, it


def run(cmd: ReportCommand, stdin: IO[str] | None = None, stdout: IO[str] | None = None) -> int:
    """Read the rows, write the curation lists and the report; returns the exit code."""
    out = stdout if stdout is not None else sys.stdout
    pending: list[_AtomicFile] = []
    try:
        files = expand_inputs(cmd.inputs)
        for target in (cmd.output, cmd.accepted, cmd.rejected):
            if target and target != "-":
                check_target(target, cmd.force)
        reader = RowReader(files, warn=_err, stdin=stdin)
        head, rest = _rows(cmd, reader)
        if not head:
            raise MMMOSRuntimeError(f"no score rows in {', '.join(cmd.inputs)}; give mmmos-score's JSONL output.")
        if cmd.filter is not None:
            check_filter_fields(cmd.filter, head)
        curation = _Curation(cmd.filter, cmd, out) if cmd.filter is not None else None
        pending = curation.files if curation is not None else []
        rows: list[ScoreRow] = []
        accepted: list[bool] = []
        counts = {"rows": 0, "failed": 0}
        for row in chain(head, rest):
            ok = curation.add(row) if curation is not None else True
            counts["rows"] += 1
            counts["failed"] += not row.ok
            if cmd.output:
                rows.append(row)
                accepted.append(ok)
        page_bytes = _write_report(cmd, rows, accepted if curation is not None else None) if cmd.output else 0
        for f in pending:
            f.commit()
        pending = []
    except MMMOSRuntimeError as exc:
        _err(f"mmmos-report: error: {exc}")
        return EXIT_USAGE
    except OSError as exc:
        _err(f"mmmos-report: error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("mmmos-report: interrupted; nothing was written.")
        return EXIT_INTERRUPTED
    finally:
        for f in pending:
            f.discard()
    if not cmd.quiet:
        _summary(cmd, counts, reader.skipped, curation, page_bytes)
    return EXIT_SKIPPED_LINES if reader.skipped else EXIT_OK


def _write_report(cmd: ReportCommand, rows: list[ScoreRow], accepted: list[bool] | None) -> int:
    """Render and write the page; returns its size in bytes."""
    assert cmd.output is not None
    from mmmos import __version__

    target = Path(cmd.output)
    field_name = cmd.grouper.field
    if field_name and not cmd.quiet and field_name.split(".")[0] not in row_fields(rows):
        _err(f"mmmos-report: warning: --group-by {field_name}: no row has that field, so every row is in one group "
             "(give a field the rows have, or re:REGEX for a regex over the path).")
    audio = AudioSources(out_dir=target.resolve().parent, embed=cmd.embed_audio,
                         limit_bytes=int(cmd.embed_limit_mb * 1e6),
                         audio_root=Path(cmd.audio_root).resolve() if cmd.audio_root else None)
    title = cmd.title or f"mmmos report: {', '.join(Path(i).name or i for i in cmd.inputs)}"
    page = render_page(PageInput(rows=rows, grouper=cmd.grouper, audio=audio, title=title, top=cmd.top,
                                 timelines=cmd.timelines, bins=cmd.bins, accepted=accepted,
                                 filter_text=cmd.filter.text if cmd.filter is not None else None,
                                 command=cmd.command, version=__version__))
    f = _AtomicFile(cmd.output)
    try:
        f.fh.write(page)
        f.commit()
    except BaseException:
        f.discard()
        raise
    if audio.over_limit and not cmd.quiet:
        _err(f"mmmos-report: warning: --embed-audio: {audio.over_limit} clips ({audio.over_limit_bytes / 1e6:.1f} MB) "
             f"would pass the {cmd.embed_limit_mb:g} MB limit, so they are links instead; raise --embed-limit-mb "
             "or list fewer clips (--top, --timelines).")
    if audio.missing and not cmd.quiet:
        example = sorted(audio.missing)[0]
        _err(f"mmmos-report: warning: {len(audio.missing)} listed audio files were not found (e.g. {example}); "
             "the page links them anyway (--audio-root DIR says where relative paths are).")
    return len(page.encode("utf-8"))


def _summary(cmd: ReportCommand, counts: dict[str, int], skipped: int, curation: _Curation | None,
             page_bytes: int) -> None:
    """One line on stderr: rows read, the filter's outcome, where things went."""
    parts = [f"{counts['rows']} rows ({counts['failed']} failed input{'s' if counts['failed'] != 1 else ''})"]
    if curation is not None:
        c = curation.counts
        where = ", ".join("stdout" if x == "-" else x for x in curation.names.values() if x)
        parts.append(f"filter: {c['accepted']} accepted, {c['rejected']} rejected" + (f" -> {where}" if where else ""))
    if cmd.output:
        parts.append(f"report -> {cmd.output} ({_size(page_bytes)})")
    if skipped:
        parts.append(f"{skipped} input lines skipped (not rows)")
    _err("mmmos-report: " + "; ".join(parts) + ".")
