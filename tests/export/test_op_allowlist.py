"""The TensorRT op allow-list data file and the graph checks built on it."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from mmmos.export.checks import check_graph
from mmmos.export.op_allowlist import check_ops, load_allowlist


def _model(nodes: list, inputs: list, outputs: list, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_allowlist_names_its_source_and_version() -> None:
    allow = load_allowlist()
    header = " ".join(allow.header)
    assert "TensorRT" in header and "10.15" in header and "onnx/onnx-tensorrt" in header
    assert (allow.opset_min, allow.opset_max) == (9, 24) and allow.trt_version == "10.15"
    for op in ("Conv", "MatMul", "LayerNormalization", "InstanceNormalization", "Softmax", "LSTM", "Where"):
        assert op in allow.ops
    for op in ("DFT", "MelWeightMatrix", "Unique", "SequenceAt"):
        assert op not in allow.ops
    assert allow.ops["STFT"] == frozenset({"FP32"})


def test_unsupported_and_custom_ops_are_reported() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    ok = _model([helper.make_node("Relu", ["x"], ["y"])], [x], [y])
    assert check_ops(ok) == []
    bad = _model([helper.make_node("Unique", ["x"], ["y"], name="u")], [x], [y])
    assert any("Unique" in p for p in check_ops(bad))
    custom = _model([helper.make_node("FusedGemm", ["x"], ["y"], domain="com.microsoft")], [x], [y])
    custom.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    assert any("com.microsoft::FusedGemm" in p for p in check_ops(custom))
    old = _model([helper.make_node("Relu", ["x"], ["y"])], [x], [y], opset=8)
    assert any("opset 8" in p for p in check_ops(old))


def test_float_type_restrictions_are_checked() -> None:
    """STFT is FP32-only in TensorRT: an fp16 STFT output must be flagged."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch", 400, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["batch", 3, 201, 2])
    step = helper.make_tensor("step", TensorProto.INT64, [], [160])
    node = helper.make_node("STFT", ["x", "step", "", "len"], ["y"], onesided=1, name="stft")
    length = helper.make_tensor("len", TensorProto.INT64, [], [400])
    model = _model([node], [x], [y])
    model.graph.initializer.extend([step, length])
    assert any("STFT" in p and "FP16" in p for p in check_ops(model))


def test_check_graph_flags_fixed_batch(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    path = tmp_path / "fixed.onnx"
    onnx.save(_model([helper.make_node("Relu", ["x"], ["y"])], [x], [y]), str(path))
    result = check_graph(path)
    assert not result.passed and any("batch axis is fixed" in p for p in result.problems)
    assert result.checker == "passed" and result.ops == {"Relu": 1}
