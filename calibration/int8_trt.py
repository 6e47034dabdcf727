"""INT8 for TensorRT: an explicit-quantization (QDQ) graph, a calibration cache, and an engine build.

TensorRT 10.12+ deprecates, and TensorRT 11 removes, implicit INT8 (``BuilderFlag.INT8`` + calibrator): INT8
comes from Q/DQ nodes in the ONNX (research/encoders.md section 8). So the main artefact is a QDQ graph with
what TensorRT requires: int8 *symmetric* activations (zero point 0) and symmetric per-channel int8 weights,
on the same encoder-body MatMuls as the CPU graph (front-ends, norms, pooling stay fp32). It runs on ONNX
Runtime CPU as well, so its accuracy is checked here without a GPU. ``write_calibration_cache`` adds the
ONNX Runtime TensorRT-EP calibration table (``calibration.flatbuffers``) for TensorRT <= 10 implicit INT8.
``build_int8_engine`` needs tensorrt and a GPU; where they are absent ``trt_unavailable_reason`` says why.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .int8_ort import QuantResult, WindowReader, quantize_encoder


def write_trt_qdq(
    src: str | Path, dst: str | Path, feeds: Sequence[dict[str, np.ndarray]], method: str = "minmax",
    exclude_patterns: Sequence[str] = (), include_conv: bool = True,
) -> QuantResult:
    """Write the TensorRT QDQ graph of one fp32 encoder graph (symmetric int8 activations and weights)."""
    res = quantize_encoder(src, dst, WindowReader(feeds), mode="static", method=method, per_channel=True,
                           symmetric_activations=True, exclude_patterns=exclude_patterns, include_conv=include_conv)
    res.mode = "static-qdq-trt"
    return res


def write_calibration_cache(src: str | Path, feeds: Sequence[dict[str, np.ndarray]], out_dir: str | Path) -> Path:
    """Write the ONNX Runtime TensorRT-EP INT8 calibration table of ``src`` into ``out_dir``.

    Files: ``calibration.flatbuffers`` (what ``trt_int8_calibration_table_name`` points at), plus
    ``calibration.cache`` / ``calibration.json``. Ranges are symmetric min/max of every tensor over the
    windows. Only TensorRT <= 10 (implicit INT8) reads it; TensorRT 11 uses the QDQ graph instead.
    """
    from onnxruntime.quantization import CalibrationMethod, create_calibrator, write_calibration_table

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    reader = WindowReader(feeds)
    import onnx

    model = onnx.load(str(src), load_external_data=False)
    reader.input_names = {i.name for i in model.graph.input}
    with tempfile.TemporaryDirectory(prefix="mmmos-trtcal-") as tmp:
        cal = create_calibrator(Path(src), None, augmented_model_path=Path(tmp) / "augmented.onnx",
                                calibrate_method=CalibrationMethod.MinMax, extra_options={"symmetric": True})
        cal.collect_data(reader)
        ranges = cal.compute_data()
        write_calibration_table({k: ranges[k] for k in ranges.keys()}, dir=str(out_dir))  # noqa: SIM118
    return out_dir / "calibration.flatbuffers"


def trt_unavailable_reason() -> str | None:
    """None when tensorrt imports and a CUDA GPU is visible; else one sentence saying what is missing."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "tensorrt is not installed (pip install 'mmmos[trt]' on a machine with an NVIDIA GPU)"
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return "cuda-bindings is not installed (pip install 'mmmos[trt]')"
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count < 1:
        return "no CUDA GPU is visible to this process"
    return None


def build_int8_engine(
    qdq_onnx: str | Path, plan: str | Path, window_samples: int, batch: tuple[int, int, int] = (1, 4, 16),
    workspace_gb: float = 4.0,
) -> Path:
    """Build a TensorRT engine from a QDQ graph (explicit INT8, strongly typed) and write it to ``plan``.

    ``batch`` is the (min, opt, max) windows per batch of the optimization profile. Raises RuntimeError
    with the reason when tensorrt or a GPU is missing, or when the parser rejects the graph.
    """
    why = trt_unavailable_reason()
    if why is not None:
        raise RuntimeError(f"cannot build a TensorRT INT8 engine: {why}.")
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(qdq_onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {qdq_onnx}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    profile = builder.create_optimization_profile()
    lo, opt, hi = batch
    profile.set_shape("wav", (lo, window_samples), (opt, window_samples), (hi, window_samples))
    profile.set_shape("lengths", (lo,), (opt,), (hi,))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {qdq_onnx}; see the log above.")
    plan = Path(plan)
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_bytes(bytes(serialized))
    return plan
