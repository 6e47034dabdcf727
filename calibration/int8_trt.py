"""INT8 for TensorRT: an explicit-quantization (QDQ) graph its ONNX parser accepts, and its engines.

TensorRT 11 removed implicit INT8 (`BuilderFlag.INT8` + calibrators; deprecated since 10.1/10.12): INT8 comes from
Q/DQ nodes in the ONNX. So the artefact is `<encoder>.int8-trt.onnx` with what onnx-tensorrt requires: int8
*symmetric* activations (zero point 0, no uint8), symmetric per-channel int8 weights, and float biases (ORT's
default `QuantizeBias=True` puts a DequantizeLinear on an int32 Conv/Gemm bias, which the parser rejects), on the
same encoder-body nodes as the CPU graph (front-ends, norms, pooling stay fp32; WavLM's feature-extractor convs
after layer 0 too with the opt-in `quantize_feature_extractor`). GELUs are fused before quantization only into the
standard ONNX `Gelu` (opset >= 20; the parser knows no com.microsoft ops): the exported opset-17 graphs keep the
exact-erf pattern, which TensorRT parses as it is. It runs on ONNX Runtime CPU as well, so its accuracy is checked
here without a GPU. The runtime reads it for `--backend tensorrt --precision int8` (graph key `int8-trt`); its plans
are built by the runtime's engine module (`runtime/trt_engine.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmmos.runtime.trt_engine import build_plans

from .int8_ort import QuantResult, WindowReader, quantize_encoder


def write_trt_qdq(
    src: str | Path, dst: str | Path, feeds: Sequence[dict[str, np.ndarray]], method: str = "minmax",
    exclude_patterns: Sequence[str] = (), include_conv: bool = True, quantize_feature_extractor: bool = False,
) -> QuantResult:
    """Write the TensorRT QDQ graph of one fp32 encoder graph (symmetric int8 activations and weights, float biases,
    GELUs fused into ONNX `Gelu` only at opset >= 20)."""
    res = quantize_encoder(src, dst, WindowReader(feeds), mode="static", method=method, per_channel=True,
                           symmetric_activations=True, exclude_patterns=exclude_patterns, include_conv=include_conv,
                           quantize_bias=False, quantize_feature_extractor=quantize_feature_extractor, gelu="onnx")
    res.mode = "static-qdq-trt"
    return res


def build_int8_plans(bundle: Path, graphs: list[str], log: Callable[[str], None] = print,
                     samples: dict[str, tuple[int, int]] | None = None) -> dict[str, Any]:
    """Build the TensorRT plans of the `int8-trt` graphs into the bundle's `engines/`, beside the exporter's plans
    (same profile where this TensorRT and GPU already have some); skipped, with the reason, without TensorRT/GPU.
    `samples` gives the (min, max) samples of graphs with a dynamic samples axis."""
    return build_plans(Path(bundle), graphs, None, log, samples=samples)
