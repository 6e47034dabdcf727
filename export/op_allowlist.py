"""The TensorRT ONNX parser's operator allow-list (``trt_onnx_ops_10.x.txt``) and the check against it.

The list is kept in the repository, with the TensorRT version and the source it was read from in its
header, so that a CPU-only export can still refuse a graph that TensorRT could not parse.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import onnx

ALLOWLIST_FILE = Path(__file__).with_name("trt_onnx_ops_10.x.txt")

# ONNX elem types -> the names the support matrix uses.
_TYPE_NAMES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.BFLOAT16: "BF16",
    onnx.TensorProto.DOUBLE: "DOUBLE",
}


@dataclass(frozen=True)
class OpAllowList:
    """Operators (default ONNX domain) TensorRT's parser accepts, with their supported float types."""

    ops: dict[str, frozenset[str]]
    opset_min: int
    opset_max: int
    header: tuple[str, ...] = field(default=())

    @property
    def trt_version(self) -> str:
        """The TensorRT version the list was read for (from the ``# TensorRT: <version>`` header line)."""
        for line in self.header:
            if line.lstrip("# ").startswith("TensorRT:"):
                return line.split(":", 1)[1].split()[0]
        return "unknown"

    def source(self) -> str:
        """The header lines of the list file (TensorRT version and where the list comes from)."""
        return " ".join(line.lstrip("# ").strip() for line in self.header[:3])


@lru_cache(maxsize=4)
def load_allowlist(path: Path = ALLOWLIST_FILE) -> OpAllowList:
    """Parse the allow-list data file (``<OpType> <TYPES,...>`` per line, ``#`` comments)."""
    ops: dict[str, frozenset[str]] = {}
    header: list[str] = []
    opset_min, opset_max = 1, 10_000
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            header.append(line)
            continue
        parts = line.split()
        if parts[0] == "opset_min":
            opset_min = int(parts[1])
        elif parts[0] == "opset_max":
            opset_max = int(parts[1])
        else:
            types = frozenset(parts[1].split(",")) if len(parts) > 1 else frozenset()
            ops[parts[0]] = types
    if not ops:
        raise ValueError(f"The op allow-list {path} holds no operators; restore it from the repository.")
    return OpAllowList(ops=ops, opset_min=opset_min, opset_max=opset_max, header=tuple(header))


def _iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of a graph, subgraphs (If/Loop/Scan bodies) included."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _iter_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _iter_nodes(sub)


def _value_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every named value the model declares (inputs, outputs, value_info, initializers)."""
    types: dict[str, int] = {}
    graph = model.graph
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    return types


def check_ops(model: onnx.ModelProto, allowlist: OpAllowList | None = None) -> list[str]:
    """Return one line per violation of the allow-list (empty list = the graph passes).

    Checks: every node is in the default ONNX domain and its op type is listed; the default-domain
    opset is within the parser's range; float outputs (where their type is known) use a float type
    the matrix lists for that op (e.g. STFT is FP32 only).
    """
    allow = allowlist or load_allowlist()
    problems: list[str] = []
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and not allow.opset_min <= imp.version <= allow.opset_max:
            problems.append(
                f"opset {imp.version} is outside TensorRT's parser range {allow.opset_min}-{allow.opset_max}"
            )
    types = _value_types(model)
    seen: set[str] = set()
    for node in _iter_nodes(model.graph):
        if node.domain not in ("", "ai.onnx"):
            key = f"{node.domain}::{node.op_type}"
            if key not in seen:
                problems.append(f"op {key} (node {node.name!r}) is from a custom domain TensorRT cannot parse")
                seen.add(key)
            continue
        if node.op_type not in allow.ops:
            if node.op_type not in seen:
                problems.append(f"op {node.op_type} (node {node.name!r}) is not in TensorRT's ONNX parser list")
                seen.add(node.op_type)
            continue
        allowed_types = allow.ops[node.op_type]
        for out in node.output:
            tname = _TYPE_NAMES.get(types.get(out, 0))
            if tname and allowed_types and tname not in allowed_types:
                key = f"{node.op_type}:{tname}"
                if key not in seen:
                    problems.append(
                        f"op {node.op_type} (node {node.name!r}) outputs {tname}, which TensorRT supports "
                        f"only as {','.join(sorted(allowed_types))}"
                    )
                    seen.add(key)
    return problems


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    """Count of each op type in the model (subgraphs included), for the report."""
    counts: dict[str, int] = {}
    for node in _iter_nodes(model.graph):
        name = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))
