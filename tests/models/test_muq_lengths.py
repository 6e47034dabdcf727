"""MuQ on about the valid length: a window fed `length_rule.fed_samples(L)` samples gives the padded 10 s window's
outputs (rotary tables, token starts and the frame -> step assignment sliced to the fed length), in eager and in an
ONNX graph with a dynamic samples axis, alone and in batches of mixed lengths padded to the batch's longest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmmos.models.fusion import PooledEncoder
from mmmos.models.muq import MARGIN_TOKENS, MuQ, MuQConfig
from mmmos.models.muq_conformer import Conformer, rotary_tables

# At 24 kHz: around token boundaries (960 samples), short and long; `_lengths` adds where the margin reaches the end.
LENGTHS = [1, 2, 500, 959, 960, 961, 1921, 12345, 24000, 47999, 96001, 150000, 239999, 240000]


def _randomise_batchnorm(model: torch.nn.Module) -> None:
    """Non-trivial BatchNorm statistics, so eval-mode BN is not an identity (as tests/models/test_muq.py does)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)


def _pooled(sample_rate: int, seed: int = 0) -> PooledEncoder:
    torch.manual_seed(seed)
    muq = MuQ(MuQConfig.tiny(sample_rate=sample_rate))
    _randomise_batchnorm(muq)
    return PooledEncoder(muq.eval(), frames=True).eval()


@pytest.fixture(scope="module", params=[24000, 16000], ids=["24k", "16k-feed"])
def model(request: pytest.FixtureRequest) -> PooledEncoder:
    """Tiny MuQ at its own rate (grid offset 0) and fed 16 kHz as MMMOS does (offset 640, a partial last token)."""
    return _pooled(request.param)


def _signal(n: int, seed: int) -> torch.Tensor:
    return 0.1 * torch.randn(n, generator=torch.Generator().manual_seed(seed))


def _lengths(muq: MuQ) -> list[int]:
    """LENGTHS scaled to the window, plus the longest length fed less than the whole window and the next one."""
    rule, window = muq.length_rule, muq.window_samples
    last_short = max(n for n in range(window - rule.margin - 2 * rule.step, window) if rule.fed_samples(n) < window)
    scaled = {min(n * window // 240000, window) or 1 for n in LENGTHS}
    return sorted(scaled | {1, last_short, last_short + 1, window - 1, window})


def _fed(x: torch.Tensor, fed: int) -> torch.Tensor:
    """`x` cut or zero-padded to `fed` samples (a row of a batch padded to the batch's longest fed length)."""
    out = torch.zeros(fed)
    out[: min(fed, x.numel())] = x[:fed]
    return out


def test_length_rule_values() -> None:
    for rate, offset in [(24000, 0), (16000, 640)]:
        muq = MuQ(MuQConfig.tiny(sample_rate=rate))
        rule = muq.length_rule
        assert (rule.margin, rule.step, rule.offset, rule.max_samples) == (
            MARGIN_TOKENS * 960, 960, offset, muq.window_samples)
        cfg = muq.config
        for valid in _lengths(muq):
            fed = rule.fed_samples(valid)
            assert fed % 960 == offset and muq.min_input_samples <= fed <= muq.window_samples
            # the fed tokens are the window's first tokens, MARGIN_TOKENS past the last valid one (or the whole window)
            valid_tokens = -(-valid // 960)
            assert fed == muq.window_samples or cfg.num_tokens(fed) >= valid_tokens + MARGIN_TOKENS
        assert rule.fed_samples(muq.window_samples) == muq.window_samples  # a full window is fed as today


def test_full_config_length_rule() -> None:
    with torch.device("meta"):
        muq = MuQ(MuQConfig.full())
    rule = muq.length_rule
    assert rule.to_dict() == {"margin": 28800, "step": 960, "offset": 0, "max_samples": 240000}
    assert rule.min_samples == 29760 >= muq.min_input_samples == 1025


def test_rotary_tables_slice_exactly() -> None:
    full_cos, full_sin = rotary_tables(250, 16, 10000.0)
    for t in (1, 26, 167, 249):
        cos, sin = rotary_tables(t, 16, 10000.0)
        assert torch.equal(cos, full_cos[:t]) and torch.equal(sin, full_sin[:t])


@torch.no_grad()
def test_conformer_uses_the_first_rows_of_its_tables() -> None:
    """A conformer built for 250 tokens, fed 40, equals one built for exactly 40 tokens (same weights)."""
    kwargs = dict(dim=32, depth=2, heads=4, ffn=64, kernel_size=7, act="swish", rotary_base=10000.0,
                  layer_norm_eps=1e-5)
    torch.manual_seed(0)
    big = Conformer(**kwargs, num_tokens=250).eval()
    small = Conformer(**kwargs, num_tokens=40).eval()
    small.load_state_dict(big.state_dict())
    x = torch.randn(2, 40, 32)
    mask = torch.arange(40)[None, :] < torch.tensor([[40], [13]])
    assert torch.equal(big(x, mask), small(x, mask))
    with pytest.raises(ValueError, match="at most 40"):
        small(torch.randn(1, 41, 32))


def test_input_lengths_outside_the_range_are_rejected() -> None:
    muq = MuQ(MuQConfig.tiny())
    for n in (muq.window_samples + 960, muq.min_input_samples - 1):
        with pytest.raises(ValueError, match="257 to 240000"):
            muq(torch.zeros(1, n), torch.tensor([1]))


@torch.no_grad()
def test_fed_lengths_equal_the_padded_window(model: PooledEncoder) -> None:
    """pooled, frames and steps of a window fed its rule's length equal the padded window's, at many lengths."""
    enc = model.encoder
    rule, window = enc.length_rule, enc.window_samples
    lengths = _lengths(enc)
    x = torch.stack([_signal(window, 1), 0.5 * _signal(window, 2) ** 3])  # two signals per length
    for length in lengths:
        lens = torch.tensor([length, length])
        want = model(x, lens)
        fed = rule.fed_samples(length)
        got = model(x[:, :fed], lens)
        for name, g, w in zip(model.output_names, got, want, strict=True):
            assert g.shape == w.shape
            torch.testing.assert_close(g, w, atol=1e-5, rtol=0, msg=f"{name}: length {length}, fed {fed}")
        hidden, mask = enc(x[:, :fed], lens)
        assert hidden.shape[1] == mask.shape[1] == enc.config.num_tokens(fed)


@torch.no_grad()
def test_mixed_batch_padded_to_the_longest_fed_length(model: PooledEncoder) -> None:
    """The runtime batches windows of different lengths by zero-padding each to the batch's longest fed length."""
    enc = model.encoder
    rule, window = enc.length_rule, enc.window_samples
    lengths = [1, 961, 50000, window // 2]
    signals = [_signal(window, 10 + i) for i in range(len(lengths))]
    want = [model(x[None], torch.tensor([n])) for x, n in zip(signals, lengths, strict=True)]
    fed = max(rule.fed_samples(n) for n in lengths)
    batch = torch.stack([_fed(x[: rule.fed_samples(n)], fed) for x, n in zip(signals, lengths, strict=True)])
    got = model(batch, torch.tensor(lengths))
    for k, name in enumerate(model.output_names):
        torch.testing.assert_close(got[k], torch.cat([w[k] for w in want]), atol=1e-5, rtol=0, msg=name)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_graph_with_a_dynamic_samples_axis(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from mmmos.export.onnx_export import export_encoder

    model = _pooled(16000, seed=3)  # the partial last token is the harder shape case
    enc = model.encoder
    rule, window = enc.length_rule, enc.window_samples
    path = tmp_path / "muq.fp32.onnx"
    export_encoder(model, path, dynamic_samples=True)
    wav_dims = [d.dim_param or d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert wav_dims == ["batch", "samples"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    lengths = [1, 961, 33333, 100000, window - 1, window]
    signals = [_signal(window, 20 + i) for i in range(len(lengths))]
    with torch.no_grad():
        want = [[o.numpy() for o in model(x[None], torch.tensor([n]))] for x, n in zip(signals, lengths, strict=True)]
    for x, n, w in zip(signals, lengths, want, strict=True):
        fed = rule.fed_samples(n)
        got = sess.run(None, {"wav": x[None, :fed].numpy(), "lengths": np.array([n], np.int64)})
        for g, ww, name in zip(got, w, model.output_names, strict=True):
            np.testing.assert_allclose(g, ww, atol=1e-4, rtol=0, err_msg=f"{name} length {n} fed {fed}")
    # mixed lengths, each zero-padded to the batch's longest fed length (not the window)
    pick = [0, 1, 2, 3]
    fed = max(rule.fed_samples(lengths[i]) for i in pick)
    batch = torch.stack([_fed(signals[i][: rule.fed_samples(lengths[i])], fed) for i in pick]).numpy()
    got = sess.run(None, {"wav": batch, "lengths": np.array([lengths[i] for i in pick], np.int64)})
    for k, name in enumerate(model.output_names):
        np.testing.assert_allclose(got[k], np.concatenate([want[i][k] for i in pick]), atol=1e-4, rtol=0,
                                   err_msg=name)


@torch.no_grad()
def test_full_config_margin_keeps_the_pooled_vector() -> None:
    """The real architecture (12 layers, depthwise kernel 31) leaks past the mask: MARGIN_TOKENS keeps the
    L2-normalised pooled vector within 1e-4 of the padded window's (random weights; about 8 s on 2 cores)."""
    torch.manual_seed(0)
    model = PooledEncoder(MuQ(MuQConfig.full()).eval(), frames=True).eval()
    rule, window = model.encoder.length_rule, model.encoder.window_samples
    lengths = [1, 961, 30000]
    x = torch.stack([_signal(window, 30 + i) for i in range(len(lengths))])
    want = model(x, torch.tensor(lengths))
    fed = max(rule.fed_samples(n) for n in lengths)
    short = torch.stack([_fed(row[: rule.fed_samples(n)], fed) for row, n in zip(x, lengths, strict=True)])
    got = model(short, torch.tensor(lengths))  # one batch at the longest fed length, as the runtime does
    assert (got[0] - want[0]).abs().max() < 1e-4
    alone = model(x[:1, : rule.fed_samples(1)], torch.tensor([1]))  # the fewest tokens: the largest leak
    assert (alone[0] - want[0][:1]).abs().max() < 1e-4
    # The frames output is not averaged over the window nor normalised: MARGIN_TOKENS' docstring gives its bound.
    assert (alone[1] - want[1][:1]).abs().max() < 2e-3 and torch.equal(alone[2], want[2][:1])
