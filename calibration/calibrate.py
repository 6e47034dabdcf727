"""Calibrate a bundle: INT8 encoder graphs from real windows, then every precision measured against fp32.

``calibrate_bundle`` is what ``mmmos-calibrate`` runs. Steps:
1. decode DATA into windows (``data``) and, unless ``--calib-data`` names other audio, split it: every other
   file calibrates the INT8 ranges, the rest is held out for the check (``--no-hold-out`` uses all for both);
2. optionally quantize each encoder body to INT8 for ONNX Runtime (``int8_ort``) and the symmetric QDQ
   variant for TensorRT (``int8_trt``; by default only where tensorrt and a GPU exist, else skipped with the
   reason in the report), calibrated on windows of the calibration audio;
3. score DATA at every precision the bundle has (``runner``) and compare each with fp32 (``reports``) on the
   held-out files (the status) and on the calibration files (reported beside it);
4. write statuses into the manifest's ``precisions``, the details into report.json's ``calibration``
   block, target statistics and conformal intervals when a labelled manifest is given (``stats``,
   ``uncertainty_fit``), the out-of-domain reference from DATA, and refresh the sha256 list.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmmos.runtime.bundle import Bundle
from mmmos.runtime.manifest import graph_files, read_manifest
from mmmos.runtime.precision_gate import Thresholds
from mmmos.runtime.trt_engine import samples_ranges
from mmmos.runtime.uncertainty import store

from . import bundle_io, data, int8_ort, reports, runner, stats, uncertainty_fit

INT8 = "int8"
INT8_TRT = "int8-trt"


@dataclass
class CalibrationOptions:
    """Knobs of one calibration run (the CLI maps its flags onto these)."""

    max_files: int | None = None
    thresholds: dict[str, Thresholds] = field(default_factory=dict)
    int8: bool = True
    int8_method: str = "minmax"
    calib_data: str | Path | None = None
    calib_windows: int = 64
    per_channel: bool = True
    reduce_range: bool = False
    exclude_patterns: tuple[str, ...] = ()
    include_conv: bool = True  # body Convs too: MuQ's conformer conv modules are most of its int8 gain
    quantize_feature_extractor: bool = False  # WavLM FE convs 1..6 too: fastest, but moved random features by 43%
    trt_int8: bool | None = None  # None: only where tensorrt and a GPU exist; True: write them anyway (CPU is enough)
    targets: str | Path | None = None
    threads: int = 0
    hold_out: bool = True  # judge precisions on files the INT8 ranges were not calibrated on
    ood_reference: bool = True  # store DATA's fused embeddings as the out-of-domain reference


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_int8_graphs(
    bundle: Path, manifest: dict, clips: list[data.ClipWindows], opts: CalibrationOptions,
    log: Callable[[str], None] = print, check: list[data.ClipWindows] | None = None,
) -> tuple[dict, list[str]]:
    """Quantize every encoder's fp32 graph into ``<name>.int8.onnx`` (and ``.int8-trt.onnx`` when asked).

    Sets ``graphs["int8"]`` (and ``graphs["int8-trt"]``) in the manifest's encoder entries; the ensemble
    keeps its fp32 graph. Where TensorRT and a GPU are usable, the ``int8-trt`` graphs' plans are built into the
    bundle's ``engines/`` by the runtime's engine module. Returns the quantization report (per encoder, whether
    the TensorRT variant was written or why not, and its engines) and the files written (plans are not listed:
    they are keyed by graph hash).
    """
    encoders: dict = {}
    written: list[str] = []
    from mmmos.runtime.trt_engine import unavailable_reason

    why = unavailable_reason()  # the one GPU probe: TensorRT INT8 graphs by default, and their plans, need it
    trt_int8 = why is None if opts.trt_int8 is None else opts.trt_int8
    if not trt_int8 and why is not None:
        log(f"int8-trt: skipped: {why}")
    info: dict = {"encoders": encoders,
                  "tensorrt": {"written": bool(trt_int8), "skipped": None if trt_int8 else why or "--no-trt-int8"}}
    trt_graphs: list[str] = []
    for enc in manifest["encoders"]:
        name = enc["name"]
        src = bundle / enc["graphs"]["fp32"]
        feeds = list(data.calibration_feeds(clips, name, opts.calib_windows))
        t0 = time.perf_counter()
        res = int8_ort.quantize_encoder(
            src, bundle / f"{name}.int8.onnx", int8_ort.WindowReader(feeds), mode="static",
            method=opts.int8_method, per_channel=opts.per_channel, reduce_range=opts.reduce_range,
            exclude_patterns=opts.exclude_patterns, include_conv=opts.include_conv, log=log, threads=opts.threads,
            quantize_feature_extractor=opts.quantize_feature_extractor,  # and the pooled error on check windows:
            check_feeds=list(data.calibration_feeds(check or clips, name, int8_ort.FEATURE_CHECK_WINDOWS)),
        )
        enc["graphs"][INT8] = res.output.name
        written += graph_files(bundle, res.output.name)
        encoders[name] = {INT8: {**res.to_dict(), "seconds": round(time.perf_counter() - t0, 2)}}
        log(f"int8: {name}: {len(res.quantized)} nodes quantized (static QDQ), "
            f"{len(res.kept_frontend)} front-end kept fp32 -> {res.output.name}")
        if trt_int8:
            from .int8_trt import write_trt_qdq

            trt = write_trt_qdq(src, bundle / f"{name}.int8-trt.onnx", feeds, method=opts.int8_method,
                                exclude_patterns=opts.exclude_patterns, include_conv=opts.include_conv,
                                quantize_feature_extractor=opts.quantize_feature_extractor)
            enc["graphs"][INT8_TRT] = trt.output.name
            written += graph_files(bundle, trt.output.name)
            trt_graphs.append(trt.output.name)
            encoders[name][INT8_TRT] = trt.to_dict()
            log(f"int8-trt: {name}: symmetric QDQ graph for TensorRT -> {trt.output.name}")
    if trt_graphs and why is not None:
        info["tensorrt"]["engines"] = {"status": "skipped", "reason": why}  # graphs forced on a machine without GPU
    elif trt_graphs:
        from .int8_trt import build_int8_plans

        # the ensemble runs its fp32 graph under int8 (as under fp16 from mmmos-export: that plan is kept)
        ensemble = (manifest.get("ensemble") or {}).get("graphs", {}).get("fp32")
        specs = Bundle.from_manifest(bundle, manifest).encoders
        info["tensorrt"]["engines"] = build_int8_plans(bundle, trt_graphs + ([ensemble] if ensemble else []), log,
                                                       samples=samples_ranges(specs, INT8_TRT))
    return info, written


def calibrate_bundle(
    bundle: str | Path, data_path: str | Path, opts: CalibrationOptions | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the whole calibration on ``bundle`` with audio from ``data_path``; returns the calibration block.

    The manifest's ``precisions`` get ``passed``/``failed`` for every precision measured (fp32 is the
    reference and always passes); report.json gets the per-axis numbers.
    """
    opts = opts or CalibrationOptions()
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    specs = Bundle.from_manifest(bundle, manifest).encoders
    files = data.list_audio(data_path, opts.max_files)
    log(f"decoding {len(files)} files from {data_path}")
    clips, errors = data.load_clips(files, specs)
    for err in errors:
        log(f"skipped {err['path']}: {err['error']}")

    n_windows = sum(c.n_windows for c in clips)
    calib_idx, check_idx, how = _split(len(clips), opts)
    block: dict = {"created": _now(), "data": str(data_path), "n_files": len(clips), "n_windows": n_windows,
                   "skipped": errors, "held_out": how != "in-sample", "split": how,
                   "n_check_files": int(check_idx.size)}
    log(f"precisions are judged on {check_idx.size} files ({how})")
    written: list[str] = []
    if opts.int8:
        calib_clips = [clips[i] for i in calib_idx]
        if opts.calib_data is not None:
            calib_clips, _ = data.load_clips(data.list_audio(opts.calib_data, opts.max_files), specs)
        block["int8"], written = make_int8_graphs(bundle, manifest, calib_clips, opts, log,
                                                  [clips[i] for i in check_idx])
        block["calibration_data"] = str(opts.calib_data or data_path)

    loaded = Bundle.from_manifest(bundle, manifest)  # with the graphs just written
    precisions = runner.graph_keys_present(loaded)
    results: dict[str, runner.PrecisionScores] = {}
    block["score_seconds"] = {}  # wall time to score DATA per precision (sessions included): a rough speed hint
    for p in precisions:
        t0 = time.perf_counter()
        base = p == runner.BASE_PRECISION
        results[p] = runner.score_clips(loaded, p, clips, opts.threads, embeddings=base and opts.ood_reference)
        block["score_seconds"][p] = round(time.perf_counter() - t0, 2)
        log(f"scored {len(clips)} files at {p} in {block['score_seconds'][p]:.1f} s")
    _judge(manifest, block, results, precisions, (check_idx, calib_idx, how), opts, log)
    reference = results[runner.BASE_PRECISION]
    block["fp32_scores"] = {"files": [c.path for c in clips], "mean": reference.mean.round(5).tolist(),
                            "check_files": check_idx.tolist()}

    targets = opts.targets
    if targets is None and stats.has_labels(Path(data_path)):
        targets = data_path  # DATA is itself a labelled manifest
    conformal = None
    if targets is not None:
        ts = stats.target_stats(targets)
        manifest["target_stats"] = ts
        block["target_stats"] = {**ts, "members_with_other_stats": stats.members_mismatch(manifest, ts)}
        log(f"target stats from {targets}: mean {ts['mean']}, std {ts['std']}")
        try:
            conformal, block["conformal"] = uncertainty_fit.fit_intervals(loaded, targets, opts.threads, None, log)
        except ValueError as exc:  # too few labelled clips: the bundle keeps scoring, without intervals
            block["conformal"] = {"skipped": str(exc)}
            log(f"conformal intervals skipped: {exc}")
    ood = None
    if opts.ood_reference and len(clips) >= 10:
        ood, block["ood_reference"] = uncertainty_fit.fit_reference(reference, log)
    elif opts.ood_reference:
        block["ood_reference"] = {"skipped": f"{len(clips)} files; the reference needs at least 10"}
    written += store(bundle, manifest, conformal, ood)
    bundle_io.save_calibration(bundle, manifest, block, written)
    return block


def _split(n: int, opts: CalibrationOptions) -> tuple[np.ndarray, np.ndarray, str]:
    """(files that calibrate INT8, files that judge the precisions, how they were chosen)."""
    every = np.arange(n)
    if opts.calib_data is not None:
        return every, every, "held out: INT8 calibrated on --calib-data"
    if not opts.hold_out or not opts.int8 or n < 2:  # nothing calibrated on DATA, asked not to, or one file
        return every, every, "in-sample"
    return every[0::2], every[1::2], "held out: every other DATA file calibrated INT8, the rest judged it"


def _judge(manifest: dict, block: dict, results: dict[str, runner.PrecisionScores], precisions: list[str],
           split: tuple[np.ndarray, np.ndarray, str], opts: CalibrationOptions, log: Callable[[str], None]) -> None:
    """Judge every precision against fp32 on the check files (the status) and report the calibration files too."""
    check_idx, calib_idx, how = split
    checked = _now()
    block["precisions"] = {}
    manifest.setdefault("precisions", {})
    base = manifest["precisions"].get(runner.BASE_PRECISION) or {}  # keep the exporter's parity numbers
    manifest["precisions"][runner.BASE_PRECISION] = {**base, "status": "passed", "reference": True, "checked": checked}
    reference = results[runner.BASE_PRECISION]
    for p in precisions[1:]:
        limits = reports.thresholds_for(p, opts.thresholds)
        got = results[p]
        rep = reports.precision_report(p, reference.mean[check_idx], got.mean[check_idx], limits, got.graphs)
        rep["judged_on"] = how
        if how != "in-sample":  # the same gate on the files INT8 was calibrated on, for comparison
            rep["on_calibration_files"] = reports.precision_report(
                p, reference.mean[calib_idx], got.mean[calib_idx], limits, got.graphs)
        block["precisions"][p] = rep
        manifest["precisions"][p] = reports.precision_entry(rep, checked)
        why = "" if rep["status"] == "passed" else " (" + "; ".join(rep["reasons"]) + ")"
        rank = "not ranked: the set is too narrow" if rep["srcc"] is None else f"min SRCC {rep['srcc']:.4g}"
        log(f"{p}: {rep['status']}: max abs {rep['max_abs']:.4g}, mean abs {rep['mean_abs']:.4g}, {rank}{why}")
