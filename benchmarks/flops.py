"""FLOPs of an ONNX graph per call at a fixed batch, counted from the graph itself.

Shapes come from `onnx.shape_inference` (with data propagation) after every dynamic input dimension is
pinned: the batch axis to `batch` (1 = one 10 s window) and any other symbolic axis from `dims`.
Only the ops that carry the arithmetic are counted, a multiply-add being 2 FLOPs:

- MatMul / MatMulInteger / QLinearMatMul: 2 * prod(Y) * K
- Gemm: 2 * M * N * K
- Conv / ConvInteger / QLinearConv: 2 * prod(Y) * prod(W.shape[1:])   (C_in/groups * kernel)
- ConvTranspose: 2 * prod(X) * prod(W.shape[1:])
- LSTM / GRU / RNN: 2 * seq * batch * directions * gates * H * (I + H)
- Einsum: 2 * product of the sizes of every index letter

Element-wise ops, normalisations and softmax are left out (they are memory-bound, and a FLOP floor is
about the matrix units); a compute node whose shapes stayed unknown is listed in `uncounted`, so an
incomplete count is visible instead of silently low.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import shape_inference

MATMUL_OPS = ("MatMul", "MatMulInteger", "QLinearMatMul")
CONV_OPS = ("Conv", "ConvInteger", "QLinearConv")
RNN_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
COUNTED_OPS = frozenset((*MATMUL_OPS, *CONV_OPS, "Gemm", "ConvTranspose", "Einsum", *RNN_GATES))


@dataclass
class GraphFlops:
    """FLOPs of one graph at one batch size.

    Attributes:
        graph: file name (or graph name).
        batch: the batch the count is for.
        flops: total counted FLOPs (multiply-add = 2).
        by_op: FLOPs per op type.
        counted_nodes: number of nodes counted.
        uncounted: names of compute nodes whose shapes could not be inferred (count is a lower bound then).
    """

    graph: str
    batch: int
    flops: int
    by_op: dict[str, int] = field(default_factory=dict)
    counted_nodes: int = 0
    uncounted: list[str] = field(default_factory=list)

    @property
    def gflops(self) -> float:
        """FLOPs in units of 1e9."""
        return self.flops / 1e9

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (with `gflops`)."""
        return {**asdict(self), "gflops": self.gflops}


def _pin_inputs(model: onnx.ModelProto, batch: int, dims: dict[str, int] | None) -> None:
    """Replace symbolic/unknown input dimensions in place: the batch symbol -> batch, named ones from `dims`.

    The batch symbol is whatever axis 0 of the inputs is called; an unnamed unknown axis 0 is the batch too.
    """
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits and i.type.HasField("tensor_type")]
    # The batch axis's symbol (e.g. "batch") names the batch wherever it appears (RNN inputs: axis 1).
    batch_names = {i.type.tensor_type.shape.dim[0].dim_param for i in inputs if i.type.tensor_type.shape.dim}
    batch_names.discard("")
    for inp in inputs:
        for axis, d in enumerate(inp.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                continue
            if d.dim_param in batch_names or (axis == 0 and not d.dim_param):
                value = batch
            elif dims and d.dim_param in dims:
                value = dims[d.dim_param]
            else:
                continue  # left symbolic: the nodes that need it end up in `uncounted`
            d.Clear()
            d.dim_value = int(value)


def _shape_table(model: onnx.ModelProto) -> dict[str, tuple[int, ...] | None]:
    """name -> static shape (None where any dimension is unknown) for every value the graph knows."""
    table: dict[str, tuple[int, ...] | None] = {}
    for init in model.graph.initializer:
        table[init.name] = tuple(int(d) for d in init.dims)
    g = model.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = vi.type.tensor_type.shape.dim
        shape = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in dims)
        table[vi.name] = None if any(s < 0 for s in shape) else shape
    for node in g.node:  # Constant nodes carry their shape in the attribute
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.HasField("t"):
                    table[node.output[0]] = tuple(int(d) for d in a.t.dims)
    return table


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def node_flops(node: onnx.NodeProto, shape: dict[str, tuple[int, ...] | None]) -> int | None:
    """FLOPs of one node given the shape table; None when a needed shape is unknown, 0 for other ops."""
    op = node.op_type

    def sh(i: int, outputs: bool = False) -> tuple[int, ...] | None:
        names = node.output if outputs else node.input
        return shape.get(names[i]) if i < len(names) and names[i] else None

    if op in MATMUL_OPS:
        a, y = sh(3 if op == "QLinearMatMul" else 0), sh(0, outputs=True)
        if a is None or y is None:
            return None
        return 2 * math.prod(y) * a[-1]
    if op == "Gemm":
        a, y = sh(0), sh(0, outputs=True)
        if a is None or y is None:
            return None
        k = a[0] if _attr(node, "transA", 0) else a[-1]
        return 2 * math.prod(y) * k
    if op in CONV_OPS or op == "ConvTranspose":
        w = sh(3 if op == "QLinearConv" else 1)
        ref = sh(0) if op == "ConvTranspose" else sh(0, outputs=True)
        if w is None or ref is None:
            return None
        return 2 * math.prod(ref) * math.prod(w[1:])
    if op in RNN_GATES:
        x, w, r = sh(0), sh(1), sh(2)
        if x is None or w is None or r is None:
            return None
        layout = _attr(node, "layout", 0)
        seq, bsz = (x[1], x[0]) if layout else (x[0], x[1])
        dirs, gates_h, inp = w
        hidden = r[-1]
        return 2 * seq * bsz * dirs * gates_h * (inp + hidden)
    if op == "Einsum":
        eq = _attr(node, "equation", b"")
        eq = eq.decode() if isinstance(eq, bytes) else str(eq)
        lhs = eq.replace(" ", "").split("->")[0].split(",")
        sizes: dict[str, int] = {}
        for i, term in enumerate(lhs):
            s = sh(i)
            if s is None or "..." in term or len(term) != len(s):
                return None
            sizes.update(zip(term, s, strict=True))
        return 2 * math.prod(sizes.values())
    return 0


def count_model_flops(
    model: onnx.ModelProto,
    batch: int = 1,
    dims: dict[str, int] | None = None,
    name: str | None = None,
    extra_shapes: dict[str, tuple[int, ...]] | None = None,
) -> GraphFlops:
    """Count the FLOPs of `model` (not modified) at `batch`; see the module docstring for what counts.

    Args:
        model: the graph (external weights need not be loaded: only shapes are read).
        batch: the value pinned on every input's axis 0.
        dims: values for other symbolic input dimensions, by dim_param name.
        name: label for the result (default: the graph name).
        extra_shapes: value name -> shape, filling what shape inference left unknown (e.g. `runtime_shapes`).
    """
    m = pinned_model(model, batch, dims)
    shape = _shape_table(m)
    for k, v in (extra_shapes or {}).items():
        if shape.get(k) is None:
            shape[k] = tuple(v)
    result = GraphFlops(graph=name or m.graph.name, batch=batch, flops=0)
    for node in m.graph.node:
        if node.op_type not in COUNTED_OPS:
            continue
        f = node_flops(node, shape)
        if f is None:
            result.uncounted.append(node.name or f"{node.op_type}:{node.output[0]}")
            continue
        result.flops += f
        result.by_op[node.op_type] = result.by_op.get(node.op_type, 0) + f
        result.counted_nodes += 1
    return result


def pinned_model(model: onnx.ModelProto, batch: int, dims: dict[str, int] | None = None) -> onnx.ModelProto:
    """A copy of `model` with its inputs pinned (see `_pin_inputs`) and shapes inferred where onnx can."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    _pin_inputs(m, batch, dims)
    # A graph the inference cannot handle still gets a (partial) count, and then a measured one.
    with contextlib.suppress(Exception):
        m = shape_inference.infer_shapes(m, check_type=False, strict_mode=False, data_prop=True)
    return m


def count_graph_flops(
    path: str | Path, batch: int = 1, dims: dict[str, int] | None = None, measure: bool = True
) -> GraphFlops:
    """`count_model_flops` for an .onnx file.

    When static shape inference leaves compute nodes unknown (symbolic Reshape chains are common in
    exported encoders) and `measure` is set, the graph is run once on ONNX Runtime at `batch` with
    profiling on and graph optimisations off, and the node shapes it records fill the gaps
    (see `runtime_shapes`); this reads the weights and costs one forward pass.

    Raises:
        FileNotFoundError: no such file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"ONNX graph {p} not found; check the bundle folder.")
    model = onnx.load(str(p), load_external_data=False)
    result = count_model_flops(model, batch=batch, dims=dims, name=p.name)
    if result.uncounted and measure:
        pinned = pinned_model(model, batch, dims)
        shapes = runtime_shapes(p, pinned, set(result.uncounted))
        result = count_model_flops(model, batch=batch, dims=dims, name=p.name, extra_shapes=shapes)
    return result


def _example_feeds(pinned: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Inputs for one run: float inputs small noise, integer inputs the longest last axis (a full window)."""
    rng = np.random.default_rng(0)
    inits = {i.name for i in pinned.graph.initializer}
    specs = []
    for inp in pinned.graph.input:
        if inp.name in inits:
            continue
        tt = inp.type.tensor_type
        shape = tuple(max(1, int(d.dim_value)) for d in tt.shape.dim)
        specs.append((inp.name, onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type), shape))
    longest = max((s[-1] for _, dt, s in specs if np.issubdtype(dt, np.floating) and s), default=1)
    feeds = {}
    for name, dt, shape in specs:
        if np.issubdtype(dt, np.floating):
            feeds[name] = (0.1 * rng.standard_normal(shape)).astype(dt)
        elif dt == np.bool_:
            feeds[name] = np.ones(shape, dt)
        else:
            feeds[name] = np.full(shape, longest, dt)
    return feeds


def runtime_shapes(path: Path, pinned: onnx.ModelProto, nodes: set[str]) -> dict[str, tuple[int, ...]]:
    """Shapes of the inputs/outputs of `nodes`, recorded by ONNX Runtime's profiler in one run.

    Optimisations are disabled so that profiled node names are the graph's own (no fusions).
    Returns an empty dict when onnxruntime is missing.
    """
    from mmmos.runtime.errors import BackendUnavailableError
    from mmmos.runtime.ort_session import make_session

    by_name = {n.name: n for n in pinned.graph.node if n.name in nodes}
    with tempfile.TemporaryDirectory(prefix="mmmos-flops-") as tmp:
        try:
            sess = make_session(path, profile_prefix=str(Path(tmp) / "prof"), optimization="ORT_DISABLE_ALL")
        except BackendUnavailableError:  # onnxruntime missing: no profiled shapes
            return {}
        sess.run(None, _example_feeds(pinned))
        events = json.loads(Path(sess.end_profiling()).read_text())
    shapes: dict[str, tuple[int, ...]] = {}
    for ev in events:
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        node = by_name.get(ev["name"][: -len("_kernel_time")])
        if node is None:
            continue
        args = ev.get("args", {})
        for names, key in ((node.input, "input_type_shape"), (node.output, "output_type_shape")):
            recorded = [next(iter(d.values())) for d in args.get(key, [])]
            present = [n for n in names if n]
            for n, s in zip(present, recorded, strict=False):
                shapes[n] = tuple(int(x) for x in s)
    return shapes


def bundle_flops(bundle_dir: str | Path, measure: bool = True) -> dict[str, dict[str, Any]]:
    """FLOPs per 10 s window (batch 1) of each fp32 graph of a bundle, keyed "encoder:<name>" / "ensemble".

    Other precisions run the same arithmetic (int8 graphs keep the MatMul/Conv structure), so fp32 counts.
    """
    from mmmos.runtime.bundle import Bundle

    b = Bundle.load(bundle_dir, verify=False)
    out = {}
    for e in b.encoders:
        g = e.graphs.get("fp32") or next(iter(e.graphs.values()))
        # a full 10 s window: what an encoder with a dynamic samples axis is fed for one (its length rule's max)
        out[f"encoder:{e.name}"] = count_graph_flops(b.root / g, batch=1, dims={"samples": e.max_samples},
                                                     measure=measure).to_dict()
    if b.has_ensemble:
        out["ensemble"] = count_graph_flops(b.ensemble_graph("fp32"), batch=1, measure=measure).to_dict()
    return out
