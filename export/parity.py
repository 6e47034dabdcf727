"""Parity on probe audio: PyTorch vs ONNX Runtime fp32, and mixed fp16 vs fp32.

Scores are compared on the 0-10 scale. fp32 passes when every member score (``scores [P, M, 4]``) is within
1e-3 of PyTorch's. fp16 is judged by the documented precision gate (`mmmos.runtime.precision_gate`, the one
`mmmos-calibrate` uses) on the probe windows' ensemble scores ``mean [P, 4]``: max abs <= 0.05 per axis; with
a handful of synthetic probes the order part cannot be judged, which the report says (calibrate on real
audio for that). A bundle without members compares encoder outputs instead, scaled by their magnitude,
and leaves fp16 "unchecked".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mmmos.export.probes import DEFAULT_PROBES, Probe, probe_batch
from mmmos.runtime.ort_session import make_session
from mmmos.runtime.precision_gate import compare as gate_compare
from mmmos.runtime.precision_gate import judge, thresholds_for

FP32_TOLERANCE = 1e-3


@dataclass
class GraphSet:
    """Paths of one precision's graphs: encoder name -> graph, plus the ensemble graph (or None)."""

    encoders: dict[str, Path]
    ensemble: Path | None


def probe_inputs(
    rates: Mapping[str, tuple[int, int]], probes: tuple[Probe, ...] = DEFAULT_PROBES, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Probe windows per encoder, ``rates`` mapping name -> (sample_rate, window_samples)."""
    return {name: probe_batch(int(sr), int(n), probes, seed) for name, (sr, n) in rates.items()}


@torch.no_grad()
def run_torch(
    pooled: Mapping[str, nn.Module],
    ensemble: nn.Module | None,
    inputs: Mapping[str, tuple[np.ndarray, np.ndarray]],
) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, ...] | None]:
    """Eager reference: every ``PooledEncoder`` on its probes, then the ensemble on their outputs."""
    outputs: dict[str, np.ndarray] = {}
    tensors: dict[str, torch.Tensor] = {}
    for name, module in pooled.items():
        wav, lengths = inputs[name]
        result = module(torch.from_numpy(wav), torch.from_numpy(lengths))
        for out_name, value in zip(module.output_names, result, strict=True):
            tensors[out_name] = value
            outputs[out_name] = value.numpy()
    if ensemble is None:
        return outputs, None
    scores = ensemble(tensors)
    return outputs, tuple(s.numpy() for s in scores)


def run_onnx(
    graphs: GraphSet, inputs: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, ...] | None]:
    """The same pipeline on ONNX Runtime CPU: encoder graphs, then the ensemble graph."""
    outputs: dict[str, np.ndarray] = {}
    for name, path in graphs.encoders.items():
        wav, lengths = inputs[name]
        sess = make_session(path)
        names = [o.name for o in sess.get_outputs()]
        for out_name, value in zip(names, sess.run(None, {"wav": wav, "lengths": lengths}), strict=True):
            outputs[out_name] = value
    if graphs.ensemble is None:
        return outputs, None
    sess = make_session(graphs.ensemble)
    feed = {i.name: outputs[i.name] for i in sess.get_inputs()}
    return outputs, tuple(sess.run(None, feed))


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman correlation of two flattened arrays (None when either is constant)."""
    from scipy.stats import spearmanr

    a, b = a.ravel(), b.ravel()
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    rho = float(spearmanr(a, b).statistic)
    return None if math.isnan(rho) else rho


def _output_diffs(ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Max abs difference per encoder output, relative to the reference's magnitude (at least 1)."""
    return {
        k: _max_abs(ref[k], got[k]) / max(1.0, float(np.max(np.abs(ref[k]))) if ref[k].size else 1.0)
        for k in ref
        if k in got
    }


def compare(
    ref: tuple[dict[str, np.ndarray], tuple[np.ndarray, ...] | None],
    got: tuple[dict[str, np.ndarray], tuple[np.ndarray, ...] | None],
    tolerance: float,
) -> dict[str, object]:
    """Compare two pipeline runs: scores when there is an ensemble, else the encoder outputs."""
    ref_out, ref_scores = ref
    got_out, got_scores = got
    diffs = _output_diffs(ref_out, got_out)
    result: dict[str, object] = {"tolerance": tolerance, "encoder_outputs_rel_max_abs": diffs}
    if ref_scores is not None and got_scores is not None:
        max_abs = max(_max_abs(r, g) for r, g in zip(ref_scores, got_scores, strict=True))
        result |= {
            "compared": "scores",
            "max_abs": max_abs,
            "mean_max_abs": _max_abs(ref_scores[1], got_scores[1]),
            "srcc": _spearman(ref_scores[0], got_scores[0]),
        }
    else:
        max_abs = max(diffs.values(), default=0.0)
        result |= {"compared": "encoder_outputs", "max_abs": max_abs, "srcc": None}
    finite = all(np.all(np.isfinite(v)) for v in got_out.values()) and (
        got_scores is None or all(np.all(np.isfinite(s)) for s in got_scores)
    )
    result["finite"] = bool(finite)
    result["status"] = "passed" if finite and max_abs <= tolerance else "failed"
    return result


@torch.no_grad()
def run_torch_ensemble(ensemble: nn.Module, outputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """The eager ensemble on given encoder outputs (used when the encoder graphs are reused as ONNX)."""
    scores = ensemble({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in outputs.items()})
    return tuple(s.numpy() for s in scores)


def parity_report(
    inputs: Mapping[str, tuple[np.ndarray, np.ndarray]],
    reference: tuple[dict[str, np.ndarray], tuple[np.ndarray, ...] | None],
    fp32: GraphSet,
    fp16: GraphSet | None,
    probes: tuple[Probe, ...] = DEFAULT_PROBES,
) -> dict[str, object]:
    """The parity section of report.json: the eager reference vs ORT fp32, and ORT fp16 vs ORT fp32."""
    ort32 = run_onnx(fp32, inputs)
    report: dict[str, object] = {
        "probes": [{"name": p.name, "valid_fraction": p.valid_fraction} for p in probes],
        "fp32": compare(reference, ort32, FP32_TOLERANCE),
    }
    if fp16 is not None:
        report["fp16"] = fp16_gate(ort32, run_onnx(fp16, inputs))
    return report


def fp16_gate(
    ort32: tuple[dict[str, np.ndarray], tuple[np.ndarray, ...] | None],
    ort16: tuple[dict[str, np.ndarray], tuple[np.ndarray, ...] | None],
) -> dict[str, object]:
    """The fp16 block: the precision gate on the probes' ensemble scores, or "unchecked" without an ensemble."""
    limits = thresholds_for("fp16")
    result: dict[str, object] = {"thresholds": limits.to_dict(), "checked_on": "probe windows (synthetic)",
                                 "encoder_outputs_rel_max_abs": _output_diffs(ort32[0], ort16[0])}
    if ort32[1] is None or ort16[1] is None:
        return result | {"status": "unchecked", "max_abs": max(result["encoder_outputs_rel_max_abs"].values(),
                                                                 default=0.0), "srcc": None,
                         "note": "no ensemble to score: mmmos-calibrate checks fp16 once members are added"}
    ref, got = ort32[1][1].astype(np.float64), ort16[1][1].astype(np.float64)  # mean [P, 4]
    per_axis = gate_compare(ref, got)
    passed, reasons, unranked = judge(per_axis, limits)
    finite = bool(np.all(np.isfinite(got)))
    return result | {
        "status": "passed" if passed and finite else "failed",
        "max_abs": max(m.max_abs for m in per_axis.values()),
        "srcc": None,
        "too_narrow_to_rank": unranked,
        "reasons": reasons if finite else [*reasons, "non-finite fp16 scores"],
        "per_axis": {axis: m.to_dict() for axis, m in per_axis.items()},
    }
