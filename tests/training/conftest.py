"""Synthetic embedding caches in the real on-disk format, with labels the features can predict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmmos.training.cache_store import CACHE_FORMAT_VERSION, shard_name, write_index, write_shard

L, D_W, D_MUQ, D_M2D, STEPS = 3, 16, 8, 12, 5


def identity(tag: str = "a") -> dict[str, Any]:
    """An encoders identity as the cache writes it (fake sha256s, distinct per tag)."""
    return {
        "manifest_sha256": f"manifest-{tag}",
        "encoders": [
            {"name": n, "sample_rate": 16000, "window_samples": 160000, "outputs": [f"{n}_pooled"],
             "frames": True, "graphs": {"fp32": f"{n}-{tag}"}}
            for n in ("wavlm", "muq", "m2d")
        ],
    }


def make_cache(root: Path, n_clips: int, seed: int, tag: str = "a", shard_size: int = 16) -> Path:
    """A complete cache of ``n_clips`` clips (1-3 windows each) whose labels are linear in a latent
    that every encoder output carries (plus noise), so a member can learn them."""
    rng = np.random.default_rng(seed)
    proj = np.random.default_rng(1234)  # same projections for every cache, so train and dev agree
    p_w = proj.normal(size=(4, L, D_W))
    p_m = proj.normal(size=(4, D_MUQ))
    p_2 = proj.normal(size=(4, D_M2D))
    base_m, base_2 = proj.normal(size=D_MUQ) * 3, proj.normal(size=D_M2D) * 3
    latent = rng.uniform(-1, 1, size=(n_clips, 4))
    labels = 5 + 2 * latent
    shards = []
    for s0 in range(0, n_clips, shard_size):
        clips, outs, weights = [], [], []
        for c in range(s0, min(n_clips, s0 + shard_size)):
            n = int(rng.integers(1, 4))
            lat = latent[c][None, :] + rng.normal(0, 0.05, size=(n, 4))
            w = np.einsum("na,ald->nld", lat, p_w) + 4.0
            m = lat @ p_m + base_m
            t = lat @ p_2 + base_2
            m /= np.linalg.norm(m, axis=-1, keepdims=True)
            t /= np.linalg.norm(t, axis=-1, keepdims=True)
            steps = np.ones((n, STEPS), np.float32)
            steps[-1, 3:] = 0.0  # last window partly empty
            outs.append({
                "wavlm_pooled": w, "muq_pooled": m, "m2d_pooled": t,
                "wavlm_frames": np.repeat(w[:, :, None, :], STEPS, axis=2) * steps[:, None, :, None],
                "wavlm_steps": steps,
                "muq_frames": np.repeat(m[:, None, :], STEPS, axis=1) * steps[:, :, None],
                "muq_steps": steps,
                "m2d_frames": np.repeat(t[:, None, :], STEPS, axis=1) * steps[:, :, None],
                "m2d_steps": steps,
            })
            wt = np.ones(n, np.float32)
            wt[-1] = 0.5
            weights.append(wt)
            clips.append({"id": f"audiomos2025-track2-sys{c % 4}-utt{seed}x{c}", "path": f"/x/{c}.wav",
                          "labels": [float(v) for v in labels[c]], "system": None, "duration_s": 0.0})
        name = shard_name(len(shards))
        write_shard(root / name, clips, outs, weights, errors=[])
        shards.append(name)
    shapes = {k: list(v.shape[1:]) for k, v in outs[0].items()}
    write_index(root, {
        "format_version": CACHE_FORMAT_VERSION, "complete": True, "encoders_identity": identity(tag),
        "outputs": {k: {"shape": s, "dtype": "float16"} for k, s in shapes.items()}, "shards": shards,
    })
    return root


@pytest.fixture(scope="session")
def synth_caches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """train / dev / synthetic-dev caches sharing one identity, plus one from other encoders."""
    root = tmp_path_factory.mktemp("caches")
    return {
        "train": make_cache(root / "train", 96, seed=0),
        "dev": make_cache(root / "dev", 40, seed=1),
        "syn": make_cache(root / "syn", 40, seed=2),
        "other": make_cache(root / "other", 20, seed=3, tag="b"),
    }
