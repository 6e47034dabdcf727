"""Inline SVG charts, drawn here on the server side so the page needs no script, font or network to show them:
per-axis score histograms and per-window timelines of long files."""

from __future__ import annotations

from html import escape

from ..bundle import AXES
from .stats import SCALE, Summary

AXIS_COLORS = {"PQ": "#4c78a8", "PC": "#f58518", "CE": "#54a24b", "CU": "#e45756"}
"""One color per axis, used by every chart and legend."""
AXIS_NAMES = {"PQ": "production quality", "PC": "production complexity", "CE": "content enjoyment",
              "CU": "content usefulness"}


def _f(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))


def histogram_svg(axis: str, counts: list[int], summary: Summary, accepted: list[int] | None = None) -> str:
    """A histogram of one axis on the 0-10 scale: one `rect.bar` per non-empty bin (with a tooltip), the
    mean as a dashed line, and, when a filter is given, the accepted rows' bins drawn over the others."""
    w, h, left, right, top, bottom = 360, 200, 36, 8, 10, 30
    pw, ph = w - left - right, h - top - bottom
    lo, hi = SCALE
    peak = max(counts, default=0) or 1
    bw = pw / max(len(counts), 1)
    color = AXIS_COLORS.get(axis, "#4c78a8")
    parts = [f'<svg class="hist" data-axis="{escape(axis)}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
             f'role="img" aria-label="{escape(axis)} histogram">',
             f"<title>{escape(axis)} ({AXIS_NAMES.get(axis, axis)}): {summary.n} clips</title>",
             f'<line class="axis" x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}"/>',
             f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}"/>']
    for layer, cls, opacity in ((counts, "bar", 0.35 if accepted is not None else 0.9),
                                (accepted, "bar bar-accepted", 0.95)):
        if layer is None:
            continue
        for k, c in enumerate(layer):
            if c == 0:
                continue
            bh = ph * c / peak
            b_lo = lo + (hi - lo) * k / len(layer)
            b_hi = lo + (hi - lo) * (k + 1) / len(layer)
            what = "accepted clips" if "accepted" in cls else "clips"
            parts.append(f'<rect class="{cls}" x="{left + k * bw + 0.5:.1f}" y="{top + ph - bh:.1f}" '
                         f'width="{max(bw - 1, 0.5):.1f}" height="{bh:.1f}" fill="{color}" fill-opacity="{opacity}">'
                         f"<title>{_f(b_lo)}-{_f(b_hi)}: {c} {what}</title></rect>")
    for t in range(int(lo), int(hi) + 1, 2):
        x = left + pw * (t - lo) / (hi - lo)
        parts.append(f'<line class="tick" x1="{x:.1f}" y1="{top + ph}" x2="{x:.1f}" y2="{top + ph + 4}"/>'
                     f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle">{t}</text>')
    parts.append(f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{peak}</text>'
                 f'<text x="{left - 4}" y="{top + ph}" text-anchor="end">0</text>')
    if summary.mean is not None:
        x = left + pw * (min(max(summary.mean, lo), hi) - lo) / (hi - lo)
        parts.append(f'<line class="mean" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}">'
                     f"<title>mean {summary.mean:.2f}</title></line>")
    parts.append("</svg>")
    return "".join(parts)


def _time_label(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _tick_step(duration: float) -> float:
    for step in (5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200):
        if duration / step <= 8:
            return float(step)
    return duration / 8


def timeline_svg(windows: list[dict], duration: float | None, worst: dict | None = None) -> str:
    """Per-window scores of one file as four step lines (`polyline.tl-line`, one per axis) over time, with
    a tooltip per window and the worst window of each axis (the row's `worst`) marked."""
    w, h, left, right, top, bottom = 720, 190, 36, 10, 10, 28
    pw, ph = w - left - right, h - top - bottom
    end = max([float(x.get("end_s") or 0.0) for x in windows] + [float(duration or 0.0), 1e-6])

    def x_of(t: float) -> float:
        return left + pw * min(max(t, 0.0), end) / end

    def y_of(v: float) -> float:
        return top + ph * (1 - (min(max(v, SCALE[0]), SCALE[1]) - SCALE[0]) / (SCALE[1] - SCALE[0]))

    parts = [f'<svg class="timeline" viewBox="0 0 {w} {h}" width="100%" preserveAspectRatio="xMinYMin meet" '
             f'data-end="{end:.3f}" role="img" aria-label="scores per 10 s window">',
             f'<line class="axis" x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}"/>',
             f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}"/>']
    for v in (0, 5, 10):
        parts.append(f'<line class="grid" x1="{left}" y1="{y_of(v):.1f}" x2="{left + pw}" y2="{y_of(v):.1f}"/>'
                     f'<text x="{left - 4}" y="{y_of(v) + 4:.1f}" text-anchor="end">{v}</text>')
    step = _tick_step(end)
    t = 0.0
    while t <= end + 1e-6:
        parts.append(f'<text x="{x_of(t):.1f}" y="{top + ph + 16}" text-anchor="middle">{_time_label(t)}</text>')
        t += step
    for a in AXES:
        pts: list[str] = []
        for win in windows:
            v = win.get(a)
            if not isinstance(v, int | float):
                continue
            s0, s1 = float(win.get("start_s") or 0.0), float(win.get("end_s") or 0.0)
            pts += [f"{x_of(s0):.1f},{y_of(v):.1f}", f"{x_of(s1):.1f},{y_of(v):.1f}"]
        if pts:
            parts.append(f'<polyline class="tl-line" data-axis="{a}" points="{" ".join(pts)}" fill="none" '
                         f'stroke="{AXIS_COLORS[a]}" stroke-width="2"><title>{a}</title></polyline>')
    for win in windows:  # invisible hover targets: one tooltip per window with its four scores
        s0, s1 = float(win.get("start_s") or 0.0), float(win.get("end_s") or 0.0)
        vals = ", ".join(f"{a} {win[a]:.2f}" for a in AXES if isinstance(win.get(a), int | float))
        parts.append(f'<rect class="tl-win" x="{x_of(s0):.1f}" y="{top}" width="{max(x_of(s1) - x_of(s0), 0.5):.1f}" '
                     f'height="{ph}" data-start="{s0:.3f}"><title>{_time_label(s0)}-{_time_label(s1)}: {vals}'
                     "</title></rect>")
    for a, start in (worst or {}).items():
        if a in AXIS_COLORS and isinstance(start, int | float):
            parts.append(f'<line class="worst" x1="{x_of(float(start)):.1f}" y1="{top}" x2="{x_of(float(start)):.1f}" '
                         f'y2="{top + ph}" stroke="{AXIS_COLORS[a]}"><title>worst {a} window at '
                         f"{_time_label(float(start))}</title></line>")
    parts.append("</svg>")
    return "".join(parts)


def legend() -> str:
    """The axis color legend (HTML)."""
    items = "".join(f'<span class="key"><i style="background:{AXIS_COLORS[a]}"></i>{a} {AXIS_NAMES[a]}</span>'
                    for a in AXES)
    return f'<div class="legend">{items}</div>'
