"""Run a bundle's graphs on ONNX Runtime CPU at one precision: windows -> encoder graphs -> ensemble -> file scores.

This is calibration's own small runner (onnxruntime + numpy only). It reads the manifest directly, so a
precision the runtime would refuse (failed or unchecked) can still be measured, which is the point of
calibrating it. The maths it does outside the graphs is only the contracts' per-file average (window
scores weighted by valid seconds / 10; the mean over members is linear, so averaging the ``mean`` output
equals averaging each member and then taking the mean).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import ClipWindows, EncoderSpec

BASE_PRECISION = "fp32"


def load_manifest(bundle: str | Path) -> dict:
    """The bundle's ``manifest.json`` as a dict (raises a clear error when the folder is not a bundle)."""
    path = Path(bundle) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{bundle} is not a bundle (no manifest.json); export one with mmmos-export first.")
    return json.loads(path.read_text(encoding="utf-8"))


def encoder_specs(manifest: dict) -> list[EncoderSpec]:
    """The encoders of a manifest, in bundle order."""
    return [EncoderSpec(e["name"], int(e["sample_rate"]), int(e["window_samples"])) for e in manifest["encoders"]]


def bundle_precisions(manifest: dict) -> list[str]:
    """Every precision some encoder graph of the bundle has, fp32 first, then in first-seen order."""
    seen: list[str] = [BASE_PRECISION]
    for enc in manifest["encoders"]:
        for p in enc["graphs"]:
            if p not in seen:
                seen.append(p)
    return seen


def graph_for(graphs: dict[str, str], precision: str) -> str:
    """The graph file for ``precision``, falling back to fp32 (e.g. the ensemble has only an fp32 graph)."""
    if precision in graphs:
        return graphs[precision]
    if BASE_PRECISION not in graphs:
        raise ValueError(f"graph set {graphs} has neither {precision} nor fp32; re-export the bundle.")
    return graphs[BASE_PRECISION]


def make_session(path: str | Path, threads: int = 0):
    """An ONNX Runtime CPU session with thread spinning off (several sessions live in one process)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.intra_op_num_threads = threads
    so.log_severity_level = 3  # quantized graphs warn about unused initializers; they are not errors
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


@dataclass
class PrecisionScores:
    """File-level scores of one precision: ``mean [F, 4]`` on the 0-10 scale, and the graphs that produced them."""

    precision: str
    mean: np.ndarray
    graphs: dict[str, str]


class BundleRunner:
    """Sessions for one precision of a bundle: ``encode`` a clip, ``score`` clips at file level."""

    def __init__(self, bundle: str | Path, precision: str, manifest: dict | None = None, threads: int = 0) -> None:
        self.bundle = Path(bundle)
        self.manifest = manifest if manifest is not None else load_manifest(bundle)
        self.precision = precision
        ens = self.manifest.get("ensemble")
        if not ens:
            raise ValueError(f"bundle {bundle} has no ensemble graph, and calibration compares scores; export the "
                             "bundle with members (mmmos-export --members DIR or --random-init).")
        self.graphs: dict[str, str] = {}
        self.sessions = {}
        for enc in self.manifest["encoders"]:
            self.graphs[enc["name"]] = graph_for(enc["graphs"], precision)
            self.sessions[enc["name"]] = make_session(self.bundle / self.graphs[enc["name"]], threads)
        self.graphs["ensemble"] = graph_for(ens["graphs"], precision)
        self.ensemble = make_session(self.bundle / self.graphs["ensemble"], threads)
        self.ensemble_inputs: list[str] = list(ens["inputs"])

    def encode(self, clip: ClipWindows) -> dict[str, np.ndarray]:
        """Every encoder-graph output for the clip's windows, by output name."""
        outputs: dict[str, np.ndarray] = {}
        for enc in self.manifest["encoders"]:
            sess = self.sessions[enc["name"]]
            names = [o.name for o in sess.get_outputs()]
            feed = {"wav": clip.wav[enc["name"]], "lengths": clip.lengths[enc["name"]]}
            values = sess.run(None, {i.name: feed[i.name] for i in sess.get_inputs()})
            outputs.update(zip(names, values, strict=True))
        return outputs

    def run_ensemble(self, outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ensemble graph alone: ``(scores [B, M, 4], mean [B, 4], std [B, 4])``."""
        feed = {name: outputs[name].astype(np.float32, copy=False) for name in self.ensemble_inputs}
        scores, mean, std = self.ensemble.run(["scores", "mean", "std"], feed)
        return scores, mean, std

    def file_mean(self, clip: ClipWindows) -> np.ndarray:
        """The file's ``mean [4]`` score: window means weighted by valid seconds / 10."""
        _, mean, _ = self.run_ensemble(self.encode(clip))
        w = clip.weights.astype(np.float64)
        return (mean.astype(np.float64) * w[:, None]).sum(axis=0) / w.sum()

    def score(self, clips: Sequence[ClipWindows]) -> PrecisionScores:
        """File-level mean scores ``[F, 4]`` of every clip."""
        mean = np.stack([self.file_mean(c) for c in clips]) if clips else np.zeros((0, 4))
        return PrecisionScores(self.precision, mean, dict(self.graphs))
