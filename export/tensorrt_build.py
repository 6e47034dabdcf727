"""TensorRT engines shipped in a bundle at export time, built by the runtime's engine module (runtime/trt_engine.py).

The exporter only decides *which* graphs get plans: the mixed fp16 encoder graphs and the ensemble graph the fp16
precision uses (strongly typed, so those give fp16 engines), since `auto` picks fp16 on a GPU. Building, keys and
plan names (`engines/<trt_version>-sm<cc>-b<min>-<opt>-<max>/<graph stem>.<sha16>.plan`) are the runtime's, so the
runtime finds exactly these plans. Without tensorrt or a CUDA GPU the step is skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmmos.runtime.trt_engine import BatchProfile, build_plans, unavailable_reason

__all__ = ["BatchProfile", "build_engines", "fp16_graphs", "unavailable_reason"]


def fp16_graphs(encoders: list[dict[str, Any]], ensemble: dict[str, Any] | None) -> list[str]:
    """The graphs that get plans: each encoder's fp16 graph and the ensemble graph the fp16 precision uses."""
    return [e["graphs"]["fp16"] for e in encoders] + ([ensemble["graphs"]["fp16"]] if ensemble else [])


def build_engines(bundle_dir: Path, graphs: list[str], profile: BatchProfile, log: Callable[[str], None] = print,
                  samples: dict[str, tuple[int, int]] | None = None) -> dict[str, Any]:
    """Build one plan per graph file (names relative to `bundle_dir`) into `engines/<key>/`; `samples` gives the
    (min, max) samples of graphs with a dynamic samples axis (`trt_engine.samples_ranges`).

    Returns the report section: `{"status": "built" | "skipped" | "failed", ...}`; skipped (with one reason line)
    when tensorrt or a GPU is missing.
    """
    return build_plans(Path(bundle_dir), graphs, profile, log, samples=samples)
