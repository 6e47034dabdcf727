"""INT8 quantization of encoder bodies (ORT CPU static/dynamic) and the TensorRT QDQ graph, on a small graph."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

from mmmos.calibration import int8_trt
from mmmos.calibration.int8_ort import WindowReader, body_nodes, quantize_encoder
from mmmos.calibration.int8_trt import write_trt_qdq

N = 400


@pytest.fixture(scope="module")
def toy_graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny encoder-shaped graph: front-end (|x| @ mel, log) -> 2 linear + LayerNorm + attention -> masked mean."""
    torch = pytest.importorskip("torch")
    from torch import nn

    class FrontEnd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mel = nn.Parameter(torch.rand(16, 24), requires_grad=False)

        def forward(self, x):
            return torch.log(torch.matmul(x.abs(), self.mel) + 1e-5)

    class Toy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.frontend = FrontEnd()
            self.lin = nn.Linear(24, 32)
            self.norm = nn.LayerNorm(32)
            self.pw = nn.Conv1d(32, 32, 1)
            self.out = nn.Linear(32, 32)

        def forward(self, wav, lengths):
            t = torch.arange(N, device=wav.device)[None, :]
            wav = wav * (t < lengths[:, None]).to(wav.dtype)
            h = self.norm(self.lin(self.frontend(wav.reshape(wav.shape[0], -1, 16))))
            h = torch.softmax(h @ h.transpose(1, 2) / 6.0, -1) @ h
            h = self.pw(h.transpose(1, 2)).transpose(1, 2)
            return (self.out(h).mean(1),)

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("toy") / "toy.fp32.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice (the exporter uses it too)
        torch.onnx.export(Toy().eval(), (torch.randn(2, N), torch.tensor([N, N // 2])), str(path),
                          input_names=["wav", "lengths"], output_names=["toy_pooled"],
                          dynamic_axes={"wav": {0: "b"}, "lengths": {0: "b"}, "toy_pooled": {0: "b"}},
                          opset_version=17, dynamo=False)
    return path


def _feeds(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"wav": rng.standard_normal((1, N)).astype(np.float32), "lengths": np.array([N - 37 * i], np.int64)}
            for i in range(n)]


def _run(path: Path, feed: dict) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]


def test_body_nodes_skip_frontend_and_activation_matmuls(toy_graph: Path) -> None:
    body, frontend = body_nodes(onnx.load(str(toy_graph)))
    assert sorted(body) == ["/lin/MatMul", "/out/MatMul"]
    assert frontend == ["/frontend/MatMul"]
    with_conv, _ = body_nodes(onnx.load(str(toy_graph)), include_conv=True)
    assert sorted(with_conv) == ["/lin/MatMul", "/out/MatMul", "/pw/Conv"]


def test_static_qdq_per_channel(toy_graph: Path, tmp_path: Path) -> None:
    res = quantize_encoder(toy_graph, tmp_path / "toy.int8.onnx", WindowReader(_feeds(8)), mode="static")
    model = onnx.load(str(res.output))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("DequantizeLinear") >= 4 and "QuantizeLinear" in ops
    inits = {i.name: i for i in model.graph.initializer}
    # per-channel weights: some DequantizeLinear has a scale vector of the output width (32)
    scales = [inits[n.input[1]] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[1] in inits]
    assert any(list(s.dims) == [32] for s in scales)
    # the front-end MatMul and the attention MatMuls still read float inputs directly
    consumers = {n.name: n for n in model.graph.node}
    assert not consumers["/frontend/MatMul"].input[1].endswith("_DequantizeLinear_Output")
    feed = _feeds(1, seed=5)[0]
    ref, out = _run(toy_graph, feed), _run(res.output, feed)
    cos = float((ref * out).sum() / np.linalg.norm(ref) / np.linalg.norm(out))
    assert cos > 0.99 and not np.array_equal(ref, out)


def test_static_with_conv(toy_graph: Path, tmp_path: Path) -> None:
    res = quantize_encoder(toy_graph, tmp_path / "c.onnx", WindowReader(_feeds(4)), include_conv=True)
    assert "/pw/Conv" in res.quantized and res.settings["ops"] == ["MatMul", "Gemm", "Conv"]
    conv = next(n for n in onnx.load(str(res.output)).graph.node if n.op_type == "Conv")
    assert "DequantizeLinear" in conv.input[1] or "quantized" in conv.input[1]


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_calibration_methods(toy_graph: Path, tmp_path: Path, method: str) -> None:
    res = quantize_encoder(toy_graph, tmp_path / f"{method}.onnx", WindowReader(_feeds(4)), method=method)
    assert res.settings["calibration"] == method
    assert np.isfinite(_run(res.output, _feeds(1)[0])).all()


def test_dynamic_mode_and_errors(toy_graph: Path, tmp_path: Path) -> None:
    res = quantize_encoder(toy_graph, tmp_path / "toy.dyn.onnx", mode="dynamic")
    assert "MatMulInteger" in {n.op_type for n in onnx.load(str(res.output)).graph.node}
    with pytest.raises(ValueError, match="calibration reader"):
        quantize_encoder(toy_graph, tmp_path / "x.onnx", None, mode="static")
    with pytest.raises(ValueError, match="unknown INT8 mode"):
        quantize_encoder(toy_graph, tmp_path / "x.onnx", WindowReader(_feeds(1)), mode="int4")
    with pytest.raises(ValueError, match="nothing to quantize"):
        quantize_encoder(toy_graph, tmp_path / "x.onnx", WindowReader(_feeds(1)), exclude_patterns=("MatMul",))
    with pytest.raises(ValueError, match="no windows"):
        WindowReader([])
    with pytest.raises(ValueError, match="unknown calibration method"):
        quantize_encoder(toy_graph, tmp_path / "x.onnx", WindowReader(_feeds(1)), method="kl")


def test_trt_qdq_is_what_tensorrts_onnx_parser_accepts(toy_graph: Path, tmp_path: Path) -> None:
    # onnx-tensorrt: Q/DQ zero points must be 0 (symmetric), no UINT8 Q/DQ, and a DequantizeLinear of an int32 bias
    # fails ("only activation types allowed as input to this layer"): float biases stay as they are.
    res = write_trt_qdq(toy_graph, tmp_path / "toy.int8-trt.onnx", _feeds(4))
    assert "/pw/Conv" in res.quantized  # a Conv with a bias is quantized (include_conv is the default)
    model = onnx.load(str(res.output))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for n in qdq:
        assert len(n.input) > 2 and n.input[2] in inits, f"{n.name}: no explicit zero point (defaults to uint8)"
        zp = inits[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), f"{n.name}: zero point {zp.dtype} {zp.ravel()[:4]}"
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            assert inits[n.input[0]].dtype == np.int8, f"{n.name} dequantizes {inits[n.input[0]].dtype}"
    assert not any(i.data_type == onnx.TensorProto.UINT8 for i in model.graph.initializer)
    dq_outputs = {n.output[0] for n in qdq if n.op_type == "DequantizeLinear"}
    for n in model.graph.node:
        if n.op_type in ("Conv", "Gemm") and len(n.input) > 2:
            assert n.input[2] not in dq_outputs, f"{n.name}: its bias comes from a DequantizeLinear"
            assert inits[n.input[2]].dtype == np.float32
    assert res.settings["quantize_bias"] is False and res.settings["activations"] == "int8 symmetric"
    ref, out = _run(toy_graph, _feeds(1, seed=5)[0]), _run(res.output, _feeds(1, seed=5)[0])
    assert float((ref * out).sum() / np.linalg.norm(ref) / np.linalg.norm(out)) > 0.99  # still the same model


def test_no_implicit_int8_calibration_table_code() -> None:
    # TensorRT 11 removed implicit INT8 (calibrators, BuilderFlag.INT8) and nothing read the table: it is gone
    assert not hasattr(int8_trt, "write_calibration_cache") and not hasattr(int8_trt, "build_int8_engine")


# --- GELU fused before quantization, WavLM's feature extractor (opt-in), pooled error in the report ---


def _gelu_graph(path: Path, opset: int) -> Path:
    """MatMul layers joined by the three spellings of the exact-erf GELU, plus a near miss that must stay unfused:
    act1 ``(x * (1 + erf(x / sqrt 2))) * 0.5`` (TorchScript's), act2 ``(x * 0.5) * (1 + erf(x * (1 / sqrt 2)))``,
    act3 ``((1 + erf(x / sqrt 2)) * 0.5) * x``, and ``decoy`` dividing by 2 instead of sqrt 2."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array((rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32), f"w{i}")
             for i, s in enumerate([(16, 32), (32, 32), (32, 32), (32, 32), (32, 8)])]
    inits.append(numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b0"))
    nodes = [helper.make_node("MatMul", ["wav", "w0"], ["h0m"], name="/l0/MatMul"),
             helper.make_node("Add", ["h0m", "b0"], ["h0"], name="/l0/Add")]

    def const(name: str, value: float) -> str:
        nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.float32(value), name)))
        return name

    s2, one, half = np.sqrt(np.float32(2)), 1.0, 0.5
    p = "/act1/"  # Constant nodes, as the TorchScript export writes them
    nodes += [helper.make_node("Div", ["h0", const("c_s2", s2)], ["a1d"], name=p + "Div"),
              helper.make_node("Erf", ["a1d"], ["a1e"], name=p + "Erf"),
              helper.make_node("Add", ["a1e", const("c_one", one)], ["a1a"], name=p + "Add"),
              helper.make_node("Mul", ["h0", "a1a"], ["a1m"], name=p + "Mul"),
              helper.make_node("Mul", ["a1m", const("c_half", half)], ["g1"], name=p + "Mul_1"),
              helper.make_node("MatMul", ["g1", "w1"], ["h1"], name="/l1/MatMul")]
    inits += [numpy_helper.from_array(np.array([v], np.float32), n)  # initializers of shape [1]
              for n, v in (("i_half", half), ("i_rs2", 1 / np.sqrt(2)), ("i_one", one), ("i_two", 2.0))]
    p = "/act2/"
    nodes += [helper.make_node("Mul", ["h1", "i_half"], ["a2h"], name=p + "Mul"),
              helper.make_node("Mul", ["h1", "i_rs2"], ["a2d"], name=p + "Mul_1"),
              helper.make_node("Erf", ["a2d"], ["a2e"], name=p + "Erf"),
              helper.make_node("Add", ["i_one", "a2e"], ["a2a"], name=p + "Add"),
              helper.make_node("Mul", ["a2h", "a2a"], ["g2"], name=p + "Mul_2"),
              helper.make_node("MatMul", ["g2", "w2"], ["h2"], name="/l2/MatMul")]
    p = "/act3/"
    nodes += [helper.make_node("Div", ["h2", "c_s2"], ["a3d"], name=p + "Div"),
              helper.make_node("Erf", ["a3d"], ["a3e"], name=p + "Erf"),
              helper.make_node("Add", ["a3e", "c_one"], ["a3a"], name=p + "Add"),
              helper.make_node("Mul", ["a3a", "c_half"], ["a3h"], name=p + "Mul"),
              helper.make_node("Mul", ["a3h", "h2"], ["g3"], name=p + "Mul_1"),
              helper.make_node("MatMul", ["g3", "w3"], ["h3"], name="/l3/MatMul")]
    p = "/decoy/"
    nodes += [helper.make_node("Div", ["h3", "i_two"], ["a4d"], name=p + "Div"),
              helper.make_node("Erf", ["a4d"], ["a4e"], name=p + "Erf"),
              helper.make_node("Add", ["a4e", "c_one"], ["a4a"], name=p + "Add"),
              helper.make_node("Mul", ["h3", "a4a"], ["a4m"], name=p + "Mul"),
              helper.make_node("Mul", ["a4m", "c_half"], ["g4"], name=p + "Mul_1"),
              helper.make_node("MatMul", ["g4", "w4"], ["toy_pooled"], name="/l4/MatMul")]
    graph = helper.make_graph(nodes, "gelus", [helper.make_tensor_value_info("wav", TensorProto.FLOAT, ["b", 16])],
                              [helper.make_tensor_value_info("toy_pooled", TensorProto.FLOAT, ["b", 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _gelu_feeds(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"wav": rng.standard_normal((1, 16)).astype(np.float32)} for _ in range(n)]


def _run_unoptimized(path: Path | bytes, feed: dict) -> np.ndarray:
    """ORT with graph optimizations off, so its own GELU fusion cannot hide a difference between two graphs."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(path if isinstance(path, bytes) else str(path), so,
                                providers=["CPUExecutionProvider"]).run(None, feed)[0]


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for name in n.input:
            users.setdefault(name, []).append(n)
    return users


def _reads_quantized(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    """The node's activation input comes through QuantizeLinear -> DequantizeLinear (QDQ)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    dq = producer.get(node.input[0])
    return (dq is not None and dq.op_type == "DequantizeLinear"
            and producer.get(dq.input[0]) is not None and producer[dq.input[0]].op_type == "QuantizeLinear")


def test_fuse_gelu_is_exact_and_types_its_outputs(tmp_path: Path) -> None:
    from mmmos.calibration.int8_ort import fuse_gelu

    src = _gelu_graph(tmp_path / "g.onnx", 17)
    model = onnx.load(str(src))
    assert fuse_gelu(model) == 3  # act1..act3; the decoy divides by 2, not sqrt 2
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Erf") == 1 and ops.count("Gelu") == 3
    gelus = [n for n in model.graph.node if n.op_type == "Gelu"]
    assert {n.domain for n in gelus} == {"com.microsoft"} and {n.name for n in gelus} == {
        "/act1/Gelu", "/act2/Gelu", "/act3/Gelu"}
    assert any(i.domain == "com.microsoft" for i in model.opset_import)
    typed = {v.name: v.type.tensor_type for v in model.graph.value_info}
    for g in gelus:  # typed float32 with its input's shape: what quantize_static needs to calibrate it
        assert typed[g.output[0]].elem_type == onnx.TensorProto.FLOAT
        assert [d.dim_param or d.dim_value for d in typed[g.output[0]].shape.dim] == ["b", 32]
    onnx.checker.check_model(model)
    fused = model.SerializeToString()
    for seed in range(3):
        feed = _gelu_feeds(1, seed)[0]
        feed["wav"] *= 3.0  # wide inputs: both GELU tails
        ref, out = _run_unoptimized(src, feed), _run_unoptimized(fused, feed)
        assert np.abs(ref - out).max() <= 1e-6 * max(1.0, float(np.abs(ref).max()))
        assert np.abs(_run(src, feed) - _run_unoptimized(fused, feed)).max() <= 1e-6 * max(1.0, np.abs(ref).max())
    # the standard ONNX Gelu only from opset 20: nothing is fused below it
    assert fuse_gelu(onnx.load(str(src)), "onnx") == 0
    with pytest.raises(ValueError, match="unknown GELU target"):
        fuse_gelu(onnx.load(str(src)), "tensorrt")


def test_node_after_each_fused_gelu_is_quantized(tmp_path: Path) -> None:
    src = _gelu_graph(tmp_path / "g.onnx", 17)
    res = quantize_encoder(src, tmp_path / "g.int8.onnx", WindowReader(_gelu_feeds(6)), mode="static")
    assert res.gelu_fused == 3 and res.settings["gelu"] == {"target": "com.microsoft", "fused": 3}
    model = onnx.load(str(res.output))
    users = _consumers(model)
    gelus = [n for n in model.graph.node if n.op_type == "Gelu"]
    assert len(gelus) == 3
    for g in gelus:  # Gelu -> QuantizeLinear -> DequantizeLinear -> the next MatMul
        (q,) = users[g.output[0]]
        assert q.op_type == "QuantizeLinear", f"{g.name} feeds {q.op_type}: its output was not calibrated"
        matmuls = [u for dq in users[q.output[0]] for u in users[dq.output[0]]]
        assert [m.op_type for m in matmuls] == ["MatMul"] and _reads_quantized(model, matmuls[0])
    assert np.abs(_run(src, _gelu_feeds(1, 9)[0]) - _run(res.output, _gelu_feeds(1, 9)[0])).max() < 0.1


def test_trt_qdq_fuses_gelu_only_into_the_standard_op(tmp_path: Path) -> None:
    from mmmos.export.op_allowlist import check_ops

    # opset 17 (what mmmos-export writes): no standard Gelu; TensorRT cannot parse com.microsoft ops -> unfused
    res17 = write_trt_qdq(_gelu_graph(tmp_path / "g17.onnx", 17), tmp_path / "g17.int8-trt.onnx", _gelu_feeds(4))
    m17 = onnx.load(str(res17.output))
    assert res17.gelu_fused == 0 and "opset 17" in res17.settings["gelu"]["note"]
    assert [n.op_type for n in m17.graph.node].count("Erf") == 4
    # opset 20: ONNX Gelu, still calibrated and quantized after it
    res20 = write_trt_qdq(_gelu_graph(tmp_path / "g20.onnx", 20), tmp_path / "g20.int8-trt.onnx", _gelu_feeds(4))
    m20 = onnx.load(str(res20.output))
    gelus = [n for n in m20.graph.node if n.op_type == "Gelu"]
    assert res20.gelu_fused == 3 and len(gelus) == 3 and {n.domain for n in gelus} == {""}
    users = _consumers(m20)
    assert all(users[g.output[0]][0].op_type == "QuantizeLinear" for g in gelus)
    for model in (m17, m20):
        assert not any("custom domain" in p for p in check_ops(model))
        assert all(i.domain in ("", "ai.onnx") for i in model.opset_import)


@pytest.fixture(scope="module")
def tiny_wavlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny WavLM preset as the bundle exports it (PooledEncoder, TorchScript, opset 17)."""
    pytest.importorskip("torch")
    from mmmos.export.onnx_export import export_encoder
    from mmmos.models.fusion import PooledEncoder
    from mmmos.models.presets import build_encoders

    path = tmp_path_factory.mktemp("wavlm") / "wavlm.fp32.onnx"
    export_encoder(PooledEncoder(build_encoders("tiny", names=("wavlm",))["wavlm"]), path)
    return path


def _wavlm_feeds(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"wav": (0.1 * rng.standard_normal((1, 160000))).astype(np.float32),
             "lengths": np.array([160000 - 40000 * (i % 3)], np.int64)} for i in range(n)]


FE_CONVS = [f"/encoder/feature_extractor/conv_layers.{k}/conv_layers.{k}.0/Conv" for k in range(1, 7)]


def test_wavlm_gelu_fusion_is_exact(tiny_wavlm: Path) -> None:
    from mmmos.calibration.int8_ort import fuse_gelu

    model = onnx.load(str(tiny_wavlm))
    assert fuse_gelu(model) == 10  # 7 feature-extractor layers, pos_conv, 2 transformer FFNs
    assert "Erf" not in {n.op_type for n in model.graph.node}
    feed = _wavlm_feeds(2)[1]
    ref, out = _run_unoptimized(tiny_wavlm, feed), _run_unoptimized(model.SerializeToString(), feed)
    assert np.abs(ref - out).max() <= 1e-6 * max(1.0, float(np.abs(ref).max()))


def test_feature_extractor_quantization_is_opt_in_and_skips_layer_0(tiny_wavlm: Path, tmp_path: Path) -> None:
    model = onnx.load(str(tiny_wavlm))
    body, frontend = body_nodes(model, include_conv=True)
    layer0 = "/encoder/feature_extractor/conv_layers.0/conv_layers.0.0/Conv"
    assert not any("feature_extractor" in b for b in body) and set(FE_CONVS) | {layer0} <= set(frontend)
    body_fe, frontend_fe = body_nodes(model, include_conv=True, quantize_feature_extractor=True)
    assert sorted(set(body_fe) - set(body)) == FE_CONVS and layer0 in frontend_fe
    # an exclude pattern still wins; and the FE convs need no --quantize-conv
    assert FE_CONVS[5] not in body_nodes(model, ("conv_layers.6",), quantize_feature_extractor=True)[0]
    assert sorted(b for b in body_nodes(model, quantize_feature_extractor=True)[0] if "feature" in b) == FE_CONVS

    default = quantize_encoder(tiny_wavlm, tmp_path / "off.onnx", WindowReader(_wavlm_feeds(2)), include_conv=True)
    assert default.quantized_feature_extractor == [] and default.settings["quantize_feature_extractor"] is False
    off = onnx.load(str(default.output))
    assert not any(_reads_quantized(off, n) for n in off.graph.node if n.name in FE_CONVS)

    lines: list[str] = []
    res = quantize_encoder(tiny_wavlm, tmp_path / "fe.onnx", WindowReader(_wavlm_feeds(2)), include_conv=True,
                           quantize_feature_extractor=True, log=lines.append)
    assert res.quantized_feature_extractor == FE_CONVS and res.to_dict()["quantized_feature_extractor"] == FE_CONVS
    assert any(FE_CONVS[0] in line for line in lines)  # the log names them too
    on = onnx.load(str(res.output))
    nodes = {n.name: n for n in on.graph.node}
    producer = {o: n for n in on.graph.node for o in n.output}
    for name in FE_CONVS:  # activation and weight through Q/DQ; the layer before is a fused Gelu
        assert _reads_quantized(on, nodes[name]) and producer[nodes[name].input[1]].op_type == "DequantizeLinear"
        q = producer[producer[nodes[name].input[0]].input[0]]
        assert producer[q.input[0]].op_type == "Gelu"
    assert not _reads_quantized(on, nodes[layer0]) and nodes[layer0].input[1] in {i.name for i in on.graph.initializer}
    assert not any(n.op_type == "QuantizeLinear" and "conv_layers.0/" in (producer.get(n.input[0]) or n).name
                   and producer[n.input[0]].op_type != "Gelu" for n in on.graph.node)  # the GroupNorm stays fp32


def test_cli_feature_extractor_flag_defaults_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mmmos.calibration import calibrate as calibrate_mod
    from mmmos.calibration.cli import app

    seen: list = []

    def fake(bundle: Path, data: Path, opts: object, log: object) -> dict:
        seen.append(opts)
        return {"precisions": {}}

    monkeypatch.setattr(calibrate_mod, "calibrate_bundle", fake)
    assert CliRunner().invoke(app, [str(tmp_path), str(tmp_path)]).exit_code == 0
    assert CliRunner().invoke(app, [str(tmp_path), str(tmp_path), "--quantize-feature-extractor"]).exit_code == 0
    assert [o.quantize_feature_extractor for o in seen] == [False, True]
    assert calibrate_mod.CalibrationOptions().quantize_feature_extractor is False


def test_pooled_error_is_in_the_int8_report(tiny_wavlm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from mmmos.calibration import int8_ort
    from mmmos.calibration.calibrate import CalibrationOptions, make_int8_graphs
    from mmmos.calibration.data import ClipWindows

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    shutil.copy(tiny_wavlm, bundle / "wavlm.fp32.onnx")
    manifest = {"encoders": [{"name": "wavlm", "graphs": {"fp32": "wavlm.fp32.onnx"}}]}

    def clip(feeds: list[dict]) -> ClipWindows:
        return ClipWindows("x.wav", 10.0 * len(feeds), {"wavlm": np.concatenate([f["wav"] for f in feeds])},
                           {"wavlm": np.concatenate([f["lengths"] for f in feeds])}, np.ones(len(feeds), np.float32))

    calib, check = [clip(_wavlm_feeds(3))], [clip(_wavlm_feeds(2, seed=7))]
    monkeypatch.setattr(int8_ort, "FEATURE_WARN_REL_L2", 0.0)  # any error warns: the warning line shows up
    lines: list[str] = []
    info, written = make_int8_graphs(bundle, manifest, calib, CalibrationOptions(trt_int8=False, calib_windows=3),
                                     lines.append, check)
    rep = info["encoders"]["wavlm"]["int8"]
    feats = rep["features"]
    assert feats["output"] == "wavlm_pooled" and feats["windows"] == 2  # measured on the check windows
    assert 0.0 < feats["pooled_rel_l2"] < 0.2 and feats["pooled_rel_l2_max_window"] >= feats["pooled_rel_l2"] * 0.5
    assert rep["quantized_feature_extractor"] == [] and rep["gelu_fused"] == 10
    assert any("relative L2" in line for line in lines) and any("WARNING" in line for line in lines)
    assert written == ["wavlm.int8.onnx"]
    # without check clips, the calibration windows are used
    monkeypatch.setattr(int8_ort, "FEATURE_WARN_REL_L2", 0.10)
    lines.clear()
    info, _ = make_int8_graphs(bundle, manifest, calib, CalibrationOptions(trt_int8=False, calib_windows=3),
                               lines.append)
    assert info["encoders"]["wavlm"]["int8"]["features"]["windows"] == 3
    assert not any("WARNING" in line for line in lines)


def test_gelu_fusion_keeps_external_data_graphs_external(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmmos.calibration import int8_ort

    src = _gelu_graph(tmp_path / "g.onnx", 17)
    folder = tmp_path / "big"
    folder.mkdir()
    # the weights go to g.onnx.data (the scalars stay inline), as mmmos-export saves graphs past 2 GB
    onnx.save_model(onnx.load(str(src)), str(folder / "g.onnx"), save_as_external_data=True, location="g.onnx.data",
                    size_threshold=1024)
    monkeypatch.setattr(int8_ort, "LARGE_MODEL_BYTES", 0)  # treat it as large
    res = quantize_encoder(folder / "g.onnx", folder / "g.int8.onnx", WindowReader(_gelu_feeds(4)))
    assert res.gelu_fused == 3
    assert sorted(p.name for p in folder.iterdir()) == ["g.int8.onnx", "g.int8.onnx.data", "g.onnx", "g.onnx.data"]
    out = onnx.load(str(res.output), load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in out.graph.initializer)
    feed = _gelu_feeds(1, 9)[0]
    assert np.abs(_run(src, feed) - _run(res.output, feed)).max() < 0.1
