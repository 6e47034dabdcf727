"""``mmmos-train cache MANIFEST --bundle ENCODERS --out CACHE``: encoder outputs per 10 s window, once.

The encoders are frozen, so their outputs are computed once through the runtime (``Scorer.encode``, the
same graphs and preprocessing as scoring) and stored per window with each window's weight and the clip's
labels (layout: ``cache_store``). Work is split into shards of ``shard_size`` clips; a finished shard is
never recomputed, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mmmos.runtime.manifest import manifest_sha256, read_manifest, sha256_file
from mmmos.training.cache_store import (
    CACHE_FORMAT_VERSION,
    INDEX_NAME,
    SHARD_INDEX_NAME,
    read_index,
    shard_name,
    write_index,
    write_shard,
)
from mmmos.training.manifests import Manifest, load_manifest


def encoders_identity(bundle_dir: Path) -> dict[str, Any]:
    """What identifies a bundle's encoder features: per encoder its rate, window, outputs and fp32 graph sha256.

    The sha256s are the ones the bundle's manifest records (the runtime verifies them on load).
    """
    manifest = read_manifest(bundle_dir)
    files = manifest.get("files", {})
    encoders = []
    for e in manifest.get("encoders", []):
        fp32 = e.get("graphs", {}).get("fp32")
        if fp32 is None:
            raise ValueError(f"encoder {e.get('name')!r} of {bundle_dir} has no fp32 graph; re-export the bundle.")
        encoders.append({
            "name": e["name"], "sample_rate": e.get("sample_rate"), "window_samples": e.get("window_samples"),
            "outputs": list(e.get("outputs", [])), "frames": bool(e.get("frames", False)),
            "graphs": {"fp32": files.get(fp32) or sha256_file(Path(bundle_dir) / fp32)},
        })
    if not encoders:
        raise ValueError(f"the manifest of {bundle_dir} lists no encoders; pass an encoders bundle.")
    return {"manifest_sha256": manifest_sha256(Path(bundle_dir)), "encoders": encoders}


def _plan(manifest: Manifest, shard_size: int) -> list[list[int]]:
    n = len(manifest.clips)
    return [list(range(s, min(n, s + shard_size))) for s in range(0, n, shard_size)]


def build_cache(
    manifest_path: Path,
    bundle_dir: Path,
    out: Path,
    root: Path | None = None,
    shard_size: int = 64,
    dtype: str = "float16",
    backend: str = "ort-cpu",
    precision: str = "fp32",
    batch_size: int = 8,
    threads: int = 0,
    progress: bool = True,
    overwrite: bool = False,
    frames: bool = True,
) -> dict[str, Any]:
    """Encode every readable clip of ``manifest_path`` with ``bundle_dir``'s encoder graphs into ``out``.

    Resumes an unfinished cache made from the same manifest rows, bundle and settings; refuses a
    different one unless ``overwrite``. ``frames=False`` drops the ``*_frames``/``*_steps`` outputs
    (about 1 MB per window for full-size WavLM in float16) when no ``blstm-t`` member will be trained.
    Returns the final ``cache.json`` content.
    """
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be float16 or float32, got {dtype!r}.")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}.")
    manifest = load_manifest(manifest_path, root=root, check_files=True)
    identity = encoders_identity(bundle_dir)
    plan = _plan(manifest, shard_size)
    ids = [c.id for c in manifest.clips]
    fingerprint = hashlib.sha256(json.dumps([ids, shard_size, dtype, precision, frames]).encode()).hexdigest()
    index: dict[str, Any] = {
        "format_version": CACHE_FORMAT_VERSION,
        "complete": False,
        "encoders_identity": identity,
        "bundle": str(Path(bundle_dir).resolve()),
        "manifest": str(Path(manifest_path).resolve()),
        "precision": precision,
        "dtype": dtype,
        "frames": frames,
        "shard_size": shard_size,
        "fingerprint": fingerprint,
        "n_manifest_clips": len(ids),
        "skipped": [list(s) for s in manifest.skipped],
        "outputs": {},
        "shards": [],
    }
    if (out / INDEX_NAME).is_file():
        old = read_index(out)
        same = old.get("fingerprint") == fingerprint and old.get("encoders_identity") == identity
        if not same and not overwrite:
            raise FileExistsError(
                f"{out} holds a cache of another manifest, bundle or settings; pass --overwrite or another --out."
            )
        if same:
            index["outputs"] = old.get("outputs", {})
        else:
            for k in range(len(old.get("shards", [])) + len(plan) + 1):
                (out / shard_name(k) / SHARD_INDEX_NAME).unlink(missing_ok=True)
    write_index(out, index)

    done = [k for k in range(len(plan)) if (out / shard_name(k) / SHARD_INDEX_NAME).is_file()]
    todo = [k for k in range(len(plan)) if k not in done]
    n_todo = sum(len(plan[k]) for k in todo)
    if todo:
        # Imported here: the runtime is only needed when there is something to encode.
        from mmmos.runtime import Scorer

        scorer = Scorer(bundle_dir, backend=backend, precision=precision, batch_size=batch_size, threads=threads)
        bar = tqdm(total=n_todo, desc="cache", unit="clip", file=sys.stderr, disable=not progress)
        try:
            for k in todo:
                clips = [manifest.clips[i] for i in plan[k]]
                metas, outs, weights, errors = [], [], [], []
                for clip, item in zip(clips, scorer.encode([c.path for c in clips]), strict=True):
                    bar.update(1)
                    if item.error is not None or not item.outputs:
                        errors.append((clip.path, item.error or "no encoder outputs"))
                        continue
                    outputs = {n: a for n, a in item.outputs.items()
                               if frames or not n.endswith(("_frames", "_steps"))}
                    if not index["outputs"]:
                        index["outputs"] = {n: {"shape": list(a.shape[1:]), "dtype": dtype if a.dtype.kind == "f"
                                                else str(a.dtype)} for n, a in sorted(outputs.items())}
                    labels = [v if math.isfinite(v) else None for v in clip.labels]
                    metas.append({"id": clip.id, "path": clip.path, "labels": labels,
                                  "system": clip.system, "duration_s": item.duration_s})
                    outs.append(outputs)
                    weights.append(item.weights)
                write_shard(out / shard_name(k), metas, outs, weights, errors, dtype=dtype)
                if errors:
                    bar.write(f"cache: {len(errors)} clips of shard {k} could not be encoded, first: "
                              f"{errors[0][0]} ({errors[0][1]})")
        finally:
            bar.close()
            close = getattr(scorer, "close", None)
            if close is not None:
                close()
    index["shards"] = [shard_name(k) for k in range(len(plan))]
    index["complete"] = True
    n_err = 0
    for name in index["shards"]:
        n_err += len(json.loads((out / name / SHARD_INDEX_NAME).read_text()).get("errors", []))
    index["n_encode_errors"] = n_err
    write_index(out, index)
    if not index["outputs"]:
        raise ValueError(f"no clip of {manifest_path} could be encoded ({n_err} errors, see {out}); check the audio.")
    return index
