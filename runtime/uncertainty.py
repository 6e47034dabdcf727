"""Calibrated score intervals (split conformal) and the out-of-domain score: fitted once, applied per file.

Both are numpy only and live here once: `mmmos-calibrate` (and `mmmos-export --ood-reference`) fit them and
store them in the bundle, the runtime applies them to every row.

- **Intervals.** Split conformal per axis on labelled clips that played no part in training: the nonconformity
  of a clip is |label - score|, or that divided by (ensemble spread + eps) where the ensemble's spread
  predicts the error (chosen per axis by which gives narrower intervals on held-out halves). For a nominal
  coverage 1 - a, the half width is the ceil((n + 1)(1 - a))-th smallest nonconformity (times the clip's
  spread + eps when scaled), which covers a new exchangeable clip with probability >= 1 - a.
- **Out of domain.** Each file's fused embedding (per encoder: the pooled output, WavLM's layers averaged,
  L2-normalised; concatenated; weighted over windows like the scores) is compared with reference clips: a
  whitened distance in their top principal directions plus the residual outside them. A file is flagged
  above the 99th percentile of the reference clips' out-of-fold scores (each reference scored by statistics
  fitted without it, 5 folds), which is what a new in-domain clip scores; in-sample scores would be too low.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmmos import AXES

CONFORMAL_FILE = "conformal.json"
OOD_FILE = "ood_reference.npz"
DEFAULT_COVERAGE = 0.9
OOD_PERCENTILE = 99.0
OOD_COMPONENTS = 32


def conformal_quantile(sorted_scores: np.ndarray, coverage: float) -> float:
    """The ceil((n + 1) * coverage)-th smallest nonconformity score (inf when n is too small for the coverage)."""
    n = int(sorted_scores.shape[0])
    k = math.ceil((n + 1) * coverage)
    return float("inf") if k > n or n == 0 else float(sorted_scores[k - 1])


@dataclass(frozen=True)
class AxisConformal:
    """One axis's calibration: sorted nonconformity scores, and whether they are scaled by the ensemble spread."""

    scores: np.ndarray
    scaled: bool
    eps: float

    def half_width(self, coverage: float, spread: float) -> float:
        """Half width of the interval at `coverage` for a clip whose ensemble spread is `spread`."""
        q = conformal_quantile(self.scores, coverage)
        return q * (spread + self.eps) if self.scaled else q


@dataclass(frozen=True)
class Conformal:
    """Split-conformal calibration of the four axes (see the module docstring)."""

    axes: dict[str, AxisConformal]
    n: int

    def interval(self, scores: Mapping[str, float], spread: Mapping[str, float],
                 coverage: float = DEFAULT_COVERAGE) -> dict[str, list[float]]:
        """`{axis: [lo, hi]}` at `coverage` around a file's scores."""
        out = {}
        for a in AXES:
            w = self.axes[a].half_width(coverage, float(spread[a]))
            out[a] = [float(scores[a]) - w, float(scores[a]) + w]
        return out

    def to_json(self) -> dict:
        """The stored form (conformal.json)."""
        return {"n": self.n, "axes": {a: {"scaled": c.scaled, "eps": c.eps, "scores": c.scores.round(6).tolist()}
                                      for a, c in self.axes.items()}}

    @classmethod
    def from_json(cls, data: dict) -> Conformal:
        """Inverse of `to_json`."""
        axes = {a: AxisConformal(np.sort(np.asarray(v["scores"], np.float64)), bool(v["scaled"]), float(v["eps"]))
                for a, v in data["axes"].items()}
        return cls(axes=axes, n=int(data["n"]))


def _mean_width(residual: np.ndarray, spread: np.ndarray, scaled: bool, eps: float, coverage: float,
                halves: tuple[np.ndarray, np.ndarray]) -> float:
    """Mean interval width of one variant, fitted on one half and measured on the other (both ways)."""
    widths = []
    for fit, use in (halves, halves[::-1]):
        scale_fit = spread[fit] + eps if scaled else 1.0
        q = conformal_quantile(np.sort(residual[fit] / scale_fit), coverage)
        widths.append(np.mean(2 * q * (spread[use] + eps if scaled else np.ones(use.size))))
    return float(np.mean(widths))


def fit_conformal(scores: np.ndarray, spread: np.ndarray, labels: np.ndarray, coverage: float = DEFAULT_COVERAGE,
                  seed: int = 0) -> Conformal:
    """Fit per-axis split conformal on labelled clips: `scores`, `spread` (ensemble std) and `labels`, all [N, 4].

    Raises:
        ValueError: an axis has fewer than 10 labelled clips (too few for a 90% interval to mean anything).
    """
    rng = np.random.default_rng(seed)
    axes: dict[str, AxisConformal] = {}
    n_min = None
    for k, a in enumerate(AXES):
        ok = np.isfinite(labels[:, k]) & np.isfinite(scores[:, k])
        if ok.sum() < 10:
            raise ValueError(f"axis {a} has {int(ok.sum())} labelled clips; conformal intervals need at least 10 "
                             "(use a held-out labelled set of a few hundred clips).")
        residual = np.abs(labels[ok, k] - scores[ok, k]).astype(np.float64)
        s = spread[ok, k].astype(np.float64)
        eps = float(max(np.median(s), 1e-3))
        scaled = False
        if float(np.max(s)) > 0:  # one member (or identical members) has no spread to scale by
            order = rng.permutation(residual.size)
            halves = (order[: residual.size // 2], order[residual.size // 2:])
            scaled = _mean_width(residual, s, True, eps, coverage, halves) < _mean_width(
                residual, s, False, eps, coverage, halves)
        axes[a] = AxisConformal(np.sort(residual / (s + eps) if scaled else residual), scaled, eps)
        n_min = int(residual.size) if n_min is None else min(n_min, int(residual.size))
    return Conformal(axes=axes, n=int(n_min or 0))


def fused_embedding(outputs: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """Per window: the encoders' pooled outputs (WavLM's [L, D] averaged over layers), L2-normalised, concatenated.

    Args:
        outputs: encoder output name -> array with the window axis first.
        names: the pooled output names to fuse, in bundle order.
    """
    parts = []
    for name in names:
        x = np.asarray(outputs[name], np.float64)
        if x.ndim == 3:
            x = x.mean(axis=1)
        parts.append(x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12))
    return np.concatenate(parts, axis=-1)


@dataclass(frozen=True)
class OODReference:
    """Statistics of reference clips' fused embeddings: mean, principal directions, their variances, residual."""

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    residual_var: float
    threshold: float
    n: int

    def score(self, embedding: np.ndarray) -> float:
        """Whitened distance of one file's fused embedding from the reference clips (about 1 for a typical one)."""
        d = np.asarray(embedding, np.float64) - self.mean
        z = self.components @ d
        residual = float(d @ d - z @ z)
        k = max(self.components.shape[0], 1)
        return float(math.sqrt((float(np.sum(z * z / self.variances)) + max(residual, 0.0) / self.residual_var)
                               / (k + 1)))

    def flag(self, score: float) -> bool:
        """True when a file is farther from the references than 99% of the references themselves."""
        return score > self.threshold

    def save(self, path: Path) -> None:
        """Write the statistics as .npz."""
        with open(path, "wb") as fh:
            np.savez(fh, mean=self.mean, components=self.components, variances=self.variances,
                     scalars=np.array([self.residual_var, self.threshold, self.n], np.float64))

    @classmethod
    def load(cls, path: Path) -> OODReference:
        """Read statistics written by `save`."""
        with np.load(path) as z:
            residual_var, threshold, n = (float(v) for v in z["scalars"])
            return cls(z["mean"], z["components"], z["variances"], residual_var, threshold, int(n))


def _fit_stats(x: np.ndarray, components: int) -> OODReference:
    """Mean, top principal directions and residual variance of `x [N, F]` (threshold not set)."""
    mean = x.mean(axis=0)
    centred = x - mean
    k = int(max(1, min(components, x.shape[0] // 4, x.shape[1])))
    _, sing, vt = np.linalg.svd(centred, full_matrices=False)
    variances = np.maximum(sing[:k] ** 2 / (x.shape[0] - 1), 1e-12)
    proj = centred @ vt[:k].T
    residual = np.sum(centred * centred, axis=1) - np.sum(proj * proj, axis=1)
    residual_var = float(max(np.mean(np.maximum(residual, 0.0)), 1e-12))
    return OODReference(mean, vt[:k], variances, residual_var, 0.0, int(x.shape[0]))


def fit_ood(embeddings: np.ndarray, components: int = OOD_COMPONENTS, percentile: float = OOD_PERCENTILE,
            folds: int = 5, seed: int = 0) -> OODReference:
    """Fit the reference statistics on `embeddings [N, F]` (one fused embedding per reference clip).

    Raises:
        ValueError: fewer than 10 reference clips.
    """
    x = np.asarray(embeddings, np.float64)
    if x.shape[0] < 10:
        raise ValueError(f"the out-of-domain reference needs at least 10 clips, got {x.shape[0]}.")
    fold_of = np.random.default_rng(seed).permutation(x.shape[0]) % folds
    out_of_fold = np.empty(x.shape[0])
    for f in range(folds):
        held = fold_of == f
        stats = _fit_stats(x[~held], components)
        out_of_fold[held] = [stats.score(e) for e in x[held]]
    full = _fit_stats(x, components)
    return OODReference(full.mean, full.components, full.variances, full.residual_var,
                        float(np.percentile(out_of_fold, percentile)), full.n)


def save_conformal(path: Path, conformal: Conformal) -> None:
    """Write conformal.json."""
    path.write_text(json.dumps(conformal.to_json()) + "\n", encoding="utf-8")


def load_conformal(path: Path) -> Conformal:
    """Read conformal.json."""
    return Conformal.from_json(json.loads(path.read_text(encoding="utf-8")))


def store(root: Path, manifest: dict, conformal: Conformal | None = None,
          ood: OODReference | None = None) -> list[str]:
    """Write the calibrated intervals and/or the out-of-domain reference into a bundle folder and name them in
    the manifest's `uncertainty` entry (the caller writes the manifest with `manifest.update_manifest`).

    Returns:
        The files written (relative to the bundle), to be re-hashed.
    """
    entry = manifest.setdefault("uncertainty", {})
    written = []
    if conformal is not None:
        save_conformal(Path(root) / CONFORMAL_FILE, conformal)
        entry["conformal"] = CONFORMAL_FILE
        written.append(CONFORMAL_FILE)
    if ood is not None:
        ood.save(Path(root) / OOD_FILE)
        entry["ood"] = OOD_FILE
        written.append(OOD_FILE)
    return written
