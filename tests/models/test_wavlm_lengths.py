"""WavLM on the valid length: a window fed `length_rule.fed_samples(L)` samples gives the padded 10 s window's pooled
output (the first GroupNorm keeps the window's statistics, the position buckets are sliced), in eager and in an ONNX
graph with a dynamic samples axis, alone and in batches of mixed lengths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmmos.models.fusion import PooledEncoder
from mmmos.models.wavlm import WavLM, WavLMConfig

N = 160000
LENGTHS = [1, 400, 16000, 37777, 80000, 123456, 159999, N]


@pytest.fixture(scope="module")
def model() -> PooledEncoder:
    torch.manual_seed(11)
    wavlm = WavLM(WavLMConfig.tiny())
    with torch.no_grad():  # a conv bias makes v0 (layer 0's output on zeros) non-zero: the harder case
        wavlm.feature_extractor.conv_layers[0][0].bias = torch.nn.Parameter(0.3 * torch.randn(32))
    wavlm.bake_weight_norm()
    return PooledEncoder(wavlm).eval()


def _signal(n: int, seed: int) -> torch.Tensor:
    return 0.1 * torch.randn(n, generator=torch.Generator().manual_seed(seed))


def test_length_rule_feeds_whole_chunks_and_the_receptive_field(model: PooledEncoder) -> None:
    rule = model.encoder.length_rule
    assert (rule.margin, rule.step, rule.offset, rule.max_samples) == (400, 1280, 5, 160005)
    for length in LENGTHS:
        fed = rule.fed_samples(length)
        assert model.encoder.conv_frames(fed) % 256 == 0  # the chunked sums need no Pad
        assert fed >= 320 * (-(-length // 320) - 1) + 400 or fed == rule.max_samples  # every valid frame's samples
    assert rule.fed_samples(1) == 1285 and rule.fed_samples(N) == 160005


@torch.no_grad()
def test_fed_lengths_equal_the_padded_window(model: PooledEncoder) -> None:
    rule = model.encoder.length_rule
    for i, length in enumerate(LENGTHS):
        x = _signal(N, i)
        (padded,) = model(x[None], torch.tensor([length]))
        fed = rule.fed_samples(length)
        short = torch.zeros(1, fed)
        short[0, : min(fed, N)] = x[: min(fed, N)]
        (got,) = model(short, torch.tensor([length]))
        torch.testing.assert_close(got, padded, atol=1e-5, rtol=0, msg=f"length {length}")


@torch.no_grad()
def test_onnx_graph_with_a_dynamic_samples_axis(model: PooledEncoder, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    rule = model.encoder.length_rule
    path = tmp_path / "wavlm.onnx"
    example = (_signal(2 * rule.max_samples, 0).reshape(2, -1), torch.tensor([N, 50000]))
    axes = {"wav": {0: "batch", 1: "samples"}, "lengths": {0: "batch"}, "wavlm_pooled": {0: "batch"}}
    torch.onnx.export(model, example, str(path), input_names=["wav", "lengths"], output_names=["wavlm_pooled"],
                      dynamic_axes=axes, opset_version=17, dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    signals = [_signal(N, 100 + i) for i in range(len(LENGTHS))]
    want = [model(x[None], torch.tensor([n]))[0].numpy() for x, n in zip(signals, LENGTHS, strict=True)]
    for x, n, w in zip(signals, LENGTHS, want, strict=True):
        fed = rule.fed_samples(n)
        wav = np.zeros((1, fed), np.float32)
        wav[0, : min(fed, N)] = x[: min(fed, N)].numpy()
        (got,) = sess.run(None, {"wav": wav, "lengths": np.array([n], np.int64)})
        np.testing.assert_allclose(got, w, atol=1e-4, rtol=0, err_msg=f"length {n}")
    # a batch of mixed lengths, each padded with zeros to the batch's longest fed length
    pick = [1, 3, 5]
    fed = max(rule.fed_samples(LENGTHS[i]) for i in pick)
    wav = np.zeros((len(pick), fed), np.float32)
    for row, i in enumerate(pick):
        m = min(fed, N)
        wav[row, :m] = signals[i][:m].numpy()
    (got,) = sess.run(None, {"wav": wav, "lengths": np.array([LENGTHS[i] for i in pick], np.int64)})
    np.testing.assert_allclose(got, np.concatenate([want[i] for i in pick]), atol=1e-4, rtol=0)
