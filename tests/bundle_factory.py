"""Builds small numpy-only bundles with onnx.helper: the contract's names, shapes and manifest.

Encoders: "wavlm" (16 kHz, output wavlm_pooled [B, L, D], not normalised) and "muq" (24 kHz, output
muq_pooled [B, D2], L2-normalised); both zero the waveform past `lengths`, cut it into T frames, project
each frame, and masked-mean over the valid frames (frame valid iff its first sample < length). The
ensemble graph mixes the wavlm layers per member (softmax weights), L2-normalises, applies a linear
head per member on [wavlm_mix, muq] and de-normalises: scores [B, M, 4], mean [B, 4], std [B, 4].
`reference()` is the same maths in numpy, so tests can check the runtime's windowing and averaging.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 18
T_FRAMES = 50


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@dataclass
class Params:
    """Random weights of a test bundle (numpy), used by both the graphs and `reference`."""

    proj: dict[str, np.ndarray]  # encoder -> [S, out] frame projection
    mix: np.ndarray  # [M, L] layer logits
    w_a: np.ndarray  # [M, D, 4]
    w_b: np.ndarray  # [M, D2, 4]
    bias: np.ndarray  # [M, 4]
    t_mean: np.ndarray  # [M, 4]
    t_std: np.ndarray  # [M, 4]
    L: int
    D: int
    D2: int
    rates: dict[str, int]
    fp16: bool = False


def _const(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr), name)


def _encoder_graph(
    name: str, W: int, proj: np.ndarray, layers: int | None, fp16: bool  # noqa: N803
) -> onnx.ModelProto:
    S = W // T_FRAMES
    nodes = [
        helper.make_node("Range", ["zero_i", "W_i", "one_i"], ["pos"]),  # [W]
        helper.make_node("Unsqueeze", ["lengths", "ax1"], ["len2"]),  # [B,1]
        helper.make_node("Less", ["pos", "len2"], ["valid"]),  # [B,W]
        helper.make_node("Cast", ["valid"], ["validf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["wav", "validf"], ["x"]),
        helper.make_node("Reshape", ["x", "frame_shape"], ["frames"]),  # [B,T,S]
        helper.make_node("MatMul", ["frames", "proj"], ["h"]),  # [B,T,out]
        helper.make_node("Tanh", ["h"], ["f"]),
        # frame t valid iff t*S < length
        helper.make_node("Range", ["zero_i", "T_i", "one_i"], ["tpos"]),
        helper.make_node("Mul", ["tpos", "S_i"], ["tstart"]),
        helper.make_node("Less", ["tstart", "len2"], ["fvalid"]),  # [B,T]
        helper.make_node("Cast", ["fvalid"], ["fm"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["fm", "ax1"], ["cnt"], keepdims=1),  # [B,1]
        helper.make_node("Unsqueeze", ["fm", "ax2"], ["fm3"]),  # [B,T,1]
        helper.make_node("Mul", ["f", "fm3"], ["fmasked"]),
        helper.make_node("ReduceSum", ["fmasked", "ax1"], ["fsum"], keepdims=0),  # [B,out]
        helper.make_node("Div", ["fsum", "cnt"], ["pooled_flat"]),
    ]
    inits = [
        _const("zero_i", np.array(0, np.int64)), _const("one_i", np.array(1, np.int64)),
        _const("W_i", np.array(W, np.int64)), _const("T_i", np.array(T_FRAMES, np.int64)),
        _const("S_i", np.array(S, np.int64)), _const("ax1", np.array([1], np.int64)),
        _const("ax2", np.array([2], np.int64)), _const("frame_shape", np.array([0, T_FRAMES, S], np.int64)),
        _const("proj", proj.astype(np.float32)),
    ]
    out_name = f"{name}_pooled"
    last = "pooled_flat"
    if layers is not None:
        D = proj.shape[1] // layers
        nodes.append(helper.make_node("Reshape", [last, "ld_shape"], ["pooled_ld"]))
        inits.append(_const("ld_shape", np.array([0, layers, D], np.int64)))
        last = "pooled_ld"
        out_shape = ["batch", layers, D]
    else:
        nodes += [
            helper.make_node("ReduceL2", [last, "axm1"], ["nrm"], keepdims=1),
            helper.make_node("Max", ["nrm", "eps"], ["nrm_c"]),
            helper.make_node("Div", [last, "nrm_c"], ["pooled_n"]),
        ]
        inits += [_const("axm1", np.array([-1], np.int64)), _const("eps", np.array(1e-12, np.float32))]
        last = "pooled_n"
        out_shape = ["batch", proj.shape[1]]
    if fp16:  # a "mixed" graph: fp16 inside, fp32 I/O (keep_io_types)
        nodes += [helper.make_node("Cast", [last], ["h16"], to=TensorProto.FLOAT16),
                  helper.make_node("Cast", ["h16"], ["h32"], to=TensorProto.FLOAT)]
        last = "h32"
    nodes.append(helper.make_node("Identity", [last], [out_name]))
    graph = helper.make_graph(
        nodes, f"{name}_encoder",
        [helper.make_tensor_value_info("wav", TensorProto.FLOAT, ["batch", W]),
         helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def _ensemble_graph(p: Params) -> onnx.ModelProto:
    M = p.mix.shape[0]
    nodes = [
        helper.make_node("Softmax", ["mix"], ["mixw"], axis=-1),  # [M,L]
        helper.make_node("MatMul", ["mixw", "wavlm_pooled"], ["mixed"]),  # [B,M,D]
        helper.make_node("ReduceL2", ["mixed", "axm1"], ["nrm"], keepdims=1),
        helper.make_node("Max", ["nrm", "eps"], ["nrm_c"]),
        helper.make_node("Div", ["mixed", "nrm_c"], ["mixed_n"]),
        helper.make_node("Unsqueeze", ["mixed_n", "ax2"], ["a4"]),  # [B,M,1,D]
        helper.make_node("MatMul", ["a4", "w_a"], ["za"]),  # [B,M,1,4]
        helper.make_node("Unsqueeze", ["muq_pooled", "ax12"], ["b4"]),  # [B,1,1,D2]
        helper.make_node("MatMul", ["b4", "w_b"], ["zb"]),  # [B,M,1,4]
        helper.make_node("Add", ["za", "zb"], ["z4"]),
        helper.make_node("Squeeze", ["z4", "ax2"], ["z"]),  # [B,M,4]
        helper.make_node("Add", ["z", "bias"], ["zz"]),
        helper.make_node("Mul", ["zz", "t_std"], ["zs"]),
        helper.make_node("Add", ["zs", "t_mean"], ["scores"]),
        helper.make_node("ReduceMean", ["scores", "ax1"], ["mean"], keepdims=0),
        helper.make_node("Unsqueeze", ["mean", "ax1"], ["mean3"]),
        helper.make_node("Sub", ["scores", "mean3"], ["dev"]),
        helper.make_node("Mul", ["dev", "dev"], ["dev2"]),
        helper.make_node("ReduceMean", ["dev2", "ax1"], ["var"], keepdims=0),
        helper.make_node("Sqrt", ["var"], ["std"]),
    ]
    inits = [
        _const("mix", p.mix.astype(np.float32)), _const("w_a", p.w_a.astype(np.float32)),
        _const("w_b", p.w_b.astype(np.float32)), _const("bias", p.bias.astype(np.float32)),
        _const("t_mean", p.t_mean.astype(np.float32)), _const("t_std", p.t_std.astype(np.float32)),
        _const("axm1", np.array([-1], np.int64)), _const("eps", np.array(1e-12, np.float32)),
        _const("ax1", np.array([1], np.int64)), _const("ax2", np.array([2], np.int64)),
        _const("ax12", np.array([1, 2], np.int64)),
    ]
    graph = helper.make_graph(
        nodes, "ensemble",
        [helper.make_tensor_value_info("wavlm_pooled", TensorProto.FLOAT, ["batch", p.L, p.D]),
         helper.make_tensor_value_info("muq_pooled", TensorProto.FLOAT, ["batch", p.D2])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", M, 4]),
         helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("std", TensorProto.FLOAT, ["batch", 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def make_bundle(
    root: Path,
    *,
    seed: int = 0,
    members: int = 3,
    untrained: bool = True,
    window_seconds: float = 10.0,
    rates: tuple[int, int] = (16000, 24000),
    precisions: dict[str, dict] | None = None,
    L: int = 3,  # noqa: N803 - the contracts' symbols (layers, widths)
    D: int = 8,  # noqa: N803
    D2: int = 6,  # noqa: N803
) -> Params:
    """Write a bundle folder at `root` and return its weights."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    W = {"wavlm": int(window_seconds * rates[0]), "muq": int(window_seconds * rates[1])}
    p = Params(
        proj={"wavlm": rng.normal(0, 0.5, (W["wavlm"] // T_FRAMES, L * D)).astype(np.float32),
              "muq": rng.normal(0, 0.5, (W["muq"] // T_FRAMES, D2)).astype(np.float32)},
        mix=rng.normal(0, 1, (members, L)).astype(np.float32),
        w_a=rng.normal(0, 1, (members, D, 4)).astype(np.float32),
        w_b=rng.normal(0, 1, (members, D2, 4)).astype(np.float32),
        bias=rng.normal(0, 0.1, (members, 4)).astype(np.float32),
        t_mean=rng.uniform(4, 7, (members, 4)).astype(np.float32),
        t_std=rng.uniform(0.5, 1.5, (members, 4)).astype(np.float32),
        L=L, D=D, D2=D2, rates={"wavlm": rates[0], "muq": rates[1]},
    )
    files: dict[str, str] = {}
    for prec in ("fp32", "fp16"):
        for name, layers in (("wavlm", L), ("muq", None)):
            fn = f"{name}.{prec}.onnx"
            onnx.save(_encoder_graph(name, W[name], p.proj[name], layers, prec == "fp16"), root / fn)
            files[fn] = _sha(root / fn)
    onnx.save(_ensemble_graph(p), root / "ensemble.fp32.onnx")
    files["ensemble.fp32.onnx"] = _sha(root / "ensemble.fp32.onnx")
    manifest = {
        "format_version": 1,
        "axes": ["PQ", "PC", "CE", "CU"],
        "window": {"seconds": window_seconds, "hop_seconds": window_seconds},
        "untrained": untrained,
        "encoders": [
            {"name": n, "sample_rate": p.rates[n], "window_samples": W[n],
             "graphs": {"fp32": f"{n}.fp32.onnx", "fp16": f"{n}.fp16.onnx"},
             "inputs": ["wav", "lengths"], "outputs": [f"{n}_pooled"], "frames": False}
            for n in ("wavlm", "muq")
        ],
        "ensemble": {"graphs": {"fp32": "ensemble.fp32.onnx"}, "inputs": ["wavlm_pooled", "muq_pooled"],
                     "outputs": ["scores", "mean", "std"]},
        "members": [{"name": f"m{i}", "aggregator": "mlp", "loss": "utmos", "encoders": ["wavlm", "muq"],
                     "dev_scores": {}, "config": {}} for i in range(members)],
        "precisions": precisions if precisions is not None else
        {"fp32": {"status": "passed"}, "fp16": {"status": "unchecked"}},
        "provenance": {"source": "random-init", "preset": "test", "seed": seed, "checkpoints": [],
                       "mmmos_version": "0.1.0", "created": "test"},
        "files": files,
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return p


def _encode_ref(p: Params, name: str, wav: np.ndarray, length: int) -> np.ndarray:
    W = wav.size
    S = W // T_FRAMES
    x = np.where(np.arange(W) < length, wav, 0).astype(np.float32)
    f = np.tanh(x.reshape(T_FRAMES, S).astype(np.float64) @ p.proj[name].astype(np.float64))
    fm = (np.arange(T_FRAMES) * S < length).astype(np.float64)
    pooled = (f * fm[:, None]).sum(0) / fm.sum()
    if name == "wavlm":
        return pooled.reshape(p.L, p.D)
    return pooled / max(np.linalg.norm(pooled), 1e-12)


def window_scores(p: Params, wavs: dict[str, np.ndarray], lengths: dict[str, int]) -> np.ndarray:
    """Member scores [M, 4] of one window, in float64 numpy (the graphs' maths)."""
    a = _encode_ref(p, "wavlm", wavs["wavlm"], lengths["wavlm"])
    b = _encode_ref(p, "muq", wavs["muq"], lengths["muq"])
    mw = np.exp(p.mix - p.mix.max(1, keepdims=True))
    mw /= mw.sum(1, keepdims=True)
    mixed = mw @ a  # [M, D]
    mixed /= np.maximum(np.linalg.norm(mixed, axis=1, keepdims=True), 1e-12)
    z = np.einsum("md,mdk->mk", mixed, p.w_a) + np.einsum("d,mdk->mk", b, p.w_b) + p.bias
    return z * p.t_std + p.t_mean


def reference(p: Params, samples: np.ndarray, sr: int, window_seconds: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """File (mean [4], std [4]) by the contract's window rule, resampling with soxr like the runtime."""
    import soxr

    n = max(1, int(np.ceil(samples.size / (window_seconds * sr) - 1e-12)))
    dur = samples.size / sr
    per = {k: (samples if r == sr else soxr.resample(samples, sr, r, quality="HQ")) for k, r in p.rates.items()}
    acc, wsum = 0.0, 0.0
    for k in range(n):
        wavs, lens = {}, {}
        for name, r in p.rates.items():
            Wn = int(window_seconds * r)
            chunk = per[name][k * Wn : (k + 1) * Wn]
            buf = np.zeros(Wn, np.float32)
            buf[: chunk.size] = chunk
            wavs[name], lens[name] = buf, int(min(max(per[name].size - k * Wn, 1), Wn))
        w = min(max(dur - k * window_seconds, 0), window_seconds) / window_seconds
        acc = acc + w * window_scores(p, wavs, lens)
        wsum += w
    members = acc / wsum
    return members.mean(0), members.std(0)
