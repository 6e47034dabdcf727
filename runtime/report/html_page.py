"""The report page: one self-contained HTML file (inline CSS, SVG and a small script; nothing fetched).

Sections: overview (counts, the models the rows came from), per-axis histograms, the per-group table,
top and bottom clips per axis with players, timelines of long files, the curation filter's outcome, and
the inputs that failed.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from html import escape

from ..bundle import AXES
from .assets import CSS, JS
from .audio_links import AudioSources
from .grouping import Grouper
from .rows import ScoreRow, display_name
from .stats import (
    extremes,
    group_table,
    histogram,
    long_files,
    models,
    overview,
    summarize,
)
from .svg import AXIS_NAMES, histogram_svg, legend, timeline_svg

MAX_GROUP_ROWS = 1000
MAX_FAILED_ROWS = 200


@dataclass
class PageInput:
    """Everything the page shows.

    Attributes:
        rows: the score rows.
        grouper: the `--group-by` rule.
        audio: makes the players (links or embedded audio).
        title: the page title.
        top: clips per top / bottom list.
        timelines: most long files to draw.
        bins: histogram bins over 0-10.
        filter_text: the `--filter` expression, when one was given.
        accepted: per row, whether the filter accepted it (None without a filter).
        command: the command line, for the footer.
        version: the mmmos version.
    """

    rows: list[ScoreRow]
    grouper: Grouper
    audio: AudioSources
    title: str = "mmmos report"
    top: int = 5
    timelines: int = 20
    bins: int = 20
    filter_text: str | None = None
    accepted: list[bool] | None = None
    command: str = ""
    version: str = ""
    groups: dict[int, str] = field(default_factory=dict)

    def group(self, row: ScoreRow) -> str:
        """The row's group (computed once)."""
        k = id(row)
        if k not in self.groups:
            self.groups[k] = self.grouper.group_of(row.data)
        return self.groups[k]


def _num(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def _segment(row: ScoreRow) -> str:
    s, e = row.data.get("start_time"), row.data.get("end_time")
    if s is None and e is None:
        return ""
    return f" [{s if s is not None else 0}–{e if e is not None else 'end'} s]"


def _overview(p: PageInput) -> str:
    o = overview(p.rows)
    cards = [("clips", str(o.rows)), ("scored", str(o.scored)), ("failed", str(o.failed)),
             ("audio", _duration(o.audio_s)), ("groups", str(len({p.group(r) for r in p.rows})))]
    if o.with_ood:
        cards.append(("out-of-domain", f"{o.ood_flagged} of {o.with_ood}"))
    out = ['<section id="overview"><div class="cards">']
    out += [f'<div class="card"><span class="muted">{k}</span><b>{escape(v)}</b></div>' for k, v in cards]
    out.append("</div>")
    ms = models(p.rows)
    items = []
    for m in ms:
        name = escape(m.name) if m.name else "<em>not recorded in the rows</em>"
        sha = f' <code title="sha256 (first 12 hex digits)">{escape(m.sha256)}</code>' if m.sha256 else ""
        items.append(f'<li class="model"><span class="model-name">{name}</span>{sha} '
                     f'<span class="muted">({m.rows} row{"s" if m.rows != 1 else ""})</span></li>')
    label = "Model" if len(ms) == 1 else "Models"
    out.append(f'<div id="models"><h3>{label}</h3><ul>{"".join(items)}</ul></div>')
    named = [m for m in ms if m.name]
    if len(named) > 1:
        out.append(f'<div class="banner">These rows come from {len(named)} different models: their scores are not '
                   "comparable with each other (group by <code>model.name</code> to compare them).</div>")
    out.append(f'<p class="muted">Groups: {escape(p.grouper.describe)} (<code>--group-by '
               f"{escape(p.grouper.spec)}</code>). Inputs: {escape(', '.join(o.sources))}.</p></section>")
    return "".join(out)


def _histograms(p: PageInput) -> str:
    scored = [(r, s) for r, s in ((r, r.scores) for r in p.rows) if s is not None]
    acc = None if p.accepted is None else {id(r) for r, ok in zip(p.rows, p.accepted, strict=True) if ok}
    figs, lines = [], []
    for a in AXES:
        values = [s[a] for _, s in scored]
        summ = summarize(values)
        accepted = None if acc is None else histogram([s[a] for r, s in scored if id(r) in acc], p.bins)
        figs.append(f'<figure><figcaption>{a} <span class="muted">{AXIS_NAMES[a]}</span></figcaption>'
                    f"{histogram_svg(a, histogram(values, p.bins), summ, accepted)}</figure>")
        lines.append(f'<tr><th>{a}</th><td class="num">{summ.n}</td><td class="num">{_num(summ.mean)}</td>'
                     f'<td class="num">{_num(summ.sd)}</td><td class="num">{_num(summ.minimum)}</td>'
                     f'<td class="num">{_num(summ.median)}</td><td class="num">{_num(summ.maximum)}</td></tr>')
    note = ""
    if acc is not None:
        note = '<p class="note">Dark bars: clips the filter accepts; light bars: all scored clips.</p>'
    head = ('<tr><th>axis</th><th class="num">clips</th><th class="num">mean</th><th class="num">sd</th>'
            '<th class="num">min</th><th class="num">median</th><th class="num">max</th></tr>')
    return (f'<section id="histograms"><h2>Score distributions</h2>{note}<div class="hists">{"".join(figs)}</div>'
            f'<table class="axis-stats"><thead>{head}</thead><tbody>{"".join(lines)}</tbody></table></section>')


def _groups(p: PageInput) -> str:
    table = group_table(p.rows, p.group)
    shown = table if len(table) <= MAX_GROUP_ROWS else sorted(table, key=lambda g: -g.clips)[:MAX_GROUP_ROWS]
    head = ('<tr><th data-sort="text">group</th><th class="num" data-sort="num">clips</th>'
            '<th class="num" data-sort="num">failed</th>'
            + "".join(f'<th class="num" data-sort="num" title="mean (sd in the tooltip)">{a}</th>' for a in AXES)
            + '<th class="num" data-sort="num">audio</th></tr>')
    body = []
    for g in shown:
        cells = "".join(f'<td class="num" data-value="{"" if g.means[a] is None else f"{g.means[a]:.6f}"}" '
                        f'title="sd {_num(g.sds[a])}">{_num(g.means[a])}</td>' for a in AXES)
        body.append(f'<tr class="group-row"><td>{escape(g.name)}</td><td class="num" data-value="{g.clips}">'
                    f'{g.clips}</td><td class="num" data-value="{g.failed}">{g.failed}</td>{cells}'
                    f'<td class="num" data-value="{g.audio_s:.3f}">{_duration(g.audio_s)}</td></tr>')
    note = (f'<p class="note">{len(table)} groups; the {MAX_GROUP_ROWS} largest are listed.</p>'
            if len(shown) < len(table) else "")
    return (f'<section id="groups"><h2>Groups</h2><p class="note">Mean per axis over each group\'s scored clips '
            f"(click a header to sort).</p>{note}<table class=\"sortable groups\"><thead>{head}</thead>"
            f"<tbody>{''.join(body)}</tbody></table></section>")


def _clip_item(p: PageInput, row: ScoreRow, axis: str) -> str:
    s = row.scores or {}
    interval = row.data.get("interval")
    band = ""
    if isinstance(interval, dict) and isinstance(interval.get(axis), list) and len(interval[axis]) == 2:
        lo, hi = interval[axis]
        band = f' <span class="muted" title="calibrated interval">[{_num(lo)}–{_num(hi)}]</span>'
    badges = f'<span class="badge group">{escape(p.group(row))}</span>'
    ood = row.data.get("ood")
    if isinstance(ood, dict) and ood.get("flag"):
        badges += f'<span class="badge ood" title="out-of-domain score">OOD {_num(ood.get("score"))}</span>'
    others = " · ".join(f"{a} {s[a]:.2f}" for a in AXES if a != axis)
    dur = row.data.get("duration_s")
    dur_text = f" · {dur:.1f} s" if isinstance(dur, int | float) else ""
    return (f'<li class="clip" data-axis="{axis}"><div class="clip-head"><span class="score">{s[axis]:.2f}</span>'
            f'{band}<span class="path" title="{escape(row.path)}">{escape(display_name(row.path) + _segment(row))}'
            f'</span>{badges}<span class="muted">{others}{dur_text}</span></div>{p.audio.tag(row)}</li>')


def _extremes(p: PageInput) -> str:
    if not any(r.ok for r in p.rows):
        return '<section id="extremes"><h2>Top and bottom clips</h2><p>No scored clips.</p></section>'
    blocks = []
    for a in AXES:
        best, worst = extremes(p.rows, a, p.top)
        for kind, rows in (("top", best), ("bottom", worst)):
            items = "".join(_clip_item(p, r, a) for r in rows)
            blocks.append(f'<div class="extreme" data-axis="{a}" data-kind="{kind}"><h3>{a}: {kind} {len(rows)}'
                          f'</h3><ol class="clips {kind}">{items}</ol></div>')
    return (f'<section id="extremes"><h2>Top and bottom clips per axis</h2><div class="extremes">{"".join(blocks)}'
            "</div></section>")


def _timelines(p: PageInput) -> str:
    rows = long_files(p.rows, p.timelines)
    if not rows:
        return ""
    blocks = []
    for r in rows:
        worst = r.data.get("worst") if isinstance(r.data.get("worst"), dict) else None
        dur = r.data.get("duration_s")
        svg = timeline_svg(r.data["timeline"], dur if isinstance(dur, int | float) else None, worst)
        blocks.append(f'<div class="timeline-block"><div class="clip-head"><span class="path" '
                      f'title="{escape(r.path)}">{escape(display_name(r.path))}</span><span class="badge group">'
                      f'{escape(p.group(r))}</span><span class="muted">{len(r.data["timeline"])} windows · '
                      f"{_duration(float(dur or 0))}</span></div>{svg}{p.audio.tag(r)}</div>")
    total = sum(1 for r in p.rows if r.data.get("timeline"))
    more = f" ({len(rows)} of {total} with timelines, longest first)" if total > len(rows) else ""
    return (f'<section id="timelines"><h2>Timelines of long files{more}</h2>{legend()}<p class="note">Scores '
            "per 10 s window; dashed lines mark each axis's worst window; a click on a window plays from there."
            f'</p>{"".join(blocks)}</section>')


def _curation(p: PageInput) -> str:
    if p.filter_text is None or p.accepted is None:
        return ""
    n_acc = sum(p.accepted)
    failed = sum(1 for r in p.rows if not r.ok)
    by_filter = len(p.rows) - n_acc - failed
    return (f'<section id="curation"><h2>Curation filter</h2><p><code>{escape(p.filter_text)}</code></p>'
            f'<div class="cards"><div class="card"><span class="muted">accepted</span><b>{n_acc}</b></div>'
            f'<div class="card"><span class="muted">rejected by the filter</span><b>{by_filter}</b></div>'
            f'<div class="card"><span class="muted">rejected: failed inputs</span><b>{failed}</b></div></div>'
            "</section>")


def _failed(p: PageInput) -> str:
    bad = [r for r in p.rows if not r.ok]
    if not bad:
        return ""
    body = "".join(f'<tr><td class="path">{escape(r.path + _segment(r))}</td><td>{escape(r.error)}</td></tr>'
                   for r in bad[:MAX_FAILED_ROWS])
    more = f'<p class="note">{len(bad) - MAX_FAILED_ROWS} more not listed.</p>' if len(bad) > MAX_FAILED_ROWS else ""
    return (f'<section id="failed"><h2>Failed inputs ({len(bad)})</h2><table class="failed"><thead><tr>'
            f"<th>path</th><th>error</th></tr></thead><tbody>{body}</tbody></table>{more}</section>")


def render_page(p: PageInput) -> str:
    """The whole HTML page as one string."""
    made = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = [_overview(p), _curation(p), _histograms(p), _groups(p), _extremes(p), _timelines(p), _failed(p)]
    missing = ""
    if p.audio.missing:
        missing = (f'<div class="banner">{len(p.audio.missing)} listed audio files were not found on this machine '
                   "when the page was made; their players stay silent (use --audio-root DIR to say where they "
                   "are).</div>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(p.title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{escape(p.title)}</h1></header>{sections[0]}{missing}{''.join(sections[1:])}"
            f"<footer>Made by mmmos-report {escape(p.version)} on {made}: <code>{escape(p.command)}</code>"
            f"</footer><script>{JS}</script></body></html>\n")
