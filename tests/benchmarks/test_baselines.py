"""The PyTorch baselines are rebuilt from a bundle's provenance (tiny preset; no timed assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mmmos.benchmarks.baselines import BaselineUnavailableError, bench_torch, build_reference  # noqa: E402
from mmmos.runtime.manifest import FORMAT_VERSION, MANIFEST_NAME  # noqa: E402


def _manifest(source: str = "random-init", members: int = 3) -> dict:
    return {"provenance": {"source": source, "preset": "tiny", "seed": 0}, "members": [{}] * members,
            "encoders": [{"name": "wavlm", "steps": 50}]}


def test_unknown_provenance_is_a_clear_error() -> None:
    with pytest.raises(BaselineUnavailableError, match="cannot be rebuilt"):
        build_reference(_manifest(source="mystery"))
    with pytest.raises(BaselineUnavailableError, match="not on this machine"):
        build_reference({"provenance": {"source": "audiobox", "checkpoints": [{"path": "/nonexistent.pt"}]}})


def test_random_init_bundle_rebuilds_the_same_members(tmp_path: Path) -> None:
    model = build_reference(_manifest(members=1))
    assert len(model.ensemble.members) == 1
    assert list(model.encoders) == ["wavlm", "muq", "m2d"]
    # bench_torch on the shared-window format: eager at each batch, naive at the smallest; naive == eager.
    bundle = tmp_path / "b"
    bundle.mkdir()
    manifest = {"format_version": FORMAT_VERSION, **_manifest(members=1)}
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest))
    rng = np.random.default_rng(0)
    arrays = {}
    for name, pooled in model.encoders.items():
        n = int(pooled.encoder.window_samples)
        arrays[f"wav_{name}"] = (0.1 * rng.standard_normal((1, n))).astype(np.float32)
        arrays[f"len_{name}"] = np.array([n // 2], np.int64)
    np.savez(tmp_path / "w.npz", **arrays)
    res = bench_torch({"bundle": str(bundle), "windows": str(tmp_path / "w.npz"), "batches": [1], "warmup": 0,
                       "repeats": 1, "threads": 0, "naive": True})
    assert res["members"] == 1 and len(res["window_mean_scores"]) == 4
    assert res["naive_matches_eager"] is True
    assert set(res["eager"]) == {"1"} and set(res["naive"]) == {"1"}
