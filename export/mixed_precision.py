"""fp32 ONNX -> mixed fp16 ONNX with float32 inputs/outputs and fp32 islands where fp16 is unsafe.

Converter choice: a small Cast-insertion pass written here, not a library.
- onnxconverter-common's ``convert_float_to_float16`` produced graphs ONNX Runtime rejects for WavLM
  (Cast type mismatches) and hung with a Cast block list (research/deploy.md 4.3), and it is not a
  dependency of the ``export`` extra.
- ModelOpt AutoCast is what NVIDIA documents for TensorRT 11, but it pins onnxruntime-gpu and old
  onnx, which conflicts with the ``cpu`` extra.
- The rules mmmos needs are few and structural, so they are written out here and tested.

Rules (a node is either "fp16" or "fp32"; every fp32 tensor it needs in the other type gets one Cast):
1. Blocked ops stay fp32: norms (LayerNormalization, GroupNormalization, InstanceNormalization), Softmax
   and LogSoftmax (their inputs are reductions), every Reduce*, Log/Exp/Pow/Sqrt (statistics and the
   safe-floor logs), Sin/Cos/Range/CumSum (position tables), and ops whose output type is an attribute.
2. Blocked nodes stay fp32: any node whose name matches a pattern, by default the front-ends
   (everything up to and including the log-mel normalisation lives under a ``frontend`` module).
3. Compute ops (MatMul, Gemm, Conv, ConvTranspose, Einsum, LSTM, GRU, RNN, Attention) run fp16.
4. Tables stay fp32: an elementwise op that reads a constant table (a static float tensor of rank >= 2, or
   one derived from constants only, e.g. a Gather from an embedding) runs fp32, and so does every
   elementwise op downstream of it until a compute op or a blocked op. This keeps position tables (M2D's
   pos_embed, MuQ's rotary cos/sin, WavLM's gated relative position bias up to the softmax) stored and
   applied in fp32, as well as the per-channel affine of norms written out as ops.
5. Every other op follows its dynamic float inputs: fp16 if any is fp16, else fp32. So whatever a
   blocked node or a graph input feeds (masked pooling sums, L2 norms) stays fp32 until a compute op
   takes it, and graph outputs are cast back to float32.
Initializers used only by fp16 nodes (compute weights, vector biases) are stored as fp16 (clipped to the
fp16 range); others stay fp32.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DEFAULT_OP_BLOCK_LIST: tuple[str, ...] = (
    "LayerNormalization", "GroupNormalization", "InstanceNormalization", "RMSNormalization",
    "MeanVarianceNormalization", "LpNormalization",
    "Softmax", "LogSoftmax",
    "ReduceMean", "ReduceSum", "ReduceL1", "ReduceL2", "ReduceMax", "ReduceMin", "ReduceProd",
    "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp",
    "Log", "Exp", "Pow", "Sqrt", "Reciprocal",
    "Sin", "Cos", "Range", "CumSum",
    "STFT", "DFT", "HannWindow", "HammingWindow", "BlackmanWindow",
    "Cast", "CastLike", "Constant", "ConstantOfShape", "EyeLike",
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
    "If", "Loop", "Scan", "Resize", "Upsample",
)
"""Ops kept in fp32 (see the module docstring for why)."""

DEFAULT_NODE_BLOCK_PATTERNS: tuple[str, ...] = (r"(?i)front_?end",)
"""Node-name patterns kept in fp32: the in-graph log-mel front-ends."""

COMPUTE_OPS: frozenset[str] = frozenset(
    {"MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum", "LSTM", "GRU", "RNN", "Attention"}
)
"""Ops that always run in fp16 unless blocked: this is where the speed-up is."""

_NEUTRAL_OPS = frozenset({"Shape", "Size"})  # accept any type, output int: never cast their input
_TABLE_MIN_RANK = 2  # a static float tensor of at least this rank read by an elementwise op is a table
_NON_T_INPUTS: dict[str, frozenset[int]] = {"Dropout": frozenset({1, 2})}  # float inputs not of type T
_FP16_MAX = 65504.0


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every value in the (shape-inferred) graph."""
    graph = model.graph
    types: dict[str, int] = {}
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Rank of every value whose shape is known (shape-inferred graph, initializers, Constants)."""
    graph = model.graph
    ranks: dict[str, int] = {}
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            ranks[vi.name] = len(vi.type.tensor_type.shape.dim)
    for init in graph.initializer:
        ranks[init.name] = len(init.dims)
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    ranks[node.output[0]] = len(attr.t.dims)
    return ranks


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def convert_to_mixed_fp16(
    model: onnx.ModelProto,
    *,
    op_block_list: Iterable[str] = DEFAULT_OP_BLOCK_LIST,
    node_block_patterns: Sequence[str] = DEFAULT_NODE_BLOCK_PATTERNS,
) -> onnx.ModelProto:
    """Return a mixed-precision copy of ``model`` (float32 graph inputs/outputs kept, ``keep_io_types``).

    ``model`` must carry its weights in memory (load external data first). Raises ValueError when a
    float value's type cannot be inferred, NotImplementedError for control-flow ops that capture
    outer-scope float tensors (not needed by mmmos graphs).
    """
    model = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    graph = model.graph
    types = _elem_types(model)
    FLOAT = TensorProto.FLOAT
    blocked_ops = set(op_block_list)
    patterns = [re.compile(p) for p in node_block_patterns]
    init_names = {i.name for i in graph.initializer}
    const_outputs = {n.output[0] for n in graph.node if n.op_type == "Constant"}
    static = init_names | const_outputs

    ranks = _ranks(model)
    for node in graph.node:
        if _has_subgraph(node):
            raise NotImplementedError(
                f"node {node.name!r} ({node.op_type}) has a subgraph; the mixed-precision pass does not "
                "convert control flow: export without data-dependent Python branches"
            )

    # Pass 1: decide each node's precision and the final type of every fp32 tensor.
    dtype: dict[str, int] = {}  # float32 tensor name -> type it has in the new graph
    for name in graph.input:
        dtype[name.name] = types.get(name.name, 0)
    fp16_nodes: set[int] = set()
    derived = set(static)  # tensors computed from constants only (e.g. a Gather from an embedding table)
    tainted: set[str] = set()  # fp32 tensors that carry a table, up to the next compute or blocked op
    for idx, node in enumerate(graph.node):
        float_ins = [
            (i, n) for i, n in enumerate(node.input)
            if n and types.get(n) == FLOAT and i not in _NON_T_INPUTS.get(node.op_type, ())
        ]
        blocked = node.op_type in blocked_ops or node.domain not in ("", "ai.onnx") or any(
            p.search(node.name) for p in patterns
        )
        reads_table = any(n in tainted or (n in derived and ranks.get(n, 0) >= _TABLE_MIN_RANK)
                          for _, n in float_ins)
        if blocked or node.op_type in _NEUTRAL_OPS:
            is_fp16 = False
        elif node.op_type in COMPUTE_OPS:
            is_fp16 = True
        elif reads_table:
            is_fp16 = False  # rule 4: a table is applied in fp32
            tainted.update(o for o in node.output if types.get(o) == FLOAT)
        else:
            is_fp16 = any(dtype.get(n) == TensorProto.FLOAT16 for _, n in float_ins if n not in static)
        if node.op_type not in COMPUTE_OPS and float_ins and all(n in derived for _, n in float_ins):
            # float values computed from constants only (a table sliced or gathered by positions, whatever
            # the integer indices are): still a table
            derived.update(o for o in node.output if o)
        if is_fp16:
            fp16_nodes.add(idx)
        for out in node.output:
            if types.get(out) == FLOAT:
                dtype[out] = TensorProto.FLOAT16 if is_fp16 else FLOAT
            elif out:
                dtype[out] = types.get(out, 0)

    # Initializers and Constants used only by fp16 nodes are stored as fp16; others keep fp32.
    consumers: dict[str, list[int]] = {}
    for idx, node in enumerate(graph.node):
        for n in node.input:
            consumers.setdefault(n, []).append(idx)
    graph_outputs = {o.name for o in graph.output}
    to_half: set[str] = set()
    for name in static:
        if types.get(name) != FLOAT or name in graph_outputs:
            continue
        users = consumers.get(name, [])
        if users and all(u in fp16_nodes for u in users) and all(
            graph.node[u].op_type not in _NEUTRAL_OPS for u in users
        ):
            to_half.add(name)
    for init in graph.initializer:
        if init.name in to_half:
            arr = np.clip(numpy_helper.to_array(init), -_FP16_MAX, _FP16_MAX).astype(np.float16)
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
            dtype[init.name] = TensorProto.FLOAT16
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] in to_half:
            for attr in node.attribute:
                if attr.name == "value":
                    arr = np.clip(numpy_helper.to_array(attr.t), -_FP16_MAX, _FP16_MAX).astype(np.float16)
                    attr.t.CopyFrom(numpy_helper.from_array(arr, attr.t.name))
            dtype[node.output[0]] = TensorProto.FLOAT16
    for name in static:
        dtype.setdefault(name, types.get(name, 0))

    # Pass 2: rebuild the node list, inserting one Cast per (tensor, target type) before first use.
    casts: dict[tuple[str, int], str] = {}
    new_nodes: list[onnx.NodeProto] = []

    def cast_of(name: str, target: int) -> str:
        key = (name, target)
        if key not in casts:
            suffix = "fp16" if target == TensorProto.FLOAT16 else "fp32"
            out = f"{name}__{suffix}"
            new_nodes.append(helper.make_node("Cast", [name], [out], to=target, name=f"{name}__cast_{suffix}"))
            casts[key] = out
        return casts[key]

    for idx, node in enumerate(graph.node):
        want = TensorProto.FLOAT16 if idx in fp16_nodes else FLOAT
        if node.op_type not in _NEUTRAL_OPS:  # Shape/Size read any type: no Cast needed
            skip = _NON_T_INPUTS.get(node.op_type, frozenset())
            for i, n in enumerate(node.input):
                if not n or types.get(n) != FLOAT or i in skip:
                    continue
                have = dtype.get(n)
                if have is None:
                    raise ValueError(f"type of {n!r} (input of node {node.name!r}) is unknown after inference")
                if have != want:
                    node.input[i] = cast_of(n, want)
        new_nodes.append(node)

    # Graph outputs keep float32: rename an fp16 producer's output and cast it back under the old name.
    for out in graph.output:
        if dtype.get(out.name) == TensorProto.FLOAT16:
            half_name = f"{out.name}__fp16"
            for node in new_nodes:
                for lst in (node.input, node.output):
                    for i, n in enumerate(lst):
                        if n == out.name:
                            lst[i] = half_name
            new_nodes.append(helper.make_node("Cast", [half_name], [out.name], to=FLOAT, name=f"{out.name}__out"))

    del graph.node[:]
    graph.node.extend(new_nodes)
    # value_info types must match the new graph; keep shapes where the type is unchanged.
    kept = [vi for vi in graph.value_info if dtype.get(vi.name, types.get(vi.name)) == types.get(vi.name)]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    return model


def fp16_summary(model: onnx.ModelProto) -> dict[str, int]:
    """How many nodes run in fp16 vs fp32 and how many Casts the pass added (for report.json)."""
    types = _elem_types(onnx.shape_inference.infer_shapes(model, strict_mode=False))
    half = sum(
        1 for n in model.graph.node
        if n.op_type != "Cast" and any(types.get(o) == TensorProto.FLOAT16 for o in n.output)
    )
    return {
        "nodes": len(model.graph.node),
        "fp16_nodes": half,
        "casts": sum(1 for n in model.graph.node if n.op_type == "Cast"),
    }
