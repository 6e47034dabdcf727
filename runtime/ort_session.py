"""The one ONNX Runtime session factory: every part of mmmos that runs a graph on ORT gets its session here.

Sessions share the process's cores with other sessions (several encoder graphs, benchmarks, calibration),
so thread spinning is off; the CUDA provider loads the CUDA/cuDNN libraries that the `gpu` extra installs
(`onnxruntime.preload_dlls`, ORT >= 1.21) and refuses to fall back to the CPU silently.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Literal

from .errors import BackendUnavailableError

Device = Literal["cpu", "cuda"]
"""Where an ORT session runs: its CPU provider, or the CUDA provider (GPU 0)."""


def import_ort() -> Any:
    """Import onnxruntime or raise an error naming the extra to install."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailableError(
            "onnxruntime is not installed; install mmmos[cpu] (or mmmos[gpu] for CUDA, not both)."
        ) from None
    return ort


def _cuda_providers(ort: Any) -> list[Any]:
    """The provider list of a CUDA session, after loading the pip-installed CUDA/cuDNN libraries."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise BackendUnavailableError("onnxruntime has no CUDA provider; install mmmos[gpu] instead of mmmos[cpu].")
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        # ORT >= 1.21: the nvidia-* wheels of onnxruntime-gpu[cuda,cudnn] are not on the loader's path by
        # themselves. A failure here shows up below as a CUDA provider that did not load, with its reason.
        with contextlib.suppress(Exception):
            preload()
    return [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]


def make_session(graph: str | Path | bytes, device: Device = "cpu", threads: int = 0, *,
                 profile_prefix: str | None = None, optimization: str | None = None) -> Any:
    """An `onnxruntime.InferenceSession` for one graph.

    Args:
        graph: the .onnx file (its .onnx.data sidecar is found by ORT), or a serialized model.
        device: "cpu" or "cuda".
        threads: intra-op threads (0 = ORT's default, the physical cores).
        profile_prefix: write an ORT profile with this file prefix (`session.end_profiling()` returns its path).
        optimization: ORT graph optimization level name (e.g. "ORT_DISABLE_ALL"); None keeps ORT's default.

    Raises:
        BackendUnavailableError: onnxruntime (or its CUDA provider) is missing, or the graph does not load.
    """
    ort = import_ort()
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3  # quantized graphs warn about unused initializers; they are not errors
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    if optimization is not None:
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, optimization)
    providers = _cuda_providers(ort) if device == "cuda" else ["CPUExecutionProvider"]
    name = "the serialized graph" if isinstance(graph, bytes) else Path(graph).name
    try:
        session = ort.InferenceSession(graph if isinstance(graph, bytes) else str(graph), so, providers=providers)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NotImplemented types
        raise BackendUnavailableError(f"onnxruntime cannot load {name}: {exc}") from None
    # onnxruntime-gpu without CUDA libraries logs an error and silently runs on CPU: refuse that.
    if device == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
        raise BackendUnavailableError("the CUDA provider failed to load (CUDA/cuDNN libraries, driver or GPU missing); "
                                      "install mmmos[gpu] (onnxruntime-gpu with its CUDA and cuDNN wheels), or "
                                      "mmmos[gpu-cu12] on an NVIDIA driver older than 580")
    return session


def io_names(session: Any) -> tuple[list[str], list[str]]:
    """(input names, output names) of a session, in graph order."""
    return [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
