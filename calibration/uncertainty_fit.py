"""Fit what rows report beside the scores: conformal intervals on labelled clips, an out-of-domain reference.

`mmmos-calibrate BUNDLE DATA --targets LABELLED` scores the labelled clips with the fp32 graphs and fits
split-conformal intervals per axis (`mmmos.runtime.uncertainty.fit_conformal`); the fused embeddings of DATA's
clips become the out-of-domain reference (`fit_ood`). Both are stored in the bundle, and the runtime adds
`interval` and `ood` to every row from then on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmmos import AXES
from mmmos.runtime.bundle import Bundle
from mmmos.runtime.uncertainty import DEFAULT_COVERAGE, Conformal, OODReference, fit_conformal, fit_ood

from . import data, runner


def labelled_clips(targets: str | Path, bundle: Bundle, max_files: int | None,
                   log: Callable[[str], None]) -> tuple[list[data.ClipWindows], np.ndarray]:
    """The labelled manifest's clips (decoded and windowed) and their labels `[N, 4]` (AXES order)."""
    from mmmos.training.manifests import load_manifest

    manifest = load_manifest(targets, check_files=False, warn=False)
    rows = [c for c in manifest.clips if any(np.isfinite(c.labels))][: max_files or None]
    clips, errors = data.load_clips([c.path for c in rows], bundle.encoders)
    for err in errors:
        log(f"skipped labelled clip {err['path']}: {err['error']}")
    by_path = {c.path: c.labels for c in rows}
    return clips, np.array([by_path[c.path] for c in clips], np.float64).reshape(-1, len(AXES))


def fit_intervals(bundle: Bundle, targets: str | Path, threads: int, max_files: int | None,
                  log: Callable[[str], None]) -> tuple[Conformal, dict]:
    """Conformal intervals fitted on the labelled clips' fp32 scores; returns them and the report's summary."""
    clips, labels = labelled_clips(targets, bundle, max_files, log)
    scores = runner.score_clips(bundle, runner.BASE_PRECISION, clips, threads)
    conformal = fit_conformal(scores.mean, scores.std, labels)
    covered = {}
    for k, a in enumerate(AXES):  # in-sample coverage: >= nominal by construction, a sanity line for the report
        ok = np.isfinite(labels[:, k])
        width = np.array([conformal.axes[a].half_width(DEFAULT_COVERAGE, s) for s in scores.std[ok, k]])
        covered[a] = float(np.mean(np.abs(labels[ok, k] - scores.mean[ok, k]) <= width))
    summary = {"targets": str(targets), "n": conformal.n, "nominal_coverage": DEFAULT_COVERAGE,
               "in_sample_coverage": covered,
               "scaled_by_ensemble_spread": {a: conformal.axes[a].scaled for a in AXES},
               "half_width_at_nominal": {a: conformal.axes[a].half_width(DEFAULT_COVERAGE, 0.0)
                                         for a in AXES if not conformal.axes[a].scaled}}
    log(f"conformal intervals fitted on {conformal.n} labelled clips "
        f"(scaled by the ensemble spread: {[a for a in AXES if conformal.axes[a].scaled] or 'none'})")
    return conformal, summary


def fit_reference(scores: runner.PrecisionScores, log: Callable[[str], None]) -> tuple[OODReference, dict]:
    """The out-of-domain reference from DATA's fused embeddings (fp32); returns it and the report's summary."""
    assert scores.embeddings is not None
    ref = fit_ood(scores.embeddings)
    log(f"out-of-domain reference: {ref.n} clips, flag above {ref.threshold:.3f} (their 99th percentile)")
    return ref, {"n": ref.n, "threshold": ref.threshold, "components": int(ref.components.shape[0])}
