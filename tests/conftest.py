"""Shared pytest set-up: versions in the report header, and deterministic, single-threaded-enough torch."""

from __future__ import annotations

import importlib


def pytest_report_header(config) -> list[str]:
    """Print the versions that decide numerics, so a CI log says what ran."""
    lines = []
    for name in ("numpy", "torch", "onnx", "onnxruntime", "librosa", "soundfile"):
        try:
            module = importlib.import_module(name)
            lines.append(f"{name} {getattr(module, '__version__', '?')}")
        except ImportError:
            lines.append(f"{name} (not installed)")
    return [", ".join(lines)]
