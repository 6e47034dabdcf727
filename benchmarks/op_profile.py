"""`mmmos-bench profile`: where each encoder graph spends its time, from ONNX Runtime's own profiler.

Each encoder graph of the bundle at one precision gets a CPU session from the runtime's factory
(`mmmos.runtime.ort_session.make_session`, with `profile_prefix`) and is fed one real 10 s window at batch 1,
cut and fed as the runtime does: the clip decoded and resampled (`audio.prepare`), its first window
(`windows.iter_windows`), and `EncoderSpec.fed_samples(valid)` samples of it (the whole window for a graph without
a length rule; valid samples plus the margin on the rule's grid for a graph with a dynamic time axis; zeros past
the window when the rule feeds more). After `warmup` untimed runs, `runs` timed runs are profiled; the node
events (`<node>_kernel_time`) of the timed runs are summed by operator type and by node and divided by `runs`.
Shares are of the node-time total (what the kernels took; the run's wall time also has the session's own work).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

KERNEL_SUFFIX = "_kernel_time"


def window_feed(enc: Any, wav: np.ndarray, valid: int) -> dict[str, np.ndarray]:
    """The batch-1 feed of one window: `enc.fed_samples(valid)` samples of `wav` (zeros past it), and `lengths`."""
    fed = int(enc.fed_samples(valid))
    buf = np.zeros((1, fed), np.float32)
    n = min(fed, wav.size)
    buf[0, :n] = wav[:n]
    return {"wav": buf, "lengths": np.asarray([valid], np.int64)}


def aggregate(events: list[dict[str, Any]], runs: int) -> dict[str, Any]:
    """Per-run node time by op type and by node from ORT profile events; only the last `runs` model runs count.

    Returns:
        {"run_ms": [wall ms of each counted run], "node_total_ms", "by_op": [{op, ms, share, nodes}],
        "by_node": [{node, op, ms, share}]}, both lists sorted by time, largest first.
    """
    model_runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                        key=lambda e: e["ts"])
    counted = model_runs[-runs:] if runs > 0 else []
    start = counted[0]["ts"] if counted else float("inf")
    per_op: dict[str, float] = defaultdict(float)
    per_node: dict[tuple[str, str], float] = defaultdict(float)
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith(KERNEL_SUFFIX) or e["ts"] < start:
            continue
        op = str((e.get("args") or {}).get("op_name", "?"))
        per_op[op] += e["dur"] / 1e3 / max(1, len(counted))
        per_node[(e["name"][: -len(KERNEL_SUFFIX)], op)] += e["dur"] / 1e3 / max(1, len(counted))
    total = sum(per_op.values())
    nodes_per_op: dict[str, int] = defaultdict(int)
    for _node, op in per_node:
        nodes_per_op[op] += 1

    def share(ms: float) -> float:
        return ms / total if total > 0 else 0.0

    return {
        "run_ms": [e["dur"] / 1e3 for e in counted], "node_total_ms": total,
        "by_op": [{"op": op, "ms": ms, "share": share(ms), "nodes": nodes_per_op[op]}
                  for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1])],
        "by_node": [{"node": n, "op": op, "ms": ms, "share": share(ms)}
                    for (n, op), ms in sorted(per_node.items(), key=lambda kv: -kv[1])],
    }


def profile_graph(graph: Path, feed: dict[str, np.ndarray], threads: int, warmup: int, runs: int,
                  work: Path) -> dict[str, Any]:
    """Profile one graph on one feed (see the module docstring); the raw profile file is removed."""
    from mmmos.runtime.ort_session import io_names, make_session

    session = make_session(graph, "cpu", threads, profile_prefix=str(work / f"ort_{graph.stem}"))
    inputs, _ = io_names(session)
    feed = {k: v for k, v in feed.items() if k in inputs}
    for _ in range(warmup):
        session.run(None, feed)
    wall = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, feed)
        wall.append(1e3 * (time.perf_counter() - t0))
    prof = Path(session.end_profiling())
    try:
        events = json.loads(prof.read_text())
    finally:
        prof.unlink(missing_ok=True)
    out = aggregate(events, runs)
    out["wall_ms"] = wall
    out["wall_ms_median"] = statistics.median(wall)
    return out


def first_window(bundle: Any, clip: Path | None) -> Any:
    """The first 10 s window of `clip` (default: the benchmarks' synthetic 10 s music-like clip) for every encoder."""
    from mmmos.runtime.audio import decode, prepare, to_mono
    from mmmos.runtime.windows import iter_windows

    from .clips import CLIP_RATE, synth_clip

    if clip is None:
        samples, sr = to_mono(synth_clip(10.0, CLIP_RATE)), CLIP_RATE
    else:
        samples, sr = decode(clip)
    prepared = prepare(samples, sr, [e.sample_rate for e in bundle.encoders])
    return next(iter_windows(prepared, bundle.encoders))


def profile_bundle(bundle_dir: str | Path, precision: str = "fp32", threads: int = 2, warmup: int = 1, runs: int = 3,
                   top: int = 10, clip: Path | None = None, say: Any = None) -> dict[str, Any]:
    """Profile every encoder graph of a bundle at `precision` (ORT CPU, batch 1, one 10 s window).

    Raises:
        ValueError: the bundle has no `precision` graph for some encoder, or runs < 1.
        mmmos.runtime.errors.MMMOSRuntimeError: the bundle or a graph does not load.
    """
    from mmmos.runtime.bundle import Bundle
    from mmmos.runtime.names import graph_key

    from .timing import load_average, machine_info

    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    bundle = Bundle.load(bundle_dir, verify=True)
    key = graph_key(precision, "ort-cpu")  # type: ignore[arg-type]
    missing = [e.name for e in bundle.encoders if key not in e.graphs]
    if missing:
        raise ValueError(f"bundle {bundle.root} has no {key!r} graph for {missing} (it has {bundle.graph_keys()}).")
    win = first_window(bundle, clip)
    out: dict[str, Any] = {
        "bundle": str(bundle.root), "model": str(bundle.model_id), "precision": precision,
        "precision_status": bundle.status(key), "threads": threads, "warmup": warmup, "runs": runs, "top": top,
        "clip": str(clip) if clip else "synthetic 10 s clip (benchmarks.clips.synth_clip)",
        "machine": machine_info(), "load_average_before": load_average(), "graphs": {},
    }
    with tempfile.TemporaryDirectory(prefix="mmmos-profile-") as tmp:
        for enc in bundle.encoders:
            valid = win.lengths[enc.name]
            feed = window_feed(enc, win.wavs[enc.name], valid)
            graph = bundle.encoder_graph(enc, key)
            if say is not None:
                say(f"profiling encoder:{enc.name} ({graph.name}, {feed['wav'].shape[1]} samples fed) ...")
            res = profile_graph(graph, feed, threads, warmup, runs, Path(tmp))
            res.update(graph=graph.name, valid_samples=valid, fed_samples=int(feed["wav"].shape[1]),
                       dynamic_length=enc.lengths is not None)
            out["graphs"][f"encoder:{enc.name}"] = res
    out["load_average_after"] = load_average()
    return out


def markdown(prof: dict[str, Any], command: str) -> str:
    """The top operator types and nodes of each graph, with their share of the node time."""
    top = int(prof["top"])
    m = prof["machine"]
    lines = [f"### ORT profile: `{prof['bundle']}` at {prof['precision']} ({prof['precision_status']}), ORT CPU, "
             f"batch 1, one 10 s window, {prof['threads']} threads",
             "",
             f"Machine: {m.get('cpu')}, {m.get('usable_cpus')} usable CPUs; onnxruntime "
             f"{(m.get('versions') or {}).get('onnxruntime')}. Clip: {prof['clip']}. {prof['warmup']} warm-up run(s), "
             f"{prof['runs']} profiled; load average before {prof['load_average_before']}, after "
             f"{prof['load_average_after']}. Shares are of the kernels' total time per run.", ""]
    for label, g in prof["graphs"].items():
        fed = f"{g['fed_samples']} samples fed, {g['valid_samples']} valid" + (
            ", dynamic time axis" if g.get("dynamic_length") else "")
        lines += [f"#### {label} (`{g['graph']}`, {fed}): {g['wall_ms_median']:.1f} ms per run (median wall), "
                  f"kernels {g['node_total_ms']:.1f} ms", "",
                  "| op type | ms per run | share | nodes |", "|---|---|---|---|"]
        lines += [f"| {o['op']} | {o['ms']:.2f} | {o['share']:.1%} | {o['nodes']} |" for o in g["by_op"][:top]]
        lines += ["", "| node | op | ms per run | share |", "|---|---|---|---|"]
        lines += [f"| `{n['node']}` | {n['op']} | {n['ms']:.2f} | {n['share']:.1%} |" for n in g["by_node"][:top]]
        lines.append("")
    lines += ["Command:", "", "```", command, "```", ""]
    return "\n".join(lines)


def write(prof: dict[str, Any], out: Path, command: str) -> tuple[Path, Path]:
    """Write `profile-<precision>.json` (every op type, the top nodes) and `.md` into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    keep = max(50, int(prof["top"]))
    slim = {**prof, "command": command,
            "graphs": {k: {**g, "by_node": g["by_node"][:keep]} for k, g in prof["graphs"].items()}}
    jp, mp = out / f"profile-{prof['precision']}.json", out / f"profile-{prof['precision']}.md"
    jp.write_text(json.dumps(slim, indent=1, default=str))
    mp.write_text(markdown(prof, command))
    return jp, mp
