"""One backend at one precision, measured through `mmmos.runtime` (no torch): meant to run in its own process.

What it measures, in this order (so cold start really is cold):
1. cold start: `Scorer(...)` (sessions/engines loaded) + the first `score()` of a clip;
2. per batch size: the whole pipeline (every encoder graph, then the ensemble graph) on the shared
   windows repeated to the batch, median/p90 after warm-up, and the per-graph split;
3. per clip length: end-to-end `score(path)` (decode + resample + windows + graphs + averaging) and
   decode + resample alone;
4. the process's RSS high-water mark (the reason it runs in a process of its own).

The per-graph split comes from the runtime's `Runner.last_inference_time` hook, filled by every
`infer()`; backends whose pipeline does not go through `infer()` (ORT CUDA with IO binding, TensorRT)
get the split from direct `infer()` calls on each graph instead. TensorRT is timed with CUDA events
on the pipeline's stream; ORT CUDA returns host arrays, so its wall time is complete. Both GPU paths
are untested here (no GPU).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from mmmos.runtime import Scorer
from mmmos.runtime.audio import decode, prepare

from .clips import load_windows
from .timing import CudaEventTimer, Stats, current_rss_mb, load_average, peak_rss_mb, time_call, wall_time


def _runners(pipeline: Any) -> dict[str, Any]:
    """Graph label -> Runner of a pipeline ("encoder:<name>", "ensemble")."""
    out = {f"encoder:{n}": r for n, r in getattr(pipeline, "encoders", {}).items()}
    if getattr(pipeline, "ensemble", None) is not None:
        out["ensemble"] = pipeline.ensemble
    return out


def _timer(pipeline: Any) -> Any:
    """CUDA-event timer for TensorRT, else wall clock (None)."""
    if getattr(pipeline, "name", "") == "tensorrt" and hasattr(pipeline, "stream"):
        return CudaEventTimer(pipeline.cudart, pipeline.stream)
    return None


def bench_batch(scorer: Scorer, windows: Path, batch: int, warmup: int, repeats: int) -> dict[str, Any]:
    """Pipeline latency and per-graph split for `batch` copies of the shared windows."""
    pipeline = scorer.pipeline
    names = [e.name for e in scorer.bundle.encoders]
    feeds = load_windows(windows, names, batch)
    runners = _runners(pipeline)
    timer = _timer(pipeline)
    measure = timer or wall_time
    split: dict[str, list[float]] = {k: [] for k in runners}

    def once() -> None:
        pipeline.run(feeds, want_features=False, want_scores=True)

    for _ in range(warmup):
        once()
    times = []
    for _ in range(repeats):
        for r in runners.values():
            r.last_inference_time = None
        times.append(measure(once))
        if all(r.last_inference_time is not None for r in runners.values()):
            for k, r in runners.items():
                split[k].append(float(r.last_inference_time))
    how = "runner hook"
    if not all(split.values()):
        how = "direct infer per graph"
        split = _direct_split(pipeline, runners, feeds, repeats)
    stats = Stats.of(times, warmup)
    return {
        "batch": batch, "latency": stats.to_dict(), "per_window_median_s": stats.median / batch,
        "per_window_p90_s": stats.p90 / batch, "throughput_audio_s_per_s": 10.0 * batch / stats.median,
        "split_median_s": {k: float(np.median(v)) for k, v in split.items()}, "split_method": how,
        "timer": "cuda-events" if timer else "wall",
    }


def _direct_split(pipeline: Any, runners: dict[str, Any], feeds: dict[str, tuple[np.ndarray, np.ndarray]],
                  repeats: int) -> dict[str, list[float]]:
    """Time each graph's `infer()` alone (for pipelines that bypass it)."""
    split: dict[str, list[float]] = {}
    features: dict[str, np.ndarray] = {}
    for name, (wav, lengths) in feeds.items():
        r = runners[f"encoder:{name}"]
        features.update(r.infer({"wav": wav, "lengths": lengths}))
        split[f"encoder:{name}"] = time_call(lambda r=r, w=wav, n=lengths: r.infer({"wav": w, "lengths": n}),
                                             warmup=0, repeats=repeats).times
    if "ensemble" in runners:
        ens = runners["ensemble"]
        feed = {k: features[k] for k in pipeline.bundle.ensemble_inputs}
        split["ensemble"] = time_call(lambda: ens.infer(feed), warmup=1, repeats=repeats).times
    return split


def bench_lengths(scorer: Scorer, clips: dict[float, Path], repeats: int) -> dict[str, Any]:
    """End-to-end score time and decode+resample time per clip length (sessions already warm)."""
    rates = [e.sample_rate for e in scorer.bundle.encoders]
    out = {}
    for sec, path in sorted(clips.items()):
        e2e = time_call(lambda p=path: scorer.score(p), warmup=0, repeats=repeats)

        def dec(p: Path = path) -> None:
            samples, sr = decode(p)
            prepare(samples, sr, rates)

        d = time_call(dec, warmup=1, repeats=max(3, repeats))
        out[f"{sec:g}"] = {"seconds": sec, "score": e2e.to_dict(), "decode_resample": d.to_dict(),
                           "throughput_audio_s_per_s": sec / e2e.median}
    return out


def bench_runtime(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one backend/precision as described in the module docstring; returns a JSON-ready dict.

    `spec` keys: bundle, backend, precision, threads, batches, clips ({seconds: path}), cold_clip,
    windows (.npz), warmup, repeats, e2e_repeats, force_precision.
    """
    warnings: list[str] = []
    rss_start = current_rss_mb()
    batches = [int(b) for b in spec["batches"]]
    t0 = time.perf_counter()
    scorer = Scorer(spec["bundle"], backend=spec["backend"], precision=spec["precision"],
                    threads=int(spec.get("threads", 0)), batch_size=max(batches), verify=False,
                    force_precision=bool(spec.get("force_precision", False)), warn=warnings.append, prefetch=0)
    load_s = time.perf_counter() - t0
    peak_after_load = peak_rss_mb()  # separates session-creation peaks (graph parse, folding) from run peaks
    result: dict[str, Any] = {"backend": scorer.backend, "requested_backend": spec["backend"],
                              "precision": spec["precision"], "warnings": warnings}
    if scorer.backend != spec["backend"]:
        scorer.close()
        result["error"] = f"{spec['backend']} unavailable (fell back to {scorer.backend})"
        return result
    t1 = time.perf_counter()
    first = scorer.score(Path(spec["cold_clip"]))
    first_s = time.perf_counter() - t1
    result["cold_start"] = {"load_s": load_s, "first_score_s": first_s, "total_s": load_s + first_s,
                            "clip": str(spec["cold_clip"])}
    result["rss_after_load_mb"] = current_rss_mb()
    # Scores of the shared window at batch 1: the baselines must agree (same weights, same windows).
    feeds = load_windows(Path(spec["windows"]), [e.name for e in scorer.bundle.encoders], 1)
    _, ens = scorer.pipeline.run(feeds, want_features=False, want_scores=True)
    result["window_mean_scores"] = np.asarray(ens[1][0]).tolist() if ens is not None else None
    result["load_average_before"] = load_average()
    result["batches"] = {str(b): bench_batch(scorer, Path(spec["windows"]), b, int(spec["warmup"]),
                                             int(spec["repeats"])) for b in batches}
    clips = {float(k): Path(v) for k, v in spec["clips"].items()}
    result["lengths"] = bench_lengths(scorer, clips, int(spec.get("e2e_repeats", spec["repeats"])))
    result["load_average_after"] = load_average()
    if scorer.backend == "ort-cpu":
        # The peak again, in this process and right after the timings: on a shared machine the load
        # changes, and the floor should not come from a quieter (or busier) moment than the graphs.
        from .peak import measure_peaks

        result["peak_here"] = measure_peaks([spec["precision"]], int(spec.get("threads", 0)))[spec["precision"]]
    result["first_score_ok"] = first.error is None
    scorer.close()
    result["memory"] = {"rss_start_mb": rss_start, "peak_rss_after_load_mb": peak_after_load,
                        "peak_rss_mb": peak_rss_mb(),
                        "note": "peak RSS (VmHWM) of a process that ran only this backend/precision"}
    return result
