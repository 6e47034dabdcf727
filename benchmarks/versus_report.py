"""The markdown of `mmmos-bench versus` (`versus.md`, printed and optionally put into a README section)."""

from __future__ import annotations

from typing import Any


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{1e3 * x:.1f}"


def _x(r: float) -> str:
    """A ratio with 3 significant digits (0.0421x, 3.07x, 12.3x)."""
    return f"{r:.3g}x"


def _spread(d: dict[str, Any]) -> str:
    return f"{d['p10']:.3g}-{d['p90']:.3g}"


def _machine(raw: dict[str, Any]) -> str:
    m = raw.get("machine", {})
    gpus = ", ".join(m.get("gpus") or []) or "none"
    return (f"{m.get('cpu', '?')}, {m.get('usable_cpus', '?')} usable CPUs, {m.get('memory_gb', '?')} GB, "
            f"GPUs: {gpus}; Python {m.get('python', '?')}; "
            + ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items()))


def _goal_value(g: dict[str, Any]) -> tuple[str, str, str]:
    if g.get("value") is None:
        return "-", "-", g.get("note", "not measured")
    return _x(g["value"]), _spread(g), "yes" if g["met"] else "no"


def markdown(raw: dict[str, Any]) -> str:
    """The comparison as markdown: setting, per-length table, goals, and the command that made it."""
    kind = raw.get("kind", "ensemble")
    b, mm, peer, st = raw["bundle"], raw.get("mmmos", {}), raw.get("peer", {}), raw["settings"]
    title = ("same model: Audiobox bundle in mmmos vs the audiobox-aesthetics package" if kind == "audiobox"
             else "whole mmmos ensemble vs the audiobox-aesthetics package's single WavLM")
    lines = [
        f"### mmmos vs audiobox-aesthetics ({title})",
        "",
        f"Bundle: `{b['path']}` ({b.get('source')}, encoders {'+'.join(b.get('encoders', []))}, "
        f"{b.get('members')} members, model {b.get('model')})",
        f"Machine: {_machine(raw)}",
        f"mmmos: `Scorer(bundle, {mm.get('backend')}, {mm.get('precision')}).score(path)` end to end (decode, "
        f"resample, windows, graphs, per-file averaging), {mm.get('threads')} threads, batch size "
        f"{mm.get('batch_size')}" + (f"; warnings: {'; '.join(mm['warnings'])}" if mm.get("warnings") else ""),
        f"Peer: `AesPredictor(checkpoint_pth=..., precision=\"32\").forward([{{\"path\": path}}])` on "
        f"{peer.get('device')}, torch {peer.get('torch')}, {peer.get('threads')} threads, one file per call "
        f"(its windows in one batch); weights: {peer.get('weights')}; WavLM config: {peer.get('wavlm_config')}; "
        f"torchaudio: {peer.get('torchaudio')}",
        f"Interleaved: {st['rounds']} rounds after {st['warmup']} warm-up round(s); per round and clip, one call of "
        "each side back to back, the first side alternating by round. Load average before "
        f"{raw.get('load_average_before')}, after {raw.get('load_average_after')}; started {raw.get('started')}.",
        "",
        "Per-file wall time per clip length; speed-up = peer / mmmos and time ratio = mmmos / peer of the two calls "
        "of each round (median and p10-p90 over rounds; min/min = fastest peer call / fastest mmmos call):",
        "",
        "| clip s | mmmos ms median | mmmos min | peer ms median | peer min | speed-up median | p10-p90 | IQR | "
        "min/min | time ratio median | p10-p90 | max abs score diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, s in raw["lengths"].items():
        sp, tr = s["speedup"], s["time_ratio"]
        diff = "-" if s.get("scores_max_abs_diff") is None else f"{s['scores_max_abs_diff']:.1e}"
        lines.append(f"| {key} | {_ms(s['mmmos']['median_s'])} | {_ms(s['mmmos']['min_s'])} | "
                     f"{_ms(s['peer']['median_s'])} | {_ms(s['peer']['min_s'])} | {_x(sp['median'])} | "
                     f"{_spread(sp)} | {sp['p25']:.3g}-{sp['p75']:.3g} | {_x(s['speedup_min_over_min'])} | "
                     f"{_x(tr['median'])} | {_spread(tr)} | {diff} |")
    if raw.get("goals"):
        lines += ["", "Goals (2-core CPU), one metric each: the median over rounds of the per-round ratio at that "
                  "clip length:", "", "| goal | metric | target | value | p10-p90 | met |", "|---|---|---|---|---|---|"]
        for name, g in raw["goals"].items():
            metric = "speed-up peer/mmmos" if g["metric"] == "speedup" else "time ratio mmmos/peer"
            val, spread, met = _goal_value(g)
            lines.append(f"| {name}: {g['goal']} | {metric} | {g['target']} | {val} | {spread} | {met} |")
        encs, members = b.get("encoders", []), b.get("members")
        if kind == "ensemble" and (len(encs) != 3 or members != 8):
            lines += ["", f"The ensemble goals are set for the full 8-member tri-encoder ensemble; this bundle has "
                      f"{'+'.join(encs)} and {members} members."]
    if kind == "audiobox":
        lines += ["", "The score difference is of the last round's calls; the same model should agree to about 1e-3 "
                  "at fp32 (more at INT8)."]
    lines += ["", "Command:", "", "```", raw["command"], "```", ""]
    return "\n".join(lines)
