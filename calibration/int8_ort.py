"""INT8 encoder graphs for ONNX Runtime CPU: static QDQ with per-channel weights.

Only the encoder *bodies* are quantized: the MatMul/Gemm nodes whose weight is a constant (the transformer
and conformer linear layers) and, with ``include_conv`` (``mmmos-calibrate``'s default), the body's Convs
with constant weights (MuQ's conformer conv modules and subsampling, M2D's patch embedding). Front-ends (the
Conv1d-DFT + mel matrix, WavLM's conv feature extractor), norms, softmax, attention products, pooling and
L2-normalisation keep fp32, and the ensemble graph is never quantized. Ranges come from a calibration data
reader over real audio windows.

Dynamic quantization (``mode="dynamic"``) is kept only so ``bench --compare-modes`` can re-measure the
choice: on the full random-weight bundle it was about as fast as static QDQ on the same MatMuls (within
noise), while static QDQ that also covers the body Convs was more than twice as fast as fp32, so
calibration uses static QDQ.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

FRONTEND_TOKENS: frozenset[str] = frozenset(
    {"frontend", "front_end", "frontends", "mel", "melspec", "mel_fb", "stft", "spec", "spectrogram",
     "feature_extractor", "feature_extraction", "preprocessor", "fbank"}
)
"""Module-path components that mark a node as part of a front-end (kept fp32)."""

QUANT_OP_TYPES: tuple[str, ...] = ("MatMul", "Gemm")

BODY_MODULE = "encoder"
"""``PooledEncoder`` keeps the encoder under ``.encoder``; nodes outside it (masking, pooling, the frame -> step
averaging matrix) are the wrapper's and stay fp32."""

LARGE_MODEL_BYTES = 1_800_000_000
"""Above this, graphs are read and written with external data (protobuf's 2 GB limit)."""


def node_scope(node: onnx.NodeProto) -> str:
    """A node's module path: its name (TorchScript export: ``/encoder/layers.0/...``) plus the dynamo exporter's
    ``pkg.torch.onnx.name_scopes`` / ``namespace`` metadata."""
    parts = [node.name]
    parts += [p.value for p in node.metadata_props if p.key in ("pkg.torch.onnx.name_scopes", "namespace")]
    return " ".join(parts)


def module_path(node: onnx.NodeProto) -> list[str]:
    """The module path of a node: from the dynamo exporter's ``name_scopes`` metadata when present, else from
    a TorchScript-style name ``/a/b/Op`` (-> ``["a", "b"]``); empty for a top-level or anonymous node."""
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            return [t for t in re.split(r"[\[\]',\s]+", p.value) if t][:-1]
    if node.name.startswith("/"):
        return [t for t in node.name.split("/")[1:-1] if t]
    return []


def is_frontend(node: onnx.NodeProto, extra_patterns: Sequence[str] = ()) -> bool:
    """True when the node's module path names a front-end component, or matches one of ``extra_patterns``."""
    scope = node_scope(node)
    tokens = {t.lower() for t in re.split(r"[/.\[\]',:\s]+", scope) if t}
    if tokens & FRONTEND_TOKENS:
        return True
    return any(re.search(p, scope) for p in extra_patterns)


def _constant_names(graph: onnx.GraphProto) -> set[str]:
    """Names of tensors that are constants: initializers, Constant outputs, and Transpose/Cast/Identity of them."""
    names = {i.name for i in graph.initializer}
    changed = True
    while changed:
        changed = False
        for n in graph.node:
            if n.op_type == "Constant" or (n.op_type in ("Transpose", "Cast", "Identity") and n.input[0] in names):
                for o in n.output:
                    if o not in names:
                        names.add(o)
                        changed = True
    return names


def body_nodes(
    model: onnx.ModelProto, exclude_patterns: Sequence[str] = (), include_conv: bool = False
) -> tuple[list[str], list[str]]:
    """(body MatMul/Gemm nodes with a constant weight, to quantize; front-end compute nodes, kept fp32).

    MatMuls between two activations (attention scores, pooling by a mask) are not quantized; body Convs
    (conformer pointwise/depthwise, WavLM's positional conv, M2D's patch embedding) only with ``include_conv``.
    """
    graph = model.graph
    consts = _constant_names(graph)
    # when the graph is a PooledEncoder export, only nodes inside its encoder module are body nodes
    wrapped = any(module_path(n)[:1] == [BODY_MODULE] for n in graph.node)
    body: list[str] = []
    frontend: list[str] = []
    for i, n in enumerate(graph.node):
        if n.op_type not in (*QUANT_OP_TYPES, "Conv"):
            continue
        if not n.name:  # the quantizer addresses nodes by name; give anonymous ones a stable one
            n.name = f"{n.op_type}_{i}"
        if is_frontend(n, exclude_patterns):
            frontend.append(n.name)  # reported: compute nodes that stay fp32 because they are front-end
        elif wrapped and module_path(n)[:1] != [BODY_MODULE]:
            continue  # pooling / frame alignment of the wrapper: fp32
        elif (n.op_type in QUANT_OP_TYPES or include_conv) and len(n.input) >= 2 and n.input[1] in consts:
            body.append(n.name)
    return body, frontend


class WindowReader:
    """A calibration data reader (ORT's ``CalibrationDataReader`` protocol: ``get_next``) over real audio
    windows (``{"wav": [1, N], "lengths": [1]}``)."""

    def __init__(self, feeds: Iterable[dict[str, np.ndarray]]) -> None:
        self._feeds = list(feeds)
        self.input_names: set[str] | None = None  # set by quantize_encoder: feed only what the graph takes
        if not self._feeds:
            raise ValueError("the INT8 calibration reader got no windows; give mmmos-calibrate some audio.")
        self._it: Iterator[dict[str, np.ndarray]] = iter(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next window's feed, or None when all were given."""
        feed = next(self._it, None)
        if feed is None or self.input_names is None:
            return feed
        return {k: v for k, v in feed.items() if k in self.input_names}

    def rewind(self) -> None:
        """Start again from the first window (for a second calibration pass)."""
        self._it = iter(self._feeds)

    def __len__(self) -> int:
        return len(self._feeds)


@dataclass
class QuantResult:
    """What one quantization wrote: output file, mode, and which nodes were quantized or kept fp32."""

    output: Path
    mode: str
    quantized: list[str] = field(default_factory=list)
    kept_frontend: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON form for the report."""
        return {
            "file": self.output.name,
            "mode": self.mode,
            "n_quantized": len(self.quantized),
            "n_frontend_kept_fp32": len(self.kept_frontend),
            "settings": self.settings,
        }


class _DropPreprocessHint(logging.Filter):
    """Drops ORT's "Please consider to run pre-processing" line: symbolic-shape pre-processing fails on some
    exports (research/deploy.md 4.4) and only affects QDQ placement, which nodes_to_quantize fixes here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def _quiet_hint() -> Iterator[None]:
    root = logging.getLogger()
    flt = _DropPreprocessHint()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def _calibration_method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    try:
        return methods[name.lower()]
    except KeyError:
        raise ValueError(f"unknown calibration method {name!r}; use one of {', '.join(methods)}.") from None


def _is_large(path: Path) -> bool:
    data = path.with_name(path.name + ".data")
    size = path.stat().st_size + (data.stat().st_size if data.exists() else 0)
    return size > LARGE_MODEL_BYTES


def quantize_encoder(
    src: str | Path,
    dst: str | Path,
    reader: WindowReader | None = None,
    mode: str = "static",
    method: str = "minmax",
    per_channel: bool = True,
    reduce_range: bool = False,
    symmetric_activations: bool = False,
    exclude_patterns: Sequence[str] = (),
    include_conv: bool = False,
    quantize_bias: bool = True,
) -> QuantResult:
    """Quantize one fp32 encoder graph's body to INT8 and write it to ``dst``.

    ``mode="static"``: QDQ, uint8 activations (int8 and symmetric when ``symmetric_activations``, as TensorRT
    needs) calibrated on ``reader``, int8 weights per output channel. ``mode="dynamic"``: int8 weights,
    activations quantized at run time (no reader needed). ``reduce_range`` is for CPUs without VNNI.
    ``include_conv`` also quantizes the body's Conv nodes (front-end convs stay fp32 either way).
    ``quantize_bias=False`` (static QDQ only) keeps Conv/Gemm biases float instead of int32 + DequantizeLinear,
    which TensorRT's ONNX parser rejects.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src), load_external_data=False)
    body, frontend = body_nodes(model, exclude_patterns, include_conv)
    op_types = [*QUANT_OP_TYPES, "Conv"] if include_conv else list(QUANT_OP_TYPES)
    if not body:
        raise ValueError(f"{src.name} has no MatMul/Gemm with a constant weight outside its front-end; nothing to "
                         "quantize (check the graph, or the exclude patterns).")
    large = _is_large(src)
    settings: dict = {"per_channel": per_channel, "reduce_range": reduce_range, "weights": "int8", "ops": op_types}
    if mode == "dynamic":
        quantize_dynamic(src, dst, op_types_to_quantize=op_types, nodes_to_quantize=body,
                         per_channel=per_channel, reduce_range=reduce_range, weight_type=QuantType.QInt8,
                         use_external_data_format=large, extra_options={"MatMulConstBOnly": True})
        settings["activations"] = "dynamic uint8"
    elif mode == "static":
        if reader is None:
            raise ValueError("static INT8 quantization needs a calibration reader over real windows.")
        reader.input_names = {i.name for i in model.graph.input}
        reader.rewind()
        act = QuantType.QInt8 if symmetric_activations else QuantType.QUInt8
        extra = {"MatMulConstBOnly": True, "ActivationSymmetric": symmetric_activations, "WeightSymmetric": True,
                 "CalibTensorRangeSymmetric": symmetric_activations, "QuantizeBias": quantize_bias,
                 # not "CalibMaxIntermediateOutputs": ORT 1.32's MinMax calibrator drops, not merges, each chunk.
                 # MinMax keeps only per-window ReduceMin/ReduceMax outputs, so memory stays small without it.
                 # nn.Linear exports as MatMul(x, W^T): W^T is [in, out], so output channels are axis 1
                 "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1}}
        with _quiet_hint():
            quantize_static(src, dst, calibration_data_reader=reader, quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=op_types, nodes_to_quantize=body,
                            per_channel=per_channel, reduce_range=reduce_range, activation_type=act,
                            weight_type=QuantType.QInt8, use_external_data_format=large,
                            calibrate_method=_calibration_method(method), extra_options=extra)
        settings.update({"activations": "int8 symmetric" if symmetric_activations else "uint8",
                         "calibration": method, "calibration_windows": len(reader), "format": "QDQ",
                         "quantize_bias": quantize_bias})
    else:
        raise ValueError(f"unknown INT8 mode {mode!r}; use 'static' or 'dynamic'.")
    return QuantResult(dst, mode, body, frontend, settings)
