"""Export a bundle: encoder graphs, ensemble graph, fp16 variants, checks, parity, engines, manifest.

``export_bundle`` is the one entry point the CLI calls once a source (``mmmos.export.sources``) has
built the torch encoders and members. Long steps log progress to stderr through ``log``.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from mmmos.export import bundle_writer as bw
from mmmos.export.checks import check_graph
from mmmos.export.mixed_precision import convert_to_mixed_fp16, fp16_summary
from mmmos.export.onnx_export import export_encoder, export_ensemble, save_model
from mmmos.export.op_allowlist import load_allowlist
from mmmos.export.parity import GraphSet, parity_report, probe_inputs, run_onnx, run_torch, run_torch_ensemble
from mmmos.export.tensorrt_build import BatchProfile, build_engines, fp16_graphs
from mmmos.models.ensemble import Ensemble, FlatEnsemble
from mmmos.models.fusion import PooledEncoder
from mmmos.models.members import Member
from mmmos.runtime.manifest import (
    FORMAT_VERSION,
    REPORT_NAME,
    EncoderSpec,
    verify_files,
    write_json,
    write_manifest,
)
from mmmos.runtime.trt_engine import samples_ranges

Log = Callable[[str], None]


class ExportCheckError(RuntimeError):
    """A graph failed onnx.checker, the TensorRT op allow-list or fp32 parity; report.json says which."""


def stderr_log(message: str) -> None:
    """Progress line on stderr (stdout stays free for machine-readable output)."""
    print(f"[mmmos-export {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class ReusedEncoders:
    """Encoder graphs taken from an existing bundle (``--encoders-from``)."""

    bundle_dir: Path
    manifest: dict[str, Any]


@dataclass
class ExportSpec:
    """What to export: torch encoders (bundle order) or reused graphs, members, and provenance."""

    encoders: dict[str, nn.Module]
    members: list[Member]
    provenance: dict[str, Any]
    untrained: bool
    member_meta: list[dict[str, Any]] = field(default_factory=list)
    reuse: ReusedEncoders | None = None
    steps: int = 50
    frames: bool = False
    """Export frame outputs for every encoder, not only those a blstm-t member reads (for feature caches)."""
    ood_cache: Path | None = None
    """A training feature cache (`mmmos-train cache`) whose clips become the out-of-domain reference."""


def _frames_needed(members: list[Member]) -> set[str]:
    """Encoders whose frame outputs some member reads (``blstm-t``)."""
    return {e for m in members if m.config.aggregator == "blstm-t" for e in m.config.encoders}


def _write_fp16(fp32_path: Path, fp16_path: Path) -> tuple[list[Path], dict[str, int]]:
    """Convert a saved fp32 graph to the mixed fp16 graph beside it."""
    model = onnx.load(str(fp32_path))  # loads external data too: the converter needs the weights
    mixed = convert_to_mixed_fp16(model)
    return save_model(mixed, fp16_path), fp16_summary(mixed)


def _export_encoders(
    out: Path, spec: ExportSpec, fp16: bool, log: Log, report: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, PooledEncoder]]:
    """Export every torch encoder (fp32 + mixed fp16); returns manifest entries and the pooled modules."""
    frames = set(spec.encoders) if spec.frames else _frames_needed(spec.members)
    entries, pooled = [], {}
    for name, enc in spec.encoders.items():
        if hasattr(enc, "bake_weight_norm"):
            enc.bake_weight_norm()  # weight norm recomputed at run time would add ReduceL2 etc. to the graph
        module = PooledEncoder(enc, frames=name in frames, steps=spec.steps).eval()
        pooled[name] = module
        start = time.perf_counter()
        log(f"exporting {name} encoder graph (fp32) ...")
        rule = getattr(enc, "length_rule", None)  # fed about the valid length: a dynamic samples axis
        _, outputs = export_encoder(module, out / f"{name}.fp32.onnx", dynamic_samples=rule is not None)
        graphs = {"fp32": f"{name}.fp32.onnx"}
        if fp16:
            log(f"converting {name} to mixed fp16 ...")
            _, summary = _write_fp16(out / graphs["fp32"], out / f"{name}.fp16.onnx")
            graphs["fp16"] = f"{name}.fp16.onnx"
            report.setdefault("fp16_conversion", {})[name] = summary
        report.setdefault("timings_s", {})[f"export_{name}"] = round(time.perf_counter() - start, 2)
        entries.append({
            "name": name, "sample_rate": int(enc.sample_rate), "window_samples": int(enc.window_samples),
            "graphs": graphs, "inputs": ["wav", "lengths"], "outputs": outputs, "frames": name in frames,
            **({"steps": spec.steps} if name in frames else {}),
            **({"lengths": rule.to_dict()} if rule is not None else {}),
        })
    return entries, pooled


def _reuse_encoders(out: Path, spec: ExportSpec, log: Log) -> list[dict[str, Any]]:
    """Copy the encoder graphs of an existing bundle (sha256 verified) and return its encoder entries."""
    assert spec.reuse is not None
    src, manifest = spec.reuse.bundle_dir, spec.reuse.manifest
    needed = {e for m in spec.members for e in m.config.encoders}
    frames = _frames_needed(spec.members)
    entries = []
    for entry in manifest["encoders"]:
        if needed and entry["name"] not in needed:
            continue
        if entry["name"] in frames and not entry.get("frames"):
            raise ValueError(f"a blstm-t member needs {entry['name']} frames, but {src} was exported without "
                             "them; re-export the encoders with such members.")
        names = [g for g in entry["graphs"].values()]
        names += [n + ".data" for n in names if (Path(src) / (n + ".data")).is_file()]
        verify_files(src, manifest, names)
        for n in names:
            log(f"copying {n} from {src} ...")
            shutil.copy2(Path(src) / n, out / n)
        entries.append(dict(entry))
    return entries


def _export_ensemble(
    out: Path, members: list[Member], examples: dict[str, np.ndarray], fp16: bool, log: Log, report: dict[str, Any]
) -> tuple[Ensemble, dict[str, Any]]:
    """Export the ensemble graph (fp32 + mixed fp16) with encoder outputs as examples."""
    ensemble = Ensemble(members).eval()
    tensors = [torch.from_numpy(np.ascontiguousarray(examples[n])) for n in ensemble.input_names]
    log(f"exporting the ensemble graph ({len(members)} members) ...")
    export_ensemble(FlatEnsemble(ensemble), ensemble.input_names, tensors, out / "ensemble.fp32.onnx")
    graphs = {"fp32": "ensemble.fp32.onnx"}
    if fp16:
        # The fp16 precision keeps the ensemble graph in fp32: it is a tiny share of the compute, and fp16 heads
        # and de-normalisation would round every score to fp16 steps (0.004 at 4-8 on the 0-10 scale).
        graphs["fp16"] = "ensemble.fp32.onnx"
        report.setdefault("fp16_conversion", {})["ensemble"] = {"kept_fp32": True}
    return ensemble, {"graphs": graphs, "inputs": list(ensemble.input_names), "outputs": ["scores", "mean", "std"]}


def _graph_set(encoders: list[dict[str, Any]], ensemble: dict[str, Any] | None, out: Path, p: str) -> GraphSet:
    return GraphSet(
        encoders={e["name"]: out / e["graphs"][p] for e in encoders},
        ensemble=out / ensemble["graphs"][p] if ensemble else None,
    )


def _store_ood_reference(out: Path, cache: Path, encoders: list[dict[str, Any]], extra: dict[str, Any],
                         log: Log) -> dict[str, Any]:
    """Fit the out-of-domain reference on a training cache's clips and store it (sets `extra["uncertainty"]`)."""
    from mmmos.runtime.uncertainty import fit_ood, store
    from mmmos.training.cache_store import CachedSet

    pooled = [o for e in encoders for o in e["outputs"] if o.endswith("_pooled")]
    log(f"fitting the out-of-domain reference on the clips of {cache} ...")
    ref = fit_ood(CachedSet(cache).clip_embeddings(pooled))
    store(out, extra, ood=ref)
    return {"cache": str(cache), "n": ref.n, "threshold": ref.threshold}


def _fed_probes(encoders: list[dict[str, Any]], probes: dict[str, tuple[np.ndarray, np.ndarray]]
               ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Probe windows as the runtime feeds them: zero-padded to a full window's fed length where an encoder has a
    length rule (its graph's samples axis takes lengths on the rule's grid)."""
    out = dict(probes)
    for e in encoders:
        spec = EncoderSpec.from_dict(e)
        wav, lengths = probes[spec.name]
        if spec.lengths is not None and wav.shape[1] != spec.max_samples:
            fed = np.zeros((wav.shape[0], spec.max_samples), np.float32)
            fed[:, : wav.shape[1]] = wav
            out[spec.name] = (fed, lengths)
    return out


def _member_entries(spec: ExportSpec) -> list[dict[str, Any]]:
    entries = []
    for i, m in enumerate(spec.members):
        meta = spec.member_meta[i] if i < len(spec.member_meta) else {}
        cfg = m.config
        entries.append({
            "name": cfg.name or f"member-{i:02d}", "aggregator": cfg.aggregator, "loss": cfg.loss,
            "encoders": list(cfg.encoders), "dev_scores": meta.get("dev_scores", {}), "config": cfg.to_dict(),
        })
    return entries


def export_bundle(
    out_dir: Path,
    spec: ExportSpec,
    *,
    force: bool = False,
    fp16: bool = True,
    trt: bool | None = None,
    profile: BatchProfile | None = None,
    log: Log = stderr_log,
) -> dict[str, Any]:
    """Write the bundle for ``spec`` into ``out_dir`` and return its manifest.

    Raises ExportCheckError (after writing report.json, without a manifest) when a graph fails
    onnx.checker or the op allow-list, or fp32 parity is off by more than 1e-3.
    ``trt=None`` builds engines when tensorrt and a GPU are present; False skips them.
    """
    start = time.perf_counter()
    out = bw.prepare_out_dir(out_dir, force)
    report: dict[str, Any] = {"format_version": FORMAT_VERSION}
    if spec.reuse is not None:
        encoders = _reuse_encoders(out, spec, log)
        fp16 = fp16 and all("fp16" in e["graphs"] for e in encoders)
        pooled: dict[str, PooledEncoder] = {}
    else:
        encoders, pooled = _export_encoders(out, spec, fp16, log, report)

    inputs = _fed_probes(encoders, probe_inputs({e["name"]: (e["sample_rate"], e["window_samples"])
                                                 for e in encoders}))
    log("running the eager reference on probe audio ...")
    if pooled:
        ref_outputs, _ = run_torch(pooled, None, inputs)
    else:
        ref_outputs, _ = run_onnx(_graph_set(encoders, None, out, "fp32"), inputs)

    ensemble_entry = None
    ref_scores = None
    if spec.members:
        ensemble, ensemble_entry = _export_ensemble(out, spec.members, ref_outputs, fp16, log, report)
        ref_scores = run_torch_ensemble(ensemble, ref_outputs)

    log("checking graphs (onnx.checker, TensorRT op allow-list) ...")
    files = [g for e in [*encoders, ensemble_entry] if e for g in e["graphs"].values()]
    checks = [check_graph(out / f) for f in files]
    report["checks"] = [c.to_dict() for c in checks]
    log(f"checks: {sum(c.passed for c in checks)}/{len(checks)} graphs pass onnx.checker and the TensorRT op "
        f"allow-list (TensorRT {load_allowlist().trt_version})")
    for c in checks:
        if not c.passed:
            log(f"  {c.file}: {'; '.join(c.problems) or c.checker}")
    log("parity on probe audio (PyTorch vs ONNX Runtime fp32; fp16 vs fp32) ...")
    report["parity"] = parity_report(
        inputs, (ref_outputs, ref_scores), _graph_set(encoders, ensemble_entry, out, "fp32"),
        _graph_set(encoders, ensemble_entry, out, "fp16") if fp16 else None,
    )
    fp32_par = report["parity"]["fp32"]
    precisions: dict[str, dict[str, Any]] = {"fp32": {"status": fp32_par["status"], "max_abs": fp32_par["max_abs"]}}
    if fp16:
        p16 = report["parity"]["fp16"]
        precisions["fp16"] = {"status": p16["status"], "max_abs": p16["max_abs"], "srcc": p16["srcc"]}
    report["precisions"] = precisions
    for name, p in precisions.items():
        log(f"parity {name}: {p['status']} (max abs {p['max_abs']:.3g}"
            + (f", Spearman {p['srcc']:.4f})" if p.get("srcc") is not None else ")"))

    failed = [f"{c.file}: {'; '.join(c.problems) or c.checker}" for c in checks if not c.passed]
    if fp32_par["status"] != "passed":
        failed.append(f"fp32 parity max abs {fp32_par['max_abs']:.3g} > {fp32_par['tolerance']}")
    if failed:
        report["status"] = "failed"
        write_json(out / REPORT_NAME, report)
        raise ExportCheckError("export checks failed (see report.json): " + " | ".join(failed))

    if trt is not False and fp16:
        specs = [EncoderSpec.from_dict(e) for e in encoders]
        report["tensorrt"] = build_engines(out, fp16_graphs(encoders, ensemble_entry), profile or BatchProfile(), log,
                                           samples=samples_ranges(specs, "fp16"))
    else:
        report["tensorrt"] = {"status": "skipped", "reason": "--no-trt" if trt is False else "no fp16 graphs"}
    report["status"] = "passed"
    report.setdefault("timings_s", {})["total"] = round(time.perf_counter() - start, 2)
    extra: dict[str, Any] = {}
    if spec.ood_cache is not None:
        report["ood_reference"] = _store_ood_reference(out, spec.ood_cache, encoders, extra, log)
    write_json(out / REPORT_NAME, report)
    manifest = write_manifest(
        out, encoders=[EncoderSpec.from_dict(e) for e in encoders], ensemble=ensemble_entry,
        members=_member_entries(spec), precisions=precisions, provenance=spec.provenance, untrained=spec.untrained,
        extra=extra,
    )
    summary = f"fp32 parity max abs {fp32_par['max_abs']:.2e}"
    if fp16:
        summary += f", fp16 {precisions['fp16']['status']} (max abs {precisions['fp16']['max_abs']:.3g})"
    log(f"bundle written to {out}: {len(files)} graphs, checks passed, {summary}, "
        f"TensorRT {report['tensorrt']['status']}")
    return manifest
