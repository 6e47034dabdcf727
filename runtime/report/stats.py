"""What the report shows, computed from the rows: histograms, per-axis and per-group statistics, top and
bottom clips, the models, the long files with timelines. Plain Python (no numpy needed for a few columns)."""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..bundle import AXES
from .rows import ScoreRow

SCALE = (0.0, 10.0)
"""The rating scale every axis is drawn on."""


@dataclass(frozen=True)
class Summary:
    """Statistics of one axis over some rows (all None when there are no values)."""

    n: int
    mean: float | None
    sd: float | None
    minimum: float | None
    median: float | None
    maximum: float | None


def summarize(values: list[float]) -> Summary:
    """n, mean, population sd, min, median, max of `values`."""
    if not values:
        return Summary(0, None, None, None, None, None)
    return Summary(len(values), statistics.fmean(values), statistics.pstdev(values), min(values),
                   statistics.median(values), max(values))


def histogram(values: Iterable[float], bins: int = 20, lo: float = SCALE[0], hi: float = SCALE[1]) -> list[int]:
    """Counts of `values` in `bins` equal bins over [lo, hi]; values outside go to the edge bins."""
    counts = [0] * bins
    width = (hi - lo) / bins
    for v in values:
        k = min(max(math.floor((v - lo) / width), 0), bins - 1)
        counts[k] += 1
    return counts


@dataclass(frozen=True)
class GroupStats:
    """One line of the per-group table."""

    name: str
    clips: int
    failed: int
    means: dict[str, float | None]
    sds: dict[str, float | None]
    audio_s: float


def group_table(rows: list[ScoreRow], group_of: Callable[[ScoreRow], str]) -> list[GroupStats]:
    """Per-group clip counts, failures, mean and sd per axis and audio seconds, groups in name order."""
    members: dict[str, list[ScoreRow]] = defaultdict(list)
    for r in rows:
        members[group_of(r)].append(r)
    out = []
    for name in sorted(members, key=natural_key):
        rs = members[name]
        scored = [s for r in rs if (s := r.scores) is not None]
        sums = {a: summarize([s[a] for s in scored]) for a in AXES}
        audio = sum(float(r.data.get("duration_s") or 0.0) for r in rs)
        out.append(GroupStats(name, len(rs), len(rs) - len(scored), {a: sums[a].mean for a in AXES},
                              {a: sums[a].sd for a in AXES}, audio))
    return out


def natural_key(text: str) -> list[object]:
    """Sort key that orders "sys2" before "sys10"."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def extremes(rows: list[ScoreRow], axis: str, n: int) -> tuple[list[ScoreRow], list[ScoreRow]]:
    """The `n` best and `n` worst scored rows on `axis` (ties by path, so the lists are deterministic)."""
    scored = [r for r in rows if r.scores is not None]
    ordered = sorted(scored, key=lambda r: (-r.scores[axis], r.path))  # type: ignore[index]
    worst = sorted(scored, key=lambda r: (r.scores[axis], r.path))  # type: ignore[index]
    return ordered[:n], worst[:n]


@dataclass(frozen=True)
class ModelCount:
    """A model the rows came from and how many rows name it (name None: rows that name no model)."""

    name: str | None
    sha256: str | None
    rows: int


def models(rows: Iterable[ScoreRow]) -> list[ModelCount]:
    """The distinct models of `rows`, most rows first."""
    counts: Counter[tuple[str | None, str | None]] = Counter()
    for r in rows:
        m = r.data.get("model")
        if isinstance(m, dict) and m.get("name"):
            counts[(str(m["name"]), str(m.get("sha256") or "") or None)] += 1
        else:
            counts[(None, None)] += 1
    return [ModelCount(k[0], k[1], c) for k, c in counts.most_common()]


def has_timeline(r: ScoreRow) -> bool:
    """True when the row carries per-window scores for at least two windows."""
    tl = r.data.get("timeline")
    return r.ok and isinstance(tl, list) and len(tl) >= 2 and all(isinstance(w, dict) for w in tl)


def long_files(rows: list[ScoreRow], limit: int) -> list[ScoreRow]:
    """Up to `limit` rows with timelines, longest first."""
    with_tl = [r for r in rows if has_timeline(r)]
    with_tl.sort(key=lambda r: (-float(r.data.get("duration_s") or len(r.data["timeline"]) * 10.0), r.path))
    return with_tl[:limit]


@dataclass
class Overview:
    """Counts for the report's header."""

    rows: int = 0
    scored: int = 0
    failed: int = 0
    audio_s: float = 0.0
    ood_flagged: int = 0
    with_ood: int = 0
    sources: list[str] = field(default_factory=list)


def overview(rows: list[ScoreRow]) -> Overview:
    """Rows, scored, failed, audio seconds, out-of-domain flags, input files."""
    o = Overview(rows=len(rows))
    for r in rows:
        o.scored += r.ok
        o.audio_s += float(r.data.get("duration_s") or 0.0)
        ood = r.data.get("ood")
        if isinstance(ood, dict):
            o.with_ood += 1
            o.ood_flagged += bool(ood.get("flag"))
        if r.source not in o.sources:
            o.sources.append(r.source)
    o.failed = o.rows - o.scored
    return o
