"""Target statistics (per-axis mean/std of the training labels), computed from a labelled manifest.

Targets are z-normalised with these during training and de-normalised inside the graphs (``z * std + mean``),
so they are data, never constants in code: they are computed here from the manifest and stored in the
bundle's manifest as ``target_stats``. pandas' convention (``std`` with ddof=1) is used, as the MMMOS
reference code does.

Feature statistics: the only ones the encoders use are their front-ends' log-mel mean/std (MuQ's
6.768/18.418, M2D's ``norm_stats``). Those belong to the frozen pretrained weights (the encoders were trained
on inputs normalised that way) and come from the checkpoints; recomputing them on our data would shift the
frozen encoders' inputs, so calibration does not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmmos import AXES


def stats_from_labels(labels: np.ndarray, source: str = "") -> dict:
    """``{"mean", "std", "n", ...}`` per axis (AXES order) of a ``[N, 4]`` label array; NaN labels are skipped.

    Raises ValueError when an axis has fewer than two finite labels (its std would be undefined).
    """
    labels = np.asarray(labels, dtype=np.float64)
    if labels.ndim != 2 or labels.shape[1] != len(AXES):
        raise ValueError(f"labels must be [N, {len(AXES)}] in {AXES} order, got shape {labels.shape}.")
    mean, std, n = [], [], []
    for i, axis in enumerate(AXES):
        col = labels[:, i][np.isfinite(labels[:, i])]
        if col.size < 2:
            raise ValueError(f"axis {axis} has {col.size} finite labels in {source or 'the manifest'}; target "
                             "statistics need at least two: use a labelled training manifest.")
        mean.append(float(col.mean()))
        std.append(float(col.std(ddof=1)))
        n.append(int(col.size))
    return {"axes": list(AXES), "mean": mean, "std": std, "n": n, "ddof": 1, "source": source}


def target_stats(manifest: str | Path, root: str | Path | None = None) -> dict:
    """Target statistics of a labelled CSV/JSONL manifest, read the way training reads it.

    Uses ``mmmos.training.manifests.load_manifest`` (stdlib + soundfile only), so the axis names, the
    placeholder-path rule and the averaging of raw rating lists are exactly training's.
    """
    from mmmos.training.manifests import load_manifest

    m = load_manifest(manifest, root=root, check_files=False, warn=False)
    labels = np.array([c.labels for c in m.clips], dtype=np.float64).reshape(-1, len(AXES))
    return stats_from_labels(labels, source=Path(manifest).name)


def has_labels(manifest: str | Path) -> bool:
    """True when a CSV/JSONL manifest carries at least one finite label on every axis."""
    path = Path(manifest)
    if not path.is_file() or path.suffix.lower() not in (".csv", ".jsonl"):
        return False
    from mmmos.training.manifests import load_manifest

    m = load_manifest(path, check_files=False, warn=False)
    labels = np.array([c.labels for c in m.clips], dtype=np.float64).reshape(-1, len(AXES))
    return bool(labels.size) and bool(np.isfinite(labels).any(axis=0).all())


def members_mismatch(manifest: dict, stats: dict, tol: float = 1e-3) -> list[str]:
    """Members whose in-graph de-normalisation (``config.target_mean/std``) differs from ``stats``.

    Such a member was trained on other labels than the manifest given; the bundle still scores as trained,
    so this is reported, not fixed.
    """
    out: list[str] = []
    for member in manifest.get("members", []):
        cfg = member.get("config") or {}
        m, s = cfg.get("target_mean"), cfg.get("target_std")
        if m is None or s is None:
            continue
        if not (np.allclose(m, stats["mean"], atol=tol) and np.allclose(s, stats["std"], atol=tol)):
            out.append(str(member.get("name", "?")))
    return out
