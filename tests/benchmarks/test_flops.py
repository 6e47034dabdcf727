"""The FLOP counter against hand counts on small graphs, and the matmul peak probe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mmmos.benchmarks.flops import count_graph_flops, count_model_flops
from mmmos.benchmarks.peak import measure_peaks


def _model(nodes: list, inputs: list, outputs: list, inits: list, opsets: dict[str, int] | None = None
           ) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    ops = [helper.make_opsetid(d, v) for d, v in (opsets or {"": 17}).items()]
    model = helper.make_model(graph, opset_imports=ops)
    model.ir_version = 9
    return model


def _w(name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.random.default_rng(0).standard_normal(shape).astype(np.float32), name)


def test_counts_match_hand_counts_at_the_pinned_batch() -> None:
    # x [B, 4, 16] -> Conv1d(16->8, k=3, groups=2, pad 1) over the length 4 axis after a transpose
    # -> MatMul with [8, 12] -> Gemm on the flattened [B*4... kept simple: Gemm on a separate input.
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),  # [B, 16, 4]
        helper.make_node("Conv", ["xt", "wc"], ["c"], group=2, pads=[1, 1]),  # [B, 8, 4]
        helper.make_node("Transpose", ["c"], ["ct"], perm=[0, 2, 1]),  # [B, 4, 8]
        helper.make_node("MatMul", ["ct", "wm"], ["m"]),  # [B, 4, 12]
        helper.make_node("Gemm", ["v", "wg"], ["g"], transB=1),  # [B, 5] x [7, 5]^T -> [B, 7]
        helper.make_node("LSTM", ["s", "wl", "rl"], ["ly"], hidden_size=3, direction="bidirectional"),
        helper.make_node("Einsum", ["m", "wm2"], ["e"], equation="btk,kj->bj"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 16]),
              helper.make_tensor_value_info("v", TensorProto.FLOAT, ["batch", 5]),
              helper.make_tensor_value_info("s", TensorProto.FLOAT, [6, "batch", 2])]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("g", "ly", "e")]
    inits = [_w("wc", 8, 8, 3), _w("wm", 8, 12), _w("wg", 7, 5), _w("wl", 2, 12, 2), _w("rl", 2, 12, 3),
             _w("wm2", 12, 2)]
    model = _model(nodes, inputs, outputs, inits)
    for batch in (1, 3):
        r = count_model_flops(model, batch=batch)
        conv = 2 * (batch * 8 * 4) * (8 * 3)  # every output x (C_in/groups * kernel)
        matmul = 2 * (batch * 4 * 12) * 8
        gemm = 2 * batch * 7 * 5
        lstm = 2 * 6 * batch * 2 * 12 * (2 + 3)  # seq * batch * dirs * 4H * (I + H)
        einsum = 2 * batch * 4 * 12 * 2
        assert r.uncounted == []
        assert r.by_op == {"Conv": conv, "MatMul": matmul, "Gemm": gemm, "LSTM": lstm, "Einsum": einsum}
        assert r.flops == conv + matmul + gemm + lstm + einsum
        assert r.counted_nodes == 5


def test_symbolic_dims_are_uncounted_unless_given() -> None:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "T", 6])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [_w("w", 6, 5)])
    assert count_model_flops(model).uncounted  # T unknown: visible, not silently zero
    assert count_model_flops(model, dims={"T": 7}).flops == 2 * 7 * 5 * 6


def test_runtime_shapes_fill_what_static_inference_cannot(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    # com.microsoft.Gelu is unknown to onnx shape inference, so the MatMul after it has no static shape;
    # one profiled ONNX Runtime run supplies it.
    nodes = [helper.make_node("Gelu", ["x"], ["h"], domain="com.microsoft"),
             helper.make_node("MatMul", ["h", "w"], ["y"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 6])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [_w("w", 6, 5)],
                   opsets={"": 17, "com.microsoft": 1})
    model.graph.node[1].name = "mm"
    path = tmp_path / "g.onnx"
    onnx.save(model, path)
    assert count_graph_flops(path, measure=False).uncounted == ["mm"]
    r = count_graph_flops(path, batch=1, measure=True)
    assert r.uncounted == []
    assert r.flops == 2 * 4 * 5 * 6


def test_missing_graph_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        count_graph_flops(tmp_path / "nope.onnx")


def test_peak_probe_reports_positive_gflops() -> None:
    pytest.importorskip("onnxruntime")
    peaks = measure_peaks(["fp32"], threads=1)
    assert peaks["fp32"]["gflops"] > 0
    assert any(k.startswith("ort ") for k in peaks["fp32"]["by_method"])
