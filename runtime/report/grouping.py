"""`--group-by`: which group (system, speaker, folder...) a score row belongs to.

A spec is one of:

- ``auto`` (the default), per row, the first that applies:
  1. a ``system_id``, ``system`` or ``sys`` field of the row (however it got there: a pipeline's own field);
  2. an AudioMOS 2025 Track 2 system id in the file name or the row's ``sample_id``/``wavID``: the challenge's
     clips are named ``audiomos2025-track2-<system>-<utterance>`` with ``<system>`` = ``sys`` + 5 letters or
     digits (e.g. ``audiomos2025-track2-sys0v1wm-utt0dJodp`` -> ``sys0v1wm``; 36 systems x 85 clips in the
     test set), the regex being ``CHALLENGE_SYSTEM_RE``; it also catches any ``sysXXXX-uttYYYY`` (or ``_``) name;
  3. the name of the file's parent folder (one folder per system, as in PAM's ``audio/<system>/...``).
- ``parent``: the parent folder's name; ``none``: one group for every row.
- a field name, dotted for nested ones: ``system_id``, ``model.name``, ``ood.flag``.
- a regex over the row's path (``/``-separated), written ``re:PATTERN``, or bare when it is not a plain
  field name: ``re:^([^_/]+)_`` or ``'([^/_]+)_[^/]*$'`` (the first ``_``-separated token of the file name).
  The group is the named group ``group`` if the regex has one, else its first group, else the whole match.

Rows that get no group (no match, no such field) are in ``NO_GROUP``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from ..errors import InputError
from .filter_expr import lookup

CHALLENGE_SYSTEM_RE = re.compile(r"(?<![0-9A-Za-z])(sys[0-9A-Za-z]+)[-_]utt[0-9A-Za-z]+")
"""The system part of an AudioMOS 2025 Track 2 clip id (``audiomos2025-track2-sys0v1wm-utt0dJodp``)."""
SYSTEM_FIELDS = ("system_id", "system", "sys")
"""Row fields that name a system directly (the same names `mmmos-train` reads from manifests)."""
ID_FIELDS = ("sample_id", "wavID", "wav_id", "id")
"""Row fields that may hold a challenge clip id when the path does not."""
NO_GROUP = "(no group)"
"""The group of rows that match no rule."""
KEYWORDS = ("auto", "parent", "none")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*")


def _path(row: dict[str, Any]) -> str:
    return str(row.get("path") or "").replace("\\", "/")


def parent_name(row: dict[str, Any]) -> str | None:
    """The name of the folder holding the row's file (None for a bare file name)."""
    parent = PurePosixPath(_path(row)).parent.name
    return parent or None


def challenge_system(row: dict[str, Any]) -> str | None:
    """The AudioMOS 2025 Track 2 system id in the row's file name or id field, else None."""
    for text in (PurePosixPath(_path(row)).name, *(str(row.get(k) or "") for k in ID_FIELDS)):
        if m := CHALLENGE_SYSTEM_RE.search(text):
            return m.group(1)
    return None


def _auto(row: dict[str, Any]) -> str | None:
    for k in SYSTEM_FIELDS:
        v = row.get(k)
        if v not in (None, ""):
            return str(v)
    return challenge_system(row) or parent_name(row)


def _regex_group(pattern: re.Pattern[str]) -> Callable[[dict[str, Any]], str | None]:
    def group(row: dict[str, Any]) -> str | None:
        m = pattern.search(_path(row))
        if m is None:
            return None
        if "group" in pattern.groupindex:
            return m.group("group")
        return m.group(1) if pattern.groups else m.group(0)

    return group


def _field_group(path: str) -> Callable[[dict[str, Any]], str | None]:
    def group(row: dict[str, Any]) -> str | None:
        v = lookup(row, path)
        return None if v in (None, "") else str(v)

    return group


@dataclass(frozen=True)
class Grouper:
    """A parsed `--group-by` spec.

    Attributes:
        spec: as written.
        kind: "auto", "parent", "none", "field" or "regex".
        describe: one line for the report ("regex '...' over the path").
        key: row -> group name (None when the row has none).
        field: the field name for kind "field".
    """

    spec: str
    kind: str
    describe: str
    key: Callable[[dict[str, Any]], str | None]
    field: str | None = None

    def group_of(self, row: dict[str, Any]) -> str:
        """The row's group name, `NO_GROUP` when it has none."""
        g = self.key(row)
        return NO_GROUP if g in (None, "") else str(g)


def parse_group_by(spec: str) -> Grouper:
    """Parse a `--group-by` spec (see the module docstring).

    Raises:
        InputError: an empty spec or a regex that does not compile.
    """
    text = spec.strip()
    if not text:
        raise InputError("--group-by is empty; give auto, parent, none, a field name or re:REGEX.")
    low = text.lower()
    if low == "auto":
        return Grouper(spec, "auto", "auto: system field, else AudioMOS 2025 Track 2 system id "
                       "(audiomos2025-track2-<sys>-<utt>), else parent folder", _auto)
    if low == "parent":
        return Grouper(spec, "parent", "parent folder", parent_name)
    if low == "none":
        return Grouper(spec, "none", "none (one group)", lambda _row: "all")
    if not low.startswith("re:") and _FIELD_NAME.fullmatch(text):
        return Grouper(spec, "field", f"field {text}", _field_group(text), field=text)
    pattern_text = text[3:] if low.startswith("re:") else text
    try:
        pattern = re.compile(pattern_text)
    except re.error as exc:
        raise InputError(f"--group-by {spec!r}: bad regex ({exc}); write re:PATTERN, e.g. re:'^([^_/]+)_'.") from None
    return Grouper(spec, "regex", f"regex {pattern_text!r} over the path", _regex_group(pattern))
