"""Export-time checks of an ONNX graph: ``onnx.checker``, the TensorRT op allow-list, a dynamic batch axis."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

from mmmos.export.op_allowlist import OpAllowList, check_ops, load_allowlist, op_histogram


@dataclass
class GraphCheck:
    """Result of checking one ONNX file; ``problems`` empty means it passed."""

    file: str
    checker: str = "passed"
    problems: list[str] = field(default_factory=list)
    ops: dict[str, int] = field(default_factory=dict)
    opset: int = 0

    @property
    def passed(self) -> bool:
        """True when onnx.checker, the allow-list and the batch-axis check all passed."""
        return self.checker == "passed" and not self.problems

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form for report.json."""
        return asdict(self) | {"passed": self.passed}


def _batch_axis_problems(model: onnx.ModelProto) -> list[str]:
    """The first axis of every graph input and output must be symbolic (a fixed batch breaks batching)."""
    problems = []
    for vi in [*model.graph.input, *model.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].dim_param:
            problems.append(
                f"{vi.name}: batch axis is fixed to {dims[0].dim_value}; export with a dynamic batch axis"
            )
    return problems


def check_graph(path: Path, allowlist: OpAllowList | None = None) -> GraphCheck:
    """Run every check on the ONNX file at ``path`` (external data is resolved beside it)."""
    path = Path(path)
    result = GraphCheck(file=path.name)
    try:
        # Checking by path is what works for graphs past 2 GB (external data).
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        result.checker = f"failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    model = onnx.load(str(path), load_external_data=False)
    # Types of intermediate values let the allow-list check per-op float types (e.g. STFT FP32 only);
    # shape inference is only an aid here (the checker already ran), so a failure is not fatal.
    with contextlib.suppress(Exception):
        model = onnx.shape_inference.infer_shapes(model)
    result.problems = check_ops(model, allowlist or load_allowlist()) + _batch_axis_problems(model)
    result.ops = op_histogram(model)
    result.opset = next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), 0)
    return result
