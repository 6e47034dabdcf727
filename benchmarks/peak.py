"""This machine's matrix-multiply peak, per precision: the denominator of "fraction of the FLOP floor".

The peak is measured, not taken from a spec sheet: the best GFLOP/s over a few GEMM shapes, through
numpy (BLAS, fp32) and through a one-node ONNX Runtime graph (MLAS: MatMul fp32/fp16, MatMulInteger
int8) with the same intra-op threads the benchmark's sessions use. The encoder shapes (a few hundred
frames x 768..4096) are included so the peak is one the graphs could reach, not only a huge square.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# (M, K, N): a square GEMM and the shapes of a Base-size transformer over 10 s (500 frames).
SHAPES: tuple[tuple[int, int, int], ...] = ((1024, 1024, 1024), (500, 768, 3072), (500, 3072, 768))


def _best_seconds(fn: Any, min_time: float = 0.3, max_reps: int = 50) -> float:
    """Fastest of repeated calls after one warm-up (peak = best case, so min not median)."""
    fn()
    best = float("inf")
    start = time.perf_counter()
    for _ in range(max_reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() - start > min_time:
            break
    return best


def numpy_gflops(m: int, k: int, n: int, dtype: type = np.float32) -> float:
    """GFLOP/s of numpy's `a @ b` for one [m, k] x [k, n] product."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    return 2 * m * k * n / _best_seconds(lambda: a @ b) / 1e9


def _matmul_model(k: int, n: int, precision: str) -> onnx.ModelProto:
    """One MatMul (fp32/fp16) or MatMulInteger (int8: uint8 activations x int8 weights) with constant B."""
    rng = np.random.default_rng(0)
    if precision == "int8":
        b = rng.integers(-127, 128, (k, n), dtype=np.int8)
        node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    else:
        dt = np.float16 if precision == "fp16" else np.float32
        b = rng.standard_normal((k, n)).astype(dt)
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
        a_type = y_type = TensorProto.FLOAT16 if precision == "fp16" else TensorProto.FLOAT
    graph = helper.make_graph(
        [node], "peak", [helper.make_tensor_value_info("a", a_type, ["m", k])],
        [helper.make_tensor_value_info("y", y_type, ["m", n])], [numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def ort_gflops(m: int, k: int, n: int, precision: str = "fp32", threads: int = 0) -> float:
    """GFLOP/s (GOP/s for int8) of ONNX Runtime CPU on one [m, k] x [k, n] product.

    Raises:
        RuntimeError: onnxruntime has no CPU kernel for that precision (e.g. fp16 MatMul on some x86 builds).
    """
    from mmmos.runtime.errors import BackendUnavailableError
    from mmmos.runtime.ort_session import make_session

    try:
        sess = make_session(_matmul_model(k, n, precision).SerializeToString(), threads=threads)
    except BackendUnavailableError as exc:
        raise RuntimeError(f"onnxruntime cannot run a {precision} MatMul here: {exc}") from None
    rng = np.random.default_rng(1)
    if precision == "int8":
        a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    else:
        a = rng.standard_normal((m, k)).astype(np.float16 if precision == "fp16" else np.float32)
    return 2 * m * k * n / _best_seconds(lambda: sess.run(None, {"a": a})) / 1e9


def measure_peaks(precisions: list[str], threads: int = 0) -> dict[str, dict[str, Any]]:
    """Measured peak per precision: `{p: {"gflops": best, "by_method": {"ort MxKxN": g, ...}, "errors": [...]}}`.

    fp32 also tries numpy (BLAS); fp16 and int8 only ORT (numpy has no fast fp16/int8 GEMM).
    A precision no method could run has `"gflops": None`.
    """
    out: dict[str, dict[str, Any]] = {}
    for p in dict.fromkeys(precisions):
        by_method: dict[str, float] = {}
        errors: list[str] = []
        for m, k, n in SHAPES:
            label = f"{m}x{k}x{n}"
            try:
                by_method[f"ort {label}"] = ort_gflops(m, k, n, p, threads)
            except (RuntimeError, ImportError) as exc:
                errors.append(str(exc).splitlines()[0])
                break
            if p == "fp32":
                by_method[f"numpy {label}"] = numpy_gflops(m, k, n)
        out[p] = {"gflops": max(by_method.values()) if by_method else None, "by_method": by_method,
                  "errors": errors, "threads": threads}
    return out
