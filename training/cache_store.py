"""On-disk layout of the embedding cache: sharded ``.npy`` arrays per encoder output plus JSON indexes.

```
CACHE/
  cache.json                  format, encoders identity, outputs (per-window shape, dtype), shard list
  shard-00000/                one shard = a fixed slice of the manifest's clips (resumable unit)
    shard.json                clips (id, path, labels, system, n_windows, duration_s), errors; written LAST
    weights.npy               [W] float32, valid seconds / 10 per window
    clip.npy                  [W] int32, index of the window's clip within the shard
    <output>.npy              [W, ...] one per encoder-graph output (float16 by default)
```

A shard whose ``shard.json`` exists is complete; a resumed run skips it. Readers memory-map the arrays
and upcast the windows they gather to float32.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CACHE_FORMAT_VERSION = 1
INDEX_NAME = "cache.json"
SHARD_INDEX_NAME = "shard.json"


def shard_name(k: int) -> str:
    """Folder name of shard ``k``."""
    return f"shard-{k:05d}"


def _atomic_write_json(path: Path, obj: Any) -> None:
    """Write JSON through a temporary file and rename it, so a crash never leaves half an index."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def write_index(root: Path, index: dict[str, Any]) -> None:
    """Write ``cache.json``."""
    root.mkdir(parents=True, exist_ok=True)
    _atomic_write_json(root / INDEX_NAME, index)


def read_index(root: Path) -> dict[str, Any]:
    """Read ``cache.json``, checking the format version."""
    p = Path(root) / INDEX_NAME
    if not p.is_file():
        raise FileNotFoundError(
            f"{root} is not an embedding cache (no {INDEX_NAME}); build one with mmmos-train cache."
        )
    index = json.loads(p.read_text())
    if index.get("format_version") != CACHE_FORMAT_VERSION:
        raise ValueError(
            f"{p} has cache format {index.get('format_version')}, this mmmos reads {CACHE_FORMAT_VERSION}; re-cache."
        )
    return index


def write_shard(
    folder: Path,
    clips: list[dict[str, Any]],
    window_outputs: list[dict[str, np.ndarray]],
    window_weights: list[np.ndarray],
    errors: list[tuple[str, str]],
    dtype: str = "float16",
) -> None:
    """Write one shard: ``clips[i]`` has ``window_outputs[i]`` (each ``[n_i, ...]``) and ``window_weights[i]``.

    ``shard.json`` is written last, so its presence marks the shard complete.
    """
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(window_outputs[0]) if window_outputs else []
    clip_idx = np.concatenate(
        [np.full(len(w), k, np.int32) for k, w in enumerate(window_weights)] or [np.zeros(0, np.int32)]
    )
    np.save(folder / "clip.npy", clip_idx)
    np.save(folder / "weights.npy", np.concatenate(window_weights or [np.zeros(0)]).astype(np.float32))
    for name in names:
        arr = np.concatenate([o[name] for o in window_outputs], axis=0)
        if arr.dtype.kind == "f":
            arr = arr.astype(dtype)
        np.save(folder / f"{name}.npy", arr)
    for clip, w in zip(clips, window_weights, strict=True):
        clip["n_windows"] = len(w)
    _atomic_write_json(folder / SHARD_INDEX_NAME, {"clips": clips, "errors": [list(e) for e in errors]})


@dataclass
class _Shard:
    """A loaded shard: memory-mapped arrays, first global window index, first global clip index."""

    arrays: dict[str, np.ndarray]
    window0: int
    clip0: int


class CachedSet:
    """A complete cache opened for training: clip labels in memory, window features memory-mapped.

    Attributes: ``ids``, ``paths``, ``systems`` (per clip), ``labels [N, 4]`` float64 (AXES order),
    ``window_clip [W]`` (global clip index of every window), ``window_weights [W]``, ``shapes`` (per-window
    shape of every output), ``encoders_identity`` and ``index`` (the raw ``cache.json``).
    """

    def __init__(self, root: str | Path, require_complete: bool = True) -> None:
        self.root = Path(root)
        self.index = read_index(self.root)
        if require_complete and not self.index.get("complete", False):
            raise ValueError(f"cache {self.root} is incomplete; run mmmos-train cache again to finish it.")
        self.encoders_identity: dict[str, Any] = self.index.get("encoders_identity", {})
        self.shapes: dict[str, tuple[int, ...]] = {k: tuple(v["shape"]) for k, v in self.index["outputs"].items()}
        self.ids: list[str] = []
        self.paths: list[str] = []
        self.systems: list[str | None] = []
        labels: list[list[float]] = []
        clip_parts: list[np.ndarray] = []
        weight_parts: list[np.ndarray] = []
        self._shards: list[_Shard] = []
        self.errors: list[tuple[str, str]] = []
        w0 = 0
        for name in self.index["shards"]:
            folder = self.root / name
            meta = json.loads((folder / SHARD_INDEX_NAME).read_text())
            clip0 = len(self.ids)
            for c in meta["clips"]:
                self.ids.append(str(c["id"]))
                self.paths.append(str(c.get("path", "")))
                self.systems.append(c.get("system"))
                labels.append([math.nan if v is None else float(v) for v in c["labels"]])
            self.errors.extend((str(p), str(w)) for p, w in meta.get("errors", []))
            clip = np.load(folder / "clip.npy")
            arrays = {k: np.load(folder / f"{k}.npy", mmap_mode="r") for k in self.shapes if len(clip)}
            clip_parts.append(clip.astype(np.int64) + clip0)
            weight_parts.append(np.load(folder / "weights.npy"))
            self._shards.append(_Shard(arrays=arrays, window0=w0, clip0=clip0))
            w0 += len(clip)
        self.labels = np.array(labels, np.float64).reshape(-1, 4)
        self.window_clip = np.concatenate(clip_parts) if clip_parts else np.zeros(0, np.int64)
        self.window_weights = np.concatenate(weight_parts).astype(np.float64) if weight_parts else np.zeros(0)
        self._starts = np.array([s.window0 for s in self._shards], np.int64)

    @property
    def n_clips(self) -> int:
        """Number of clips with features."""
        return len(self.ids)

    @property
    def n_windows(self) -> int:
        """Number of windows over all clips."""
        return int(self.window_clip.size)

    def dims(self) -> dict[str, Any]:
        """Encoder sizes for ``Member(config, dims)``: ``{"wavlm": (L, D), "muq": D, "m2d": D}``."""
        dims: dict[str, Any] = {}
        for name, shape in self.shapes.items():
            enc, kind = name.rsplit("_", 1)
            if kind == "pooled":
                dims[enc] = (shape[0], shape[1]) if enc == "wavlm" else shape[-1]
            elif kind == "frames" and enc not in dims:
                dims[enc] = (shape[0], shape[-1]) if enc == "wavlm" else shape[-1]
        return dims

    def encoders(self) -> list[str]:
        """Encoder names in bundle order (the order of ``encoders_identity``, else of the outputs)."""
        listed = [e["name"] for e in self.encoders_identity.get("encoders", [])]
        if listed:
            return listed
        seen: list[str] = []
        for name in self.shapes:
            enc = name.rsplit("_", 1)[0]
            if enc not in seen:
                seen.append(enc)
        return seen

    def gather(self, names: Sequence[str], windows: np.ndarray) -> dict[str, np.ndarray]:
        """Features of the given global window indices, as float32 arrays (order preserved)."""
        missing = [n for n in names if n not in self.shapes]
        if missing:
            raise KeyError(
                f"cache {self.root} has no output {missing} (it has {sorted(self.shapes)}); re-cache with an "
                "encoders bundle that exports them (frames=True for blstm-t)."
            )
        windows = np.asarray(windows, np.int64)
        shard_of = np.searchsorted(self._starts, windows, side="right") - 1
        out = {n: np.empty((windows.size, *self.shapes[n]), np.float32) for n in names}
        for s in np.unique(shard_of):
            sel = np.flatnonzero(shard_of == s)
            local = windows[sel] - self._shards[s].window0
            order = np.argsort(local)  # sorted reads are much faster on memory maps
            for n in names:
                out[n][sel[order]] = self._shards[s].arrays[n][local[order]]
        return out

    def clip_embeddings(self, pooled: Sequence[str], batch: int = 256) -> np.ndarray:
        """Each clip's fused embedding `[n_clips, E]` from the cached pooled outputs, folded over its windows as
        the runtime folds them (`mmmos.runtime.uncertainty.fused_embedding`, window weights)."""
        from mmmos.runtime.uncertainty import fused_embedding
        from mmmos.runtime.windows import weighted_segment_mean

        parts = [fused_embedding(self.gather(pooled, np.arange(s, min(s + batch, self.n_windows))), pooled)
                 for s in range(0, self.n_windows, batch)]
        return weighted_segment_mean(np.concatenate(parts), self.window_weights, self.window_clip, self.n_clips)
