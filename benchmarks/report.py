"""Derived figures (FLOP floor, ratios to baselines, goals), and the report files: JSON, markdown, PNG plots.

Input is the raw dict the CLI gathers: `machine`, `bundle`, `flops` (graph label -> GraphFlops dict),
`peaks` (precision -> measure_peaks entry), `runs` (list of runtime worker results), `baselines`
(`torch`, `audiobox`: worker results), `settings`. `summarize` adds `summary`; the writers read both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GOAL_NAIVE_SPEEDUP = 8.0
GOAL_AUDIOBOX_RATIO = 1.5
GOAL_FLOOR_FRACTION = 0.6
README_START = "<!-- mmmos-bench results: start -->"
README_END = "<!-- mmmos-bench results: end -->"


def _label(run: dict[str, Any]) -> str:
    return f"{run.get('backend', run.get('requested_backend'))} {run.get('precision')}"


def _passed(run: dict[str, Any]) -> bool:
    """Whether the run's precision passed the bundle's checks (runs without the field count as passed)."""
    return run.get("precision_status", "passed") == "passed"


def _ok(run: dict[str, Any]) -> bool:
    return "error" not in run and bool(run.get("batches"))


def _min_batch(run: dict[str, Any]) -> str:
    return str(min(int(b) for b in run["batches"]))


def floor_table(run: dict[str, Any], flops: dict[str, dict[str, Any]], peak: float | None) -> dict[str, Any]:
    """Achieved GFLOP/s and fraction of the floor per graph and batch for one run.

    The floor of a graph is FLOPs / peak (the time a perfect GEMM engine would need); the fraction
    reached is floor / measured time = achieved GFLOP/s / peak.
    """
    out: dict[str, Any] = {}
    for b, row in run.get("batches", {}).items():
        per: dict[str, Any] = {}
        enc_flops = enc_time = 0.0
        for graph, secs in row.get("split_median_s", {}).items():
            f = flops.get(graph, {}).get("flops")
            if not f or not secs:
                continue
            achieved = f * int(b) / secs / 1e9
            per[graph] = {"gflops_per_window": f / 1e9, "seconds": secs, "achieved_gflops": achieved,
                          "floor_s": f * int(b) / (peak * 1e9) if peak else None,
                          "floor_fraction": achieved / peak if peak else None}
            if graph.startswith("encoder:"):
                enc_flops += f * int(b)
                enc_time += secs
        if enc_time:
            achieved = enc_flops / enc_time / 1e9
            per["encoders (all)"] = {"gflops_per_window": enc_flops / int(b) / 1e9, "seconds": enc_time,
                                     "achieved_gflops": achieved,
                                     "floor_s": enc_flops / (peak * 1e9) if peak else None,
                                     "floor_fraction": achieved / peak if peak else None}
        out[b] = per
    return out


def run_peak(run: dict[str, Any], peaks: dict[str, Any]) -> float | None:
    """The matmul peak a run's floor uses: the best of the CLI's and the worker's own CPU measurement.

    None for GPU backends (the CPU peak does not bound them, and no GPU peak is measured).
    """
    if run.get("backend") not in ("ort-cpu", None):
        return None
    found = [(peaks.get(run["precision"]) or {}).get("gflops"), (run.get("peak_here") or {}).get("gflops")]
    found = [g for g in found if g]
    return max(found) if found else None


def _goals(best: dict[str, Any], raw: dict[str, Any], floors: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Baseline ratios and goal verdicts for one mmmos run taken as "the best"."""
    peaks = raw.get("peaks", {})
    b = _min_batch(best)
    best_window = best["batches"][b]["per_window_median_s"]
    ten = best.get("lengths", {}).get("10")
    best_e2e10 = ten["score"]["median"] if ten else None
    goals: dict[str, Any] = {}
    ratios: dict[str, Any] = {}
    torch_res = (raw.get("baselines", {}) or {}).get("torch") or {}
    if "error" not in torch_res and torch_res.get("eager"):
        eb = str(min(int(x) for x in torch_res["eager"]))
        ratios["eager_over_best"] = torch_res["eager"][eb]["per_window_median_s"] / best_window
        if torch_res.get("naive"):
            nb = next(iter(torch_res["naive"]))
            naive_s = torch_res["naive"][nb]["per_window_median_s"]
            ratios["naive_over_best"] = naive_s / best_window
            goals["naive_speedup"] = {
                "value": ratios["naive_over_best"], "target": f">= {GOAL_NAIVE_SPEEDUP:g}x",
                "value_min": _min_s(torch_res["naive"][nb], int(nb)) / _min_s(best["batches"][b], int(b)),
                "met": ratios["naive_over_best"] >= GOAL_NAIVE_SPEEDUP,
                "detail": f"naive eager {naive_s:.3f} s/window vs {_label(best)} {best_window:.3f} s/window"}
    ab = (raw.get("baselines", {}) or {}).get("audiobox") or {}
    if "error" not in ab and ab.get("batches"):
        ab1 = ab["batches"][str(min(int(x) for x in ab["batches"]))]["per_window_median_s"]
        ratios["best_window_over_audiobox"] = best_window / ab1
        if best_e2e10 is not None:
            ratios["best_e2e10_over_audiobox"] = best_e2e10 / ab1
        mine = best_e2e10 if best_e2e10 is not None else best_window
        mine_min = ten["score"]["min"] if ten else _min_s(best["batches"][b], int(b))
        ab_key = str(min(int(x) for x in ab["batches"]))
        goals["audiobox_ratio"] = {
            "value": mine / ab1, "target": f"<= {GOAL_AUDIOBOX_RATIO:g}x", "met": mine / ab1 <= GOAL_AUDIOBOX_RATIO,
            "value_min": mine_min / _min_s(ab["batches"][ab_key], int(ab_key)),
            "detail": f"{_label(best)} {'end-to-end 10 s clip' if best_e2e10 is not None else 'per window'} "
                      f"{mine:.3f} s vs audiobox model forward {ab1:.3f} s"}
    enc = floors.get(_label(best), {}).get(b, {}).get("encoders (all)")
    if enc and enc.get("floor_fraction") is not None:
        goals["floor_fraction"] = {
            "value": enc["floor_fraction"], "target": f">= {GOAL_FLOOR_FRACTION:.0%}",
            "met": enc["floor_fraction"] >= GOAL_FLOOR_FRACTION,
            "detail": f"encoder graphs at {enc['achieved_gflops']:.1f} GFLOP/s of a measured "
                      f"{run_peak(best, peaks):.1f} GFLOP/s {best['precision']} matmul peak"}
    return goals, ratios


def _min_s(row: dict[str, Any], batch: int) -> float:
    """Fastest timed call per window (less sensitive to a busy machine than the median)."""
    lat = row.get("latency") or {}
    return float(lat["min"]) / batch if "min" in lat else float(row["per_window_median_s"])


def _fastest(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return min(runs, key=lambda r: r["batches"][_min_batch(r)]["per_window_median_s"])


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    """Compute floors, the best mmmos backend, baseline ratios and goal verdicts; returns `raw["summary"]`.

    The best backend is chosen among precisions that passed the bundle's checks. When a forced
    (failed or unchecked) precision is faster still, its goal values are kept apart in `goals_forced`.
    """
    flops = raw.get("flops", {})
    peaks = raw.get("peaks", {})
    runs = [r for r in raw.get("runs", []) if _ok(r)]
    summary: dict[str, Any] = {"floors": {}, "goals": {}}
    for r in runs:
        summary["floors"][_label(r)] = floor_table(r, flops, run_peak(r, peaks))
    if not runs:
        raw["summary"] = summary
        return summary
    best = _fastest([r for r in runs if _passed(r)] or runs)
    b = _min_batch(best)
    ten = best.get("lengths", {}).get("10")
    summary["best"] = {"label": _label(best), "batch": int(b),
                       "per_window_s": best["batches"][b]["per_window_median_s"],
                       "e2e_10s_s": ten["score"]["median"] if ten else None}
    summary["goals"], summary["ratios"] = _goals(best, raw, summary["floors"])
    fastest = _fastest(runs)
    if fastest is not best:
        summary["fastest_forced"] = _label(fastest)
        summary["goals_forced"], _ = _goals(fastest, raw, summary["floors"])
    torch_res = (raw.get("baselines", {}) or {}).get("torch") or {}
    theirs = torch_res.get("window_mean_scores")
    if theirs:
        summary["ratios"]["scores_max_abs_diff_vs_torch"] = {
            _label(r): max(abs(a - c) for a, c in zip(r["window_mean_scores"], theirs, strict=True))
            for r in runs if r.get("window_mean_scores")}
    raw["summary"] = summary
    return summary


def write_json(raw: dict[str, Any], path: Path) -> Path:
    """Write the whole report (machine, versions, every figure) as JSON."""
    path.write_text(json.dumps(raw, indent=1, default=str))
    return path


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{1000 * x:.1f}"


def markdown(raw: dict[str, Any]) -> str:
    """The report as markdown tables (machine, per-backend latency/throughput/memory, split, floor, goals)."""
    m = raw.get("machine", {})
    s = raw.get("summary") or summarize(raw)
    lines = [f"Bundle: `{raw.get('bundle', {}).get('path')}` ({raw.get('bundle', {}).get('description', '')})",
             f"Machine: {m.get('cpu')}, {m.get('usable_cpus')} usable CPUs, {m.get('memory_gb')} GB, "
             f"GPUs: {', '.join(m.get('gpus') or []) or 'none'}; {m.get('platform')}; Python {m.get('python')}",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items()),
             f"Load average at start: {m.get('load_average')}; settings: {raw.get('settings')}", ""]
    lines += ["| backend | batch | ms/window median | p90 | min | audio s/s | cold start s | peak RSS MB |",
              "|---|---|---|---|---|---|---|---|"]
    for r in raw.get("runs", []):
        if not _ok(r):
            lines.append(f"| {_label(r)} | - | error: {r.get('error', 'no result')} | | | | | |")
            continue
        label = _label(r) if _passed(r) else f"{_label(r)} (check {r['precision_status']}, forced)"
        for b, row in sorted(r["batches"].items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {label} | {b} | {_ms(row['per_window_median_s'])} | {_ms(row['per_window_p90_s'])} "
                         f"| {_ms(row['latency']['min'] / int(b))} "
                         f"| {row['throughput_audio_s_per_s']:.2f} | {r['cold_start']['total_s']:.2f} "
                         f"| {r['memory']['peak_rss_mb']:.0f} |")
    lines += ["", "End-to-end `score(path)` per clip length (decode + resample + graphs + averaging):", "",
              "| backend | clip s | score ms median | decode+resample ms | audio s/s |", "|---|---|---|---|---|"]
    for r in filter(_ok, raw.get("runs", [])):
        for sec, row in sorted(r.get("lengths", {}).items(), key=lambda kv: float(kv[0])):
            lines.append(f"| {_label(r)} | {sec} | {_ms(row['score']['median'])} "
                         f"| {_ms(row['decode_resample']['median'])} | {row['throughput_audio_s_per_s']:.2f} |")
    lines += ["", "Time per graph, achieved GFLOP/s and fraction of the FLOP floor (FLOPs per 10 s window "
              "counted from the graph; peak = measured matmul peak of this machine):", "",
              "| backend | batch | graph | GFLOP/window | ms | GFLOP/s | floor fraction |",
              "|---|---|---|---|---|---|---|"]
    for label, table in s.get("floors", {}).items():
        for b, per in sorted(table.items(), key=lambda kv: int(kv[0])):
            for graph, row in per.items():
                frac = row["floor_fraction"]
                lines.append(f"| {label} | {b} | {graph} | {row['gflops_per_window']:.2f} | {_ms(row['seconds'])} "
                             f"| {row['achieved_gflops']:.1f} | {'-' if frac is None else f'{frac:.0%}'} |")
    peaks = raw.get("peaks", {})
    if peaks:
        here = [f"{_label(r)} {r['peak_here']['gflops']:.1f}" for r in raw.get("runs", [])
                if (r.get("peak_here") or {}).get("gflops")]
        lines += ["", "Measured matmul peak (before the runs): " + ", ".join(
            f"{p} {v['gflops']:.1f} GFLOP/s" for p, v in peaks.items() if v.get("gflops"))
            + (f"; in each worker after its timings: {', '.join(here)}; the floor uses the higher" if here else "")
            + "."]
    lines += _baseline_lines(raw, s)
    return "\n".join(lines) + "\n"


def _baseline_lines(raw: dict[str, Any], s: dict[str, Any]) -> list[str]:
    """The baselines table and goal verdicts."""
    lines = ["", "Baselines (same weights, same windows), per window at the smallest batch:", "",
             "| baseline | ms/window median | peak RSS MB | ratio to best mmmos |", "|---|---|---|---|"]
    best = s.get("best")
    base = raw.get("baselines", {}) or {}
    t = base.get("torch") or {}
    if "error" in t:
        lines.append(f"| PyTorch eager / naive | unavailable: {t['error']} | | |")
    for kind in ("eager", "naive"):
        for b, row in (t.get(kind) or {}).items():
            ratio = row["per_window_median_s"] / best["per_window_s"] if best else None
            lines.append(f"| PyTorch {kind} (batch {b}) | {_ms(row['per_window_median_s'])} "
                         f"| {t['memory']['peak_rss_mb']:.0f} | {'-' if ratio is None else f'{ratio:.2f}x'} |")
    a = base.get("audiobox") or {}
    if "error" in a:
        lines.append(f"| audiobox-aesthetics | unavailable: {a['error']} | | |")
    for b, row in (a.get("batches") or {}).items():
        ratio = row["per_window_median_s"] / best["per_window_s"] if best else None
        lines.append(f"| audiobox-aesthetics fp32 (batch {b}, {a.get('weights')}) | {_ms(row['per_window_median_s'])} "
                     f"| {a['memory']['peak_rss_mb']:.0f} | {'-' if ratio is None else f'{ratio:.2f}x'} |")
    if best:
        lines += ["", f"Best mmmos: {best['label']} at batch {best['batch']}: {_ms(best['per_window_s'])} ms/window"
                  + (f", {_ms(best['e2e_10s_s'])} ms end-to-end for a 10 s clip" if best.get("e2e_10s_s") else "")]
    diff = s.get("ratios", {}).get("scores_max_abs_diff_vs_torch")
    if diff:
        lines.append("Same weights check, max |mmmos - PyTorch eager| of the shared window's mean scores: "
                     + ", ".join(f"{k} {v:.2e}" for k, v in diff.items()))
    if s.get("goals"):
        lines += ["", f"Goals, judged on the best precision that passed the bundle's checks ({best['label']}):", "",
                  "| goal | target | value (medians) | value (min/min) | met | how |", "|---|---|---|---|---|---|"]
        lines += _goal_rows(s["goals"])
    if s.get("goals_forced"):
        lines += ["", f"For information, the same goals for the fastest run, {s['fastest_forced']}, whose "
                  "precision did not pass the bundle's checks (forced):", "",
                  "| goal | target | value (medians) | value (min/min) | met | how |", "|---|---|---|---|---|---|"]
        lines += _goal_rows(s["goals_forced"])
    return lines


def require_matplotlib() -> None:
    """Fail early, before minutes of timing, when the plotting library is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ModuleNotFoundError(
            "mmmos-bench draws its plots with matplotlib, which is not installed: pip install 'mmmos[bench]'"
        ) from exc


def _finish(plt: Any, fig: Any, ax: Any, labels: tuple[str, str, str], legend: bool, path: Path) -> Path:
    """Label, grid and save one plot (x label, y label, title), then free its figure."""
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(labels[2])
    ax.grid(True, alpha=0.3)
    if legend:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plots(raw: dict[str, Any], out_dir: Path) -> list[Path]:
    """PNG plots: end-to-end latency vs audio length per backend; throughput vs batch per backend."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in raw.get("runs", []) if _ok(r)]
    written: list[Path] = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in runs:
        pts = sorted((float(k), v["score"]["median"]) for k, v in r.get("lengths", {}).items())
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=_label(r))
    written.append(_finish(plt, fig, ax, ("audio length (s)", "score() latency, median (s)", "Latency vs audio length"),
                           bool(runs), out_dir / "latency_vs_length.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in runs:
        pts = sorted((int(k), v["throughput_audio_s_per_s"]) for k, v in r["batches"].items())
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=_label(r))
    t = (raw.get("baselines", {}) or {}).get("torch") or {}
    if t.get("eager"):
        pts = sorted((int(k), 10.0 / v["per_window_median_s"]) for k, v in t["eager"].items())
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="s", linestyle="--", label="PyTorch eager")
    batches = sorted({int(k) for r in runs for k in r["batches"]})
    if batches and batches[-1] >= 4 * batches[0]:
        ax.set_xscale("log", base=2)  # 1, 8, 32 spread evenly
    written.append(_finish(plt, fig, ax, ("windows per batch", "throughput (audio s / wall s)",
                                          "Throughput vs batch (10 s windows)"),
                           bool(runs or t.get("eager")), out_dir / "throughput_vs_batch.png"))
    return written


def update_readme(readme: Path, section: str, name: str = "results") -> None:
    """Replace the text between the `name` markers of `readme` with `section` (append markers if absent).

    `name` "results" is the `run` command's section; `versus` writes "versus audiobox" / "versus ensemble".
    """
    text = readme.read_text() if readme.is_file() else ""
    start, end = f"<!-- mmmos-bench {name}: start -->", f"<!-- mmmos-bench {name}: end -->"
    block = f"{start}\n{section.rstrip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
    readme.write_text(text)


def _goal_rows(goals: dict[str, Any]) -> list[str]:
    """Table rows; ratio goals also show the ratio of fastest calls (min/min) beside the medians'."""
    rows = []
    for name, g in goals.items():
        val = f"{g['value']:.0%}" if name == "floor_fraction" else f"{g['value']:.2f}x"
        vmin = f"{g['value_min']:.2f}x" if g.get("value_min") is not None else "-"
        rows.append(f"| {name} | {g['target']} | {val} | {vmin} | {'yes' if g['met'] else 'no'} | {g['detail']} |")
    return rows
