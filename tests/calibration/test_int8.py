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
