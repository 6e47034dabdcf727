"""The interleaving and the statistics of `mmmos-bench versus`, free of processes (tests drive it with fakes).

- `interleave`: for every round and every clip, one call of each side on that clip, back to back; the side
  that goes first alternates from round to round (round 0: mmmos then peer, round 1: peer then mmmos, ...), so
  neither side always runs right after the other's load, cache use or a change of machine load.
- `pair_stats`: per clip length, each side's per-file wall seconds (median, min, p90) and two per-round ratios
  of the two calls of the same round: the **speed-up** peer / mmmos and the **time ratio** mmmos / peer, each
  with median, p10-p90, IQR and min/max over rounds; plus min/min.
- `judge_goals`: one defined metric per goal (`GOALS`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .timing import percentile

Measure = Callable[[str], tuple[float, dict[str, float] | None]]
"""One side: clip path -> (wall seconds of one end-to-end call, the file's scores or None)."""

SIDES = ("mmmos", "peer")


@dataclass(frozen=True)
class Goal:
    """One speed goal of the issue, judged on one metric at one clip length.

    Attributes:
        name: short id (also the JSON key).
        kind: which bundles it is for: "audiobox" (the same Audiobox model on both sides) or "ensemble"
            (the full tri-encoder ensemble vs the package's single WavLM).
        seconds: the clip length it is judged at.
        metric: "speedup" (median over rounds of peer / mmmos, higher is better) or "time_ratio" (median over
            rounds of mmmos / peer, lower is better).
        target: the bound (>= for speedup, <= for time_ratio).
        text: the goal in words.
    """

    name: str
    kind: str
    seconds: float
    metric: str
    target: float
    text: str

    @property
    def op(self) -> str:
        """'>=' or '<='."""
        return ">=" if self.metric == "speedup" else "<="

    def met(self, value: float) -> bool:
        """Whether `value` of the goal's metric meets the target."""
        return value >= self.target if self.metric == "speedup" else value <= self.target


GOALS: tuple[Goal, ...] = (
    Goal("audiobox_2s", "audiobox", 2.0, "speedup", 8.0, "Audiobox model, 2 s clip: >= 8x faster than the package"),
    Goal("audiobox_10s", "audiobox", 10.0, "speedup", 3.0, "Audiobox model, 10 s clip: >= 3x faster than the package"),
    Goal("audiobox_30s", "audiobox", 30.0, "speedup", 3.0, "Audiobox model, 30 s clip: >= 3x faster than the package"),
    Goal("ensemble_10s", "ensemble", 10.0, "time_ratio", 1.0,
         "full 8-member tri-encoder ensemble, 10 s clip: <= 1.0x the package's single-WavLM time"),
    Goal("ensemble_2s", "ensemble", 2.0, "time_ratio", 0.3,
         "full 8-member tri-encoder ensemble, 2 s clip: <= 0.3x the package's single-WavLM time"),
)


def interleave(sides: Mapping[str, Measure], clips: Mapping[float, str], rounds: int, warmup: int = 1,
               progress: Callable[[str], None] | None = None) -> dict[float, dict[str, Any]]:
    """Time both sides on every clip, A,B / B,A alternating per round, after `warmup` untimed rounds.

    Args:
        sides: exactly two sides, first = the one that goes first in round 0 (mmmos).
        clips: clip length in seconds -> file.
        rounds: timed rounds (>= 1).

    Returns:
        seconds -> {"times": {side: [s per round]}, "first": [side that went first per round],
        "scores": {side: scores of the last call}}.

    Raises:
        ValueError: not two sides, or rounds < 1.
    """
    names = list(sides)
    if len(names) != 2:
        raise ValueError(f"interleave compares two sides, got {names}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    for _ in range(warmup):
        for path in clips.values():
            for name in names:
                sides[name](path)
    out: dict[float, dict[str, Any]] = {
        sec: {"times": {n: [] for n in names}, "first": [], "scores": {n: None for n in names}} for sec in clips}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for sec, path in clips.items():
            for name in order:
                dt, scores = sides[name](path)
                out[sec]["times"][name].append(float(dt))
                out[sec]["scores"][name] = scores
            out[sec]["first"].append(order[0])
        if progress is not None:
            parts = [f"{sec:g} s " + " / ".join(f"{n} {1e3 * out[sec]['times'][n][-1]:.0f} ms" for n in names)
                     for sec in clips]
            progress(f"round {r + 1}/{rounds}: " + "; ".join(parts))
    return out


def distribution(values: list[float]) -> dict[str, Any]:
    """Median, p10, p25, p75, p90, min, max and the values themselves (non-empty list)."""
    return {"median": statistics.median(values), "p10": percentile(values, 10), "p25": percentile(values, 25),
            "p75": percentile(values, 75), "p90": percentile(values, 90), "min": min(values), "max": max(values),
            "values": list(values)}


def pair_stats(mmmos: list[float], peer: list[float]) -> dict[str, Any]:
    """Statistics of one clip length from the per-round seconds of both sides (same length, same rounds).

    Raises:
        ValueError: different lengths or no rounds.
    """
    if len(mmmos) != len(peer) or not mmmos:
        raise ValueError(f"need the same non-zero number of rounds per side, got {len(mmmos)} and {len(peer)}")
    side = {name: {"median_s": statistics.median(v), "min_s": min(v), "p90_s": percentile(v, 90), "times_s": list(v)}
            for name, v in (("mmmos", mmmos), ("peer", peer))}
    return {
        "rounds": len(mmmos), **side,
        "speedup": distribution([b / a for a, b in zip(mmmos, peer, strict=True)]),
        "time_ratio": distribution([a / b for a, b in zip(mmmos, peer, strict=True)]),
        "speedup_min_over_min": min(peer) / min(mmmos),
    }


def max_score_diff(a: dict[str, float] | None, b: dict[str, float] | None) -> float | None:
    """max |a - b| over the axes both have (None when either is missing)."""
    if not a or not b:
        return None
    common = [k for k in a if k in b]
    return max(abs(float(a[k]) - float(b[k])) for k in common) if common else None


def summarize_lengths(measured: dict[float, dict[str, Any]], same_model: bool = True) -> dict[str, dict[str, Any]]:
    """Per clip length ("10" etc.): `pair_stats`, who went first per round and (for the same model on both sides)
    the max difference of the last round's scores."""
    out = {}
    for sec in sorted(measured):
        m = measured[sec]
        st = pair_stats(m["times"]["mmmos"], m["times"]["peer"])
        st.update(seconds=sec, first=m["first"], scores=m["scores"],
                  scores_max_abs_diff=max_score_diff(m["scores"]["mmmos"], m["scores"]["peer"]) if same_model else None)
        out[f"{sec:g}"] = st
    return out


def judge_goals(kind: str, lengths: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The goals of `kind` ("audiobox" or "ensemble") on the measured lengths (unmeasured ones say so)."""
    out = {}
    for g in GOALS:
        if g.kind != kind:
            continue
        st = lengths.get(f"{g.seconds:g}")
        row: dict[str, Any] = {"goal": g.text, "seconds": g.seconds, "metric": g.metric,
                               "target": f"{g.op} {g.target:g}x"}
        if st is None:
            row.update(value=None, met=None, note=f"{g.seconds:g} s not measured (add it to --lengths)")
        else:
            d = st[g.metric]
            row.update(value=d["median"], p10=d["p10"], p90=d["p90"], met=g.met(d["median"]), rounds=st["rounds"])
        out[g.name] = row
    return out
