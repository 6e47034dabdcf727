"""The mixed fp16 converter on small torch modules exported with the exporter's own path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto
from torch import nn

from mmmos.export.mixed_precision import convert_to_mixed_fp16, fp16_summary
from mmmos.export.onnx_export import export_module

ort = pytest.importorskip("onnxruntime")


class _Frontend(nn.Module):
    """Stand-in log front-end: a strided conv, power, log with a floor, normalisation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 8, 16, stride=8, bias=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = self.conv(wav.unsqueeze(1))
        return (torch.log(x * x + 1e-6) + 3.0) / 2.0


class _Tiny(nn.Module):
    """Front-end -> projection -> one attention block (LayerNorm, softmax) -> masked mean -> L2."""

    def __init__(self) -> None:
        super().__init__()
        self.frontend = _Frontend()
        self.proj = nn.Linear(8, 16)
        self.qkv = nn.Linear(16, 48)
        self.norm = nn.LayerNorm(16)
        self.register_buffer("pos", torch.randn(31, 16))  # a position table for a fixed length

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.frontend(wav).transpose(1, 2)) + self.pos
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        att = torch.softmax(q @ k.transpose(1, 2) / 4.0, dim=-1)
        x = self.norm(x + att @ v)
        mask = (torch.arange(x.shape[1])[None, :] * 8 < lengths[:, None]).to(x.dtype)
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        return pooled / torch.sqrt((pooled * pooled).sum(-1, keepdim=True)).clamp(min=1e-12)


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    types |= {i.name: i.data_type for i in g.initializer}
    return types


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    torch.manual_seed(0)
    model = _Tiny().eval()
    path = tmp_path_factory.mktemp("mp") / "tiny.fp32.onnx"
    wav = torch.randn(2, 256)
    export_module(model, [wav, torch.tensor([256, 100])], ["wav", "lengths"], ["pooled"], path)
    return path, model


def test_mixed_graph_keeps_float32_io_and_fp32_islands(exported: tuple[Path, nn.Module]) -> None:
    path, _ = exported
    mixed = convert_to_mixed_fp16(onnx.load(str(path)))
    onnx.checker.check_model(mixed, full_check=True)
    g = mixed.graph
    assert [i.type.tensor_type.elem_type for i in g.input] == [TensorProto.FLOAT, TensorProto.INT64]
    assert all(o.type.tensor_type.elem_type == TensorProto.FLOAT for o in g.output)
    types = _types(mixed)
    by_op: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        by_op.setdefault(node.op_type, []).append(node)
    # Compute runs fp16 ...
    assert any(types[n.output[0]] == TensorProto.FLOAT16 for n in by_op["MatMul"])
    # ... norms, softmax, logs, reductions and the front-end stay fp32.
    for op in ("LayerNormalization", "Softmax", "Log", "ReduceSum", "Sqrt"):
        for node in by_op[op]:
            assert types[node.input[0]] == TensorProto.FLOAT, (op, node.name)
            assert types[node.output[0]] == TensorProto.FLOAT, (op, node.name)
    frontend = [n for n in g.node if "frontend" in n.name and n.op_type != "Cast"]
    assert frontend and all(types.get(o) in (TensorProto.FLOAT, TensorProto.INT64) for n in frontend for o in n.output)
    # Weights read only by fp16 nodes are stored in fp16.
    assert any(i.data_type == TensorProto.FLOAT16 for i in g.initializer)
    summary = fp16_summary(mixed)
    assert summary["fp16_nodes"] > 0 and summary["casts"] > 0


def test_mixed_graph_runs_close_to_fp32(exported: tuple[Path, nn.Module]) -> None:
    path, model = exported
    mixed = convert_to_mixed_fp16(onnx.load(str(path)))
    wav = torch.randn(3, 256)
    lengths = torch.tensor([256, 90, 1])
    with torch.no_grad():
        ref = model(wav, lengths).numpy()
    feeds = {"wav": wav.numpy(), "lengths": lengths.numpy()}
    fp32 = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    half = ort.InferenceSession(mixed.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert np.abs(fp32 - ref).max() < 1e-5
    err = np.abs(half - ref).max()
    assert 0 < err < 2e-2  # fp16 rounding is visible but small


def test_blocked_ops_can_be_widened(exported: tuple[Path, nn.Module]) -> None:
    """Blocking MatMul too leaves no fp16 MatMul (the block list is honoured)."""
    path, _ = exported
    from mmmos.export.mixed_precision import DEFAULT_OP_BLOCK_LIST

    mixed = convert_to_mixed_fp16(onnx.load(str(path)), op_block_list=(*DEFAULT_OP_BLOCK_LIST, "MatMul"))
    types = _types(mixed)
    assert all(types[n.output[0]] == TensorProto.FLOAT for n in mixed.graph.node if n.op_type == "MatMul")


@pytest.fixture(scope="module")
def tiny_encoders_mixed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[onnx.ModelProto, onnx.ModelProto]]:
    """The three real tiny encoder graphs (PooledEncoder exports) and their mixed fp16 conversions."""
    from mmmos.export.onnx_export import export_encoder
    from mmmos.models.fusion import PooledEncoder
    from mmmos.models.presets import build_encoders

    out = {}
    folder = tmp_path_factory.mktemp("tables")
    for name, enc in build_encoders("tiny").items():
        if hasattr(enc, "bake_weight_norm"):
            enc.bake_weight_norm()
        path = folder / f"{name}.fp32.onnx"
        export_encoder(PooledEncoder(enc).eval(), path)
        fp32 = onnx.load(str(path))
        out[name] = (fp32, convert_to_mixed_fp16(onnx.load(str(path))))
    return out


def _table_consumers(fp32: onnx.ModelProto, op: str, scope: str, min_rank: int = 2) -> list[str]:
    """Names of `op` nodes under `scope` that read a table: a static float tensor of rank >= min_rank, or a slice,
    gather or reshape of one (a position table cut to the fed length)."""
    tables = {i.name for i in fp32.graph.initializer if i.data_type == TensorProto.FLOAT and len(i.dims) >= min_rank}
    tables |= {n.output[0] for n in fp32.graph.node if n.op_type == "Constant"
               and n.attribute[0].t.data_type == TensorProto.FLOAT and len(n.attribute[0].t.dims) >= min_rank}
    moves = ("Slice", "Gather", "Unsqueeze", "Reshape", "Transpose", "Expand", "Cast")
    for n in fp32.graph.node:  # graph order: producers first
        if n.op_type in moves and n.input[0] in tables:
            tables.add(n.output[0])
    return [n.name for n in fp32.graph.node
            if n.op_type == op and scope in n.name and any(i in tables for i in n.input)]


def test_position_tables_are_stored_and_applied_in_fp32(tiny_encoders_mixed: dict) -> None:
    cases = {"m2d": ("Add", "/encoder/backbone/"),  # pos_embed added to the patch tokens
             "muq": ("Mul", "/self_attn/")}  # rotary cos/sin multiplied into q and k
    for name, (op, scope) in cases.items():
        fp32, mixed = tiny_encoders_mixed[name]
        names = _table_consumers(fp32, op, scope)
        assert names, f"no position-table {op} found in {name}"
        types = _types(mixed)
        inits = {i.name: i.data_type for i in mixed.graph.initializer}
        consts = {n.output[0]: n.attribute[0].t.data_type for n in mixed.graph.node if n.op_type == "Constant"}
        for node in (n for n in mixed.graph.node if n.name in names):
            assert types[node.output[0]] == TensorProto.FLOAT, (name, node.name)
            for i in node.input:
                if i in inits or i in consts or i in types:
                    assert inits.get(i, consts.get(i, types.get(i))) in (TensorProto.FLOAT, TensorProto.INT64), (
                        name, node.name, i)
    # WavLM: the relative position embedding stays fp32, and the gated bias meets the logits in fp32.
    _, mixed = tiny_encoders_mixed["wavlm"]
    inits = {i.name: i.data_type for i in mixed.graph.initializer}
    assert inits["encoder.encoder.layers.0.self_attn.relative_attention_bias.weight"] == TensorProto.FLOAT
    types = _types(mixed)
    producers = {o: n for n in mixed.graph.node for o in n.output}
    for softmax in (n for n in mixed.graph.node if n.op_type == "Softmax" and "layers.0/self_attn" in n.name):
        add = producers[softmax.input[0]]
        assert add.op_type == "Add" and types[add.output[0]] == TensorProto.FLOAT
        assert all(types[i] == TensorProto.FLOAT for i in add.input)
