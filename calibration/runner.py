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
from mmmos.runtime.uncertainty import fused_embedding
from mmmos.runtime.windows import fold_windows

from .data import ClipWindows

BASE_PRECISION: GraphKey = "fp32"


def graph_keys_present(bundle: Bundle) -> list[GraphKey]:
    """Every graph key some encoder of the bundle has, fp32 first, in the contract's order."""
    present = {k for e in bundle.encoders for k in e.graphs}
    return [BASE_PRECISION, *(k for k in GRAPH_KEYS if k in present and k != BASE_PRECISION)]


@dataclass
class PrecisionScores:
    """File-level scores of one graph key on the 0-10 scale: ensemble ``mean [F, 4]`` and spread ``std [F, 4]``,
    the graph files that made them, and (when asked) each file's fused embedding ``[F, E]``."""

    precision: GraphKey
    mean: np.ndarray
    std: np.ndarray
    graphs: dict[str, str]
    embeddings: np.ndarray | None = None

    def subset(self, index: np.ndarray) -> PrecisionScores:
        """The scores of some of the files."""
        emb = None if self.embeddings is None else self.embeddings[index]
        return PrecisionScores(self.precision, self.mean[index], self.std[index], self.graphs, emb)


def score_clips(bundle: Bundle, key: GraphKey, clips: Sequence[ClipWindows], threads: int = 0,
                embeddings: bool = False) -> PrecisionScores:
    """File-level scores of every clip with the bundle's `key` graphs (ORT CPU), folded as the runtime does.

    Raises:
        NoEnsembleError: the bundle has no ensemble graph (calibration compares scores).
    """
    if not bundle.has_ensemble:
        raise NoEnsembleError(bundle)
    pooled = bundle.pooled_outputs()
    pipeline = OrtPipeline(bundle, key, device="cpu", threads=threads)
    means, stds, embs = [], [], []
    try:
        for clip in clips:
            batch = {name: (clip.wav[name], clip.lengths[name]) for name in clip.wav}
            feats, out = pipeline.run(batch, want_features=embeddings)
            assert out is not None  # want_scores defaults to True
            folded = fold_windows(out[0], clip.weights)
            means.append(folded.mean)
            stds.append(folded.std)
            if embeddings:
                w = clip.weights.astype(np.float64)
                embs.append(np.tensordot(w, fused_embedding(feats, pooled), axes=1) / w.sum())
    finally:
        pipeline.close()
    graphs = {e.name: e.graphs[key] for e in bundle.encoders}
    graphs["ensemble"] = bundle.ensemble_graph(key).name
    empty = np.zeros((0, 4))
    return PrecisionScores(key, np.stack(means) if means else empty, np.stack(stds) if stds else empty, graphs,
                           np.stack(embs) if embs else None)
