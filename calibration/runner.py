"""Score calibration clips with a bundle's graphs on ONNX Runtime CPU, one graph key (precision) at a time.

The runtime does the work: its ORT pipeline runs the encoder and ensemble graphs and `fold_windows` folds the
window scores per file, so a report measures exactly what `mmmos-score` computes. Calibration only picks graph
keys the runtime would refuse (failed, unchecked, or the TensorRT `int8-trt` graph on the CPU), which is the
point of calibrating them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mmmos.runtime.backend_ort import OrtPipeline
from mmmos.runtime.bundle import Bundle
from mmmos.runtime.errors import NoEnsembleError
from mmmos.runtime.names import GRAPH_KEYS, GraphKey
from mmmos.runtime.windows import fold_windows

from .data import ClipWindows

BASE_PRECISION: GraphKey = "fp32"


def graph_keys_present(bundle: Bundle) -> list[GraphKey]:
    """Every graph key some encoder of the bundle has, fp32 first, in the contract's order."""
    present = {k for e in bundle.encoders for k in e.graphs}
    return [BASE_PRECISION, *(k for k in GRAPH_KEYS if k in present and k != BASE_PRECISION)]


@dataclass
class PrecisionScores:
    """File-level scores of one graph key: ``mean [F, 4]`` on the 0-10 scale, and the graph files that made them."""

    precision: GraphKey
    mean: np.ndarray
    graphs: dict[str, str]


def score_clips(bundle: Bundle, key: GraphKey, clips: Sequence[ClipWindows], threads: int = 0) -> PrecisionScores:
    """File-level mean scores ``[F, 4]`` of every clip with the bundle's `key` graphs (ORT CPU).

    Raises:
        NoEnsembleError: the bundle has no ensemble graph (calibration compares scores).
    """
    if not bundle.has_ensemble:
        raise NoEnsembleError(bundle)
    pipeline = OrtPipeline(bundle, key, device="cpu", threads=threads)
    try:
        means = []
        for clip in clips:
            batch = {name: (clip.wav[name], clip.lengths[name]) for name in clip.wav}
            _, out = pipeline.run(batch, want_features=False)
            assert out is not None  # want_scores defaults to True
            means.append(fold_windows(out[0], clip.weights).mean)
    finally:
        pipeline.close()
    graphs = {e.name: e.graphs[key] for e in bundle.encoders}
    graphs["ensemble"] = bundle.ensemble_graph(key).name
    return PrecisionScores(key, np.stack(means) if means else np.zeros((0, 4)), graphs)
