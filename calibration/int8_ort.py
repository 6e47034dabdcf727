"""INT8 encoder graphs for ONNX Runtime CPU: static QDQ with per-channel weights.

Only the encoder *bodies* are quantized: the MatMul/Gemm nodes whose weight is a constant (the transformer
and conformer linear layers) and, with ``include_conv`` (``mmmos-calibrate``'s default), the body's Convs
with constant weights (MuQ's conformer conv modules and subsampling, M2D's patch embedding). Front-ends (the
Conv1d-DFT + mel matrix, WavLM's conv feature extractor), norms, softmax, attention products, pooling and
L2-normalisation keep fp32, and the ensemble graph is never quantized. Ranges come from a calibration data
reader over real audio windows.

Before quantizing, each exact-erf GELU (``x * (1 + erf(x / sqrt 2)) * 0.5``, five nodes in the export) is fused
into one ``com.microsoft.Gelu`` node with a float32 value_info on its output (``fuse_gelu``). The value_info
matters: without it ``quantize_static`` does not calibrate the Gelu outputs and silently leaves the next
MatMul/Conv's activation in fp32. The TensorRT variant uses the standard ONNX ``Gelu`` instead, and only where
the graph's opset is 20 or more (the TensorRT parser knows no com.microsoft ops); below that its GELUs stay as
exported.

``quantize_feature_extractor`` (opt-in, ``mmmos-calibrate --quantize-feature-extractor``) also quantizes the
Convs of WavLM's conv feature extractor layers 1..6 (never layer 0 and its GroupNorm): the largest INT8 speed-up
measured, but on random weights it moved the pooled features by 43% (calibration/NOTES.md). ``pooled_error``
measures that damage (relative L2 of the pooled output, INT8 vs fp32), which calibration reports per encoder.

Dynamic quantization (``mode="dynamic"``) is kept only so ``bench --compare-modes`` can re-measure the
choice: on the full random-weight bundle it was about as fast as static QDQ on the same MatMuls (within
noise), while static QDQ that also covers the body Convs was more than twice as fast as fp32, so
calibration uses static QDQ.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

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

FEATURE_EXTRACTOR = "feature_extractor"
"""WavLM's conv feature extractor module; ``quantize_feature_extractor`` quantizes its ``conv_layers.K`` Convs,
K >= ``FE_FIRST_LAYER``."""

FE_FIRST_LAYER = 1
"""Layer 0 (the 10-tap stride-5 conv on raw samples, followed by the GroupNorm over time) always stays fp32."""

GELU_DOMAINS: dict[str, tuple[str, int]] = {"com.microsoft": ("com.microsoft", 1), "onnx": ("", 20)}
"""``fuse_gelu`` targets: ORT's contrib ``com.microsoft.Gelu`` (any opset), or the standard ``Gelu`` (opset >= 20)."""

FEATURE_CHECK_WINDOWS = 8
"""Windows ``pooled_error`` runs through the fp32 and INT8 graphs in calibration."""

FEATURE_WARN_REL_L2 = 0.10
"""Above this relative L2 error of the pooled output (INT8 vs fp32), calibration logs a warning: the score gate
can still pass such a graph when the heads' scores hardly spread (random-weight heads)."""


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


def feature_extractor_layer(node: onnx.NodeProto) -> int | None:
    """K for a node under ``feature_extractor/conv_layers.K`` (WavLM's conv feature extractor), else None."""
    path = module_path(node)
    for outer, inner in itertools.pairwise(path):
        if outer == FEATURE_EXTRACTOR:
            m = re.fullmatch(r"conv_layers\.(\d+)", inner)
            return int(m.group(1)) if m else None
    return None


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
    model: onnx.ModelProto, exclude_patterns: Sequence[str] = (), include_conv: bool = False,
    quantize_feature_extractor: bool = False,
) -> tuple[list[str], list[str]]:
    """(body MatMul/Gemm nodes with a constant weight, to quantize; front-end compute nodes, kept fp32).

    MatMuls between two activations (attention scores, pooling by a mask) are not quantized; body Convs
    (conformer pointwise/depthwise, WavLM's positional conv, M2D's patch embedding) only with ``include_conv``.
    ``quantize_feature_extractor`` adds the Convs (constant weight) of WavLM's feature extractor layers >= 1 to
    the first list, whether or not ``include_conv``; a node matching ``exclude_patterns`` stays fp32 regardless.
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
        const_weight = len(n.input) >= 2 and n.input[1] in consts
        inside = not wrapped or module_path(n)[:1] == [BODY_MODULE]
        if (quantize_feature_extractor and n.op_type == "Conv" and const_weight and inside
                and (feature_extractor_layer(n) or 0) >= FE_FIRST_LAYER
                and not any(re.search(p, node_scope(n)) for p in exclude_patterns)):
            body.append(n.name)  # opt-in: WavLM's feature-extractor convs after layer 0
        elif is_frontend(n, exclude_patterns):
            frontend.append(n.name)  # reported: compute nodes that stay fp32 because they are front-end
        elif not inside:
            continue  # pooling / frame alignment of the wrapper: fp32
        elif (n.op_type in QUANT_OP_TYPES or include_conv) and const_weight:
            body.append(n.name)
    return body, frontend


def _small_constants(graph: onnx.GraphProto, max_elems: int = 16) -> dict[str, np.ndarray]:
    """Values of the graph's small constants (inline initializers and Constant nodes), by tensor name."""
    values: dict[str, np.ndarray] = {}
    for init in graph.initializer:
        if init.data_location != TensorProto.EXTERNAL and math.prod(init.dims) <= max_elems:
            values[init.name] = numpy_helper.to_array(init)
    for n in graph.node:
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            for a in n.attribute:
                if a.name == "value" and math.prod(a.t.dims) <= max_elems:
                    values[n.output[0]] = numpy_helper.to_array(a.t)
                elif a.name == "value_float":
                    values[n.output[0]] = np.asarray(a.f, np.float32)
    return values


@dataclass
class _GeluMatch:
    x: str  # the GELU's input
    out: str  # its output (the last node's)
    nodes: list[onnx.NodeProto]  # the 5 nodes that compute it
    erf: onnx.NodeProto


def _find_gelus(graph: onnx.GraphProto) -> list[_GeluMatch]:
    """Every exact-erf GELU: ``Div(x, sqrt 2)`` (or ``Mul(x, 1/sqrt 2)``) -> Erf -> ``Add 1`` -> then either
    ``Mul x`` -> ``Mul 0.5`` (the TorchScript export), ``Mul 0.5`` -> ``Mul x``, or a ``Mul(x, 0.5)`` computed
    beside it. Only float32 scalar constants match, and every intermediate tensor must feed the next node alone
    (and be no graph output), so replacing the five nodes by one cannot change another consumer."""
    consts = _small_constants(graph)
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    outputs = {o.name for o in graph.output}

    def is_const(name: str, value: float) -> bool:
        v = consts.get(name)
        return (v is not None and v.dtype == np.float32 and v.size == 1 and v.ndim <= 1
                and abs(float(v.reshape(())) - value) <= 1e-6 * abs(value))

    def other(node: onnx.NodeProto, name: str) -> str | None:
        if len(node.input) != 2 or name not in node.input:
            return None
        return node.input[1] if node.input[0] == name else node.input[0]

    def only_consumer(name: str, op_type: str) -> onnx.NodeProto | None:
        users = consumers.get(name, [])
        if name in outputs or len(users) != 1 or users[0].op_type != op_type or users[0].domain not in ("", "ai.onnx"):
            return None
        return users[0]

    found: list[_GeluMatch] = []
    for erf in graph.node:
        if erf.op_type != "Erf" or erf.domain not in ("", "ai.onnx"):
            continue
        scale = producer.get(erf.input[0])
        if scale is None or only_consumer(erf.input[0], "Erf") is None:
            continue
        div = scale.op_type == "Div" and is_const(scale.input[1], math.sqrt(2.0))
        if div or (scale.op_type == "Mul" and is_const(scale.input[1], 1 / math.sqrt(2.0))):
            x = scale.input[0]  # x / sqrt 2, or x * (1 / sqrt 2)
        elif scale.op_type == "Mul" and is_const(scale.input[0], 1 / math.sqrt(2.0)):
            x = scale.input[1]
        else:
            continue
        add = only_consumer(erf.output[0], "Add")
        if add is None or not is_const(other(add, erf.output[0]) or "", 1.0):
            continue
        mul = only_consumer(add.output[0], "Mul")
        if mul is None:
            continue
        factor = other(mul, add.output[0]) or ""
        if factor == x or is_const(factor, 0.5):
            last = only_consumer(mul.output[0], "Mul")
            tail = other(last, mul.output[0]) if last is not None else None
            # (x * (1 + erf)) * 0.5, or ((1 + erf) * 0.5) * x
            if last is None or not (is_const(tail or "", 0.5) if factor == x else tail == x):
                continue
            nodes = [scale, erf, add, mul, last]
        else:  # (x * 0.5) * (1 + erf)
            half = producer.get(factor)
            if (half is None or half.op_type != "Mul" or only_consumer(factor, "Mul") is not mul
                    or not is_const(other(half, x) or "", 0.5)):
                continue
            last = mul
            nodes = [half, scale, erf, add, mul]
        found.append(_GeluMatch(x, last.output[0], nodes, erf))
    return found


def _inferred_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Tensor types/shapes from ONNX shape inference, run on a skeleton of the model: weights larger than a few
    elements are replaced by external-data stubs, so a graph near protobuf's 2 GB limit is not serialized whole."""
    skeleton = onnx.ModelProto()
    skeleton.ir_version = model.ir_version
    skeleton.opset_import.extend(model.opset_import)
    g = skeleton.graph
    for part in ("node", "input", "output", "value_info"):
        getattr(g, part).extend(getattr(model.graph, part))
    for init in model.graph.initializer:
        if init.data_location == TensorProto.EXTERNAL or math.prod(init.dims) <= 64:
            g.initializer.append(init)
        else:
            stub = g.initializer.add()
            stub.name, stub.data_type = init.name, init.data_type
            stub.dims.extend(init.dims)
            stub.data_location = TensorProto.EXTERNAL
            stub.external_data.add(key="location", value="not-read")
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton).graph
    except Exception:  # shapes are a nicety here; the type alone is what the quantizer needs
        inferred = g
    return {v.name: v.type for v in (*inferred.value_info, *inferred.input, *inferred.output)}


def fuse_gelu(model: onnx.ModelProto, target: str = "com.microsoft") -> int:
    """Rewrite each exact-erf GELU of ``model`` (in place) into one Gelu node; returns how many were fused.

    ``target="com.microsoft"``: ORT's contrib op (fast CPU kernel, any opset); ``"onnx"``: the standard ``Gelu``
    (exact, ``approximate="none"``), only when the graph's default-domain opset is >= 20 (else nothing is fused
    and 0 returned). Each fused output gets a float32 value_info (with its input's shape where shape inference
    knows it): ``quantize_static`` only calibrates tensors it knows are float, so without it the activation
    after a com.microsoft.Gelu would not be quantized. The rewrite computes the same function: on ORT CPU the
    outputs match the unfused graph's to float rounding (tests/calibration/test_int8.py).
    """
    if target not in GELU_DOMAINS:
        raise ValueError(f"unknown GELU target {target!r}; use one of {', '.join(GELU_DOMAINS)}.")
    domain, min_opset = GELU_DOMAINS[target]
    graph = model.graph
    opset = next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), 0)
    if target == "onnx" and opset < min_opset:
        return 0
    matches = _find_gelus(graph)
    if not matches:
        return 0
    types = _inferred_types(model)
    taken = {n.name for n in graph.node}
    replace: dict[int, onnx.NodeProto] = {}  # id of each match's last node in graph order -> its Gelu
    drop: set[int] = set()
    position = {id(n): i for i, n in enumerate(graph.node)}
    for k, m in enumerate(matches):
        name, renamed = re.subn(r"Erf(_\d+)?$", r"Gelu\1", m.erf.name)
        if not renamed:
            name = f"Gelu_fused_{k}"
        while name in taken:
            name += "_fused"
        taken.add(name)
        gelu = helper.make_node("Gelu", [m.x], [m.out], name=name, domain=domain)
        gelu.metadata_props.extend(m.erf.metadata_props)  # keeps the module path (dynamo name scopes)
        ids = [id(n) for n in m.nodes]
        replace[max(ids, key=position.__getitem__)] = gelu
        drop.update(ids)
    kept: list[onnx.NodeProto] = []
    for n in graph.node:
        if id(n) in replace:
            kept.append(replace[id(n)])  # where the pattern ended: its input exists, its consumers follow
        elif id(n) not in drop:
            kept.append(n)
    del graph.node[:]
    graph.node.extend(kept)
    _drop_unused_constants(graph)
    if domain and not any(i.domain == domain for i in model.opset_import):
        model.opset_import.append(helper.make_opsetid(domain, 1))
    typed = {v.name for v in (*graph.value_info, *graph.input, *graph.output)}
    for m in matches:
        if m.out in typed:
            continue
        vi = helper.make_tensor_value_info(m.out, TensorProto.FLOAT, None)
        known = types.get(m.x)
        if known is not None and known.tensor_type.HasField("shape"):
            vi.type.tensor_type.shape.CopyFrom(known.tensor_type.shape)
        graph.value_info.append(vi)
    return len(matches)


def _drop_unused_constants(graph: onnx.GraphProto) -> None:
    """Remove Constant nodes and inline initializers nothing reads any more (the fused GELUs' scalars)."""
    used = {name for n in graph.node for name in n.input} | {o.name for o in (*graph.output, *graph.input)}
    kept = [n for n in graph.node if n.op_type != "Constant" or any(o in used for o in n.output)]
    if len(kept) != len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)
    dead = [i for i in graph.initializer
            if i.name not in used and i.data_location != TensorProto.EXTERNAL and math.prod(i.dims) <= 16]
    for init in dead:
        graph.initializer.remove(init)


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
    quantized_feature_extractor: list[str] = field(default_factory=list)  # opt-in FE convs among ``quantized``
    gelu_fused: int = 0
    features: dict | None = None  # ``pooled_error`` on the check windows, when measured

    def to_dict(self) -> dict:
        """JSON form for the report."""
        out = {
            "file": self.output.name,
            "mode": self.mode,
            "n_quantized": len(self.quantized),
            "n_frontend_kept_fp32": len(self.kept_frontend),
            "quantized_feature_extractor": list(self.quantized_feature_extractor),
            "gelu_fused": self.gelu_fused,
            "settings": self.settings,
        }
        if self.features is not None:
            out["features"] = self.features
        return out


def _pooled_output(graph: str | Path, feeds: Sequence[dict[str, np.ndarray]], threads: int) -> tuple[str, np.ndarray]:
    """(name, stacked values) of a graph's ``*_pooled`` output (else its first) over ``feeds``, on ORT CPU."""
    from mmmos.runtime.ort_session import io_names, make_session

    session = make_session(graph, "cpu", threads)
    inputs, outputs = io_names(session)
    name = next((o for o in outputs if o.endswith("_pooled")), outputs[0])
    rows = [session.run([name], {k: v for k, v in f.items() if k in inputs})[0] for f in feeds]
    return name, np.concatenate(rows).astype(np.float64)


def pooled_error(reference: str | Path, graph: str | Path, feeds: Sequence[dict[str, np.ndarray]],
                 threads: int = 0) -> dict:
    """How far ``graph`` moves the pooled encoder output from ``reference`` (fp32) on ``feeds`` (ORT CPU).

    ``pooled_rel_l2`` is ||int8 - fp32|| / ||fp32|| over all windows' pooled outputs (WavLM: every hidden
    state's masked mean); ``pooled_rel_l2_max_window`` the worst single window. A feature-level number, because
    with random-weight heads the scores hardly spread and the score gate can pass badly damaged features.
    """
    if not feeds:
        raise ValueError("pooled_error needs at least one window.")
    name, ref = _pooled_output(reference, feeds, threads)
    _, got = _pooled_output(graph, feeds, threads)
    diff = (got - ref).reshape(len(ref), -1)
    norms = np.linalg.norm(ref.reshape(len(ref), -1), axis=1)
    per_window = np.linalg.norm(diff, axis=1) / np.maximum(norms, 1e-12)
    return {"output": name, "windows": len(feeds),
            "pooled_rel_l2": round(float(np.linalg.norm(diff) / max(float(np.linalg.norm(norms)), 1e-12)), 6),
            "pooled_rel_l2_max_window": round(float(per_window.max()), 6),
            "pooled_max_abs": round(float(np.abs(diff).max()), 6),
            "warn_above": FEATURE_WARN_REL_L2}


@contextlib.contextmanager
def _working_copy(src: Path, model: onnx.ModelProto, changed: bool) -> Iterator[Path]:
    """The path to quantize from: ``src`` itself when ``model`` is unchanged, else ``model`` saved as a temporary
    file. External weights (graphs past 2 GB) are neither loaded nor copied: such a graph's copy is a hidden
    temporary file beside ``src``, so its relative data locations still name ``src``'s data file (onnx refuses
    data reached through symbolic or hard links); other graphs are copied into a temp folder."""
    if not changed:
        yield src
        return
    external = any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)
    with tempfile.TemporaryDirectory(prefix="mmmos-int8-") as tmp:
        folder = src.parent if external else Path(tmp)
        fd, name = tempfile.mkstemp(prefix=f".{src.stem}.", suffix=".onnx", dir=folder)
        os.close(fd)
        path = Path(name)
        try:
            onnx.save_model(model, str(path))  # initializers with external data keep their references
            yield path
        finally:
            path.unlink(missing_ok=True)


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
    quantize_feature_extractor: bool = False,
    gelu: str | None = "com.microsoft",
    check_feeds: Sequence[dict[str, np.ndarray]] | None = None,
    threads: int = 0,
    log: Callable[[str], None] | None = None,
) -> QuantResult:
    """Quantize one fp32 encoder graph's body to INT8 and write it to ``dst``.

    ``mode="static"``: QDQ, uint8 activations (int8 and symmetric when ``symmetric_activations``, as TensorRT
    needs) calibrated on ``reader``, int8 weights per output channel. ``mode="dynamic"``: int8 weights,
    activations quantized at run time (no reader needed). ``reduce_range`` is for CPUs without VNNI.
    ``include_conv`` also quantizes the body's Conv nodes (front-end convs stay fp32 either way, except WavLM's
    feature-extractor convs after layer 0 with the opt-in ``quantize_feature_extractor``).
    ``quantize_bias=False`` (static QDQ only) keeps Conv/Gemm biases float instead of int32 + DequantizeLinear,
    which TensorRT's ONNX parser rejects. ``gelu`` is ``fuse_gelu``'s target, applied to a temporary copy of
    the graph before quantizing (None: GELUs stay as exported). With ``check_feeds``, ``pooled_error`` of the
    written graph against ``src`` is measured on them (``QuantResult.features``); ``log`` gets one line on it
    (a warning above ``FEATURE_WARN_REL_L2``) and one naming the feature-extractor nodes quantized.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src), load_external_data=False)
    n_gelu = fuse_gelu(model, gelu) if gelu else 0
    anonymous = any(not n.name for n in model.graph.node if n.op_type in (*QUANT_OP_TYPES, "Conv"))
    body, frontend = body_nodes(model, exclude_patterns, include_conv, quantize_feature_extractor)
    chosen = set(body)
    fe_nodes = [n.name for n in model.graph.node if n.name in chosen and feature_extractor_layer(n) is not None]
    op_types = [*QUANT_OP_TYPES, "Conv"] if include_conv or fe_nodes else list(QUANT_OP_TYPES)
    if not body:
        raise ValueError(f"{src.name} has no MatMul/Gemm with a constant weight outside its front-end; nothing to "
                         "quantize (check the graph, or the exclude patterns).")
    large = _is_large(src)
    opset = next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), 0)
    gelu_info = {"target": gelu, "fused": n_gelu}
    if gelu == "onnx" and opset < GELU_DOMAINS["onnx"][1]:
        gelu_info["note"] = f"opset {opset} < 20 has no standard Gelu: the erf pattern stays unfused"
    settings: dict = {"per_channel": per_channel, "reduce_range": reduce_range, "weights": "int8", "ops": op_types,
                      "gelu": gelu_info, "quantize_feature_extractor": quantize_feature_extractor}
    with _working_copy(src, model, changed=n_gelu > 0 or anonymous) as graph:
        if mode == "dynamic":
            quantize_dynamic(graph, dst, op_types_to_quantize=op_types, nodes_to_quantize=body,
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
                quantize_static(graph, dst, calibration_data_reader=reader, quant_format=QuantFormat.QDQ,
                                op_types_to_quantize=op_types, nodes_to_quantize=body,
                                per_channel=per_channel, reduce_range=reduce_range, activation_type=act,
                                weight_type=QuantType.QInt8, use_external_data_format=large,
                                calibrate_method=_calibration_method(method), extra_options=extra)
            settings.update({"activations": "int8 symmetric" if symmetric_activations else "uint8",
                             "calibration": method, "calibration_windows": len(reader), "format": "QDQ",
                             "quantize_bias": quantize_bias})
        else:
            raise ValueError(f"unknown INT8 mode {mode!r}; use 'static' or 'dynamic'.")
    res = QuantResult(dst, mode, body, frontend, settings, fe_nodes, n_gelu)
    say = log or (lambda _line: None)
    if fe_nodes:
        say(f"int8: {dst.name}: feature-extractor convs quantized too (opt-in): {', '.join(fe_nodes)}")
    if check_feeds:
        res.features = pooled_error(src, dst, check_feeds, threads)
        rel = res.features["pooled_rel_l2"]
        say(f"int8: {dst.name}: pooled output vs fp32: relative L2 {rel:.2%} on {len(check_feeds)} windows")
        if rel > FEATURE_WARN_REL_L2:
            say(f"int8: WARNING: {dst.name} moves the pooled features by {rel:.1%} (relative L2 vs fp32, above "
                f"{FEATURE_WARN_REL_L2:.0%}); the score gate can still pass it when the heads' scores hardly spread "
                "(random weights): check on real audio with trained members"
                + (", or leave --quantize-feature-extractor off" if fe_nodes else ""))
    return res
