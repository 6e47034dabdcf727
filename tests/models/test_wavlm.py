"""WavLM: parity with the original Audiobox/unilm code, masks, size, ONNX export."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mmmos.models.wavlm import WavLM, WavLMConfig, parse_conv_layers
from mmmos.models.wavlm_checkpoints import unilm_cfg_dict

N = 160000


def audiobox_pair(cfg: WavLMConfig, seed: int = 0) -> tuple[torch.nn.Module, WavLM]:
    """The original Audiobox WavLM with random weights, and ours with the same weights (strict load)."""
    ab_wavlm = pytest.importorskip("audiobox_aesthetics.model.wavlm")
    torch.manual_seed(seed)
    ref = ab_wavlm.WavLM(ab_wavlm.WavLMConfig(unilm_cfg_dict(cfg))).eval()
    # Random LayerNorm/GroupNorm affines and biases (the original init leaves them at 1/0, which would hide bugs).
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("bias") or ("norm" in name and name.endswith("weight")) or name.endswith("grep_a"):
                p.add_(0.1 * torch.randn_like(p))
    ours = WavLM(cfg)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def reference_states(
    ref: torch.nn.Module, wav: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Audiobox's call: padding_mask = ~valid-sample-mask, all layer results, stacked to [B, L, T, D]."""
    padding = torch.arange(wav.shape[1])[None, :] >= lengths[:, None]
    with torch.no_grad():
        (_, results), frame_pad = ref.extract_features(
            source=wav.clone(), padding_mask=padding, output_layer=len(ref.encoder.layers) + 1, ret_layer_results=True
        )
    return torch.stack([x.transpose(0, 1) for x, _ in results], dim=1), frame_pad


def zero_tail(wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """wav with everything past lengths set to 0 (what our forward does first)."""
    return wav * (torch.arange(wav.shape[1])[None, :] < lengths[:, None])


VARIANTS = {
    "base-plus-tiny": WavLMConfig.tiny(),
    "pre-ln-layernorm-extractor": dataclasses.replace(
        WavLMConfig.tiny(), layer_norm_first=True, extractor_mode="layer_norm", conv_bias=True
    ),
    "no-gate": dataclasses.replace(WavLMConfig.tiny(), gru_rel_pos=False),
}


@pytest.mark.parametrize(
    ("variant", "lengths"),
    [("base-plus-tiny", [N, N]), *((v, [N, 70001, 321, 1]) for v in VARIANTS)],
    ids=["base-plus-tiny-unpadded", *(f"{v}-padded" for v in VARIANTS)],
)
def test_tiny_matches_audiobox(variant: str, lengths: list[int]) -> None:
    """Every hidden state of every valid frame equals the original code's within 1e-5."""
    ref, ours = audiobox_pair(VARIANTS[variant])
    lens = torch.tensor(lengths, dtype=torch.int64)
    torch.manual_seed(1)
    wav = zero_tail(torch.randn(len(lengths), N), lens)
    expected, frame_pad = reference_states(ref, wav, lens)
    with torch.no_grad():
        hidden, frame_mask = ours(wav, lens)
    assert hidden.shape == (len(lengths), ours.num_layers_out, 499, ours.out_dim)
    assert torch.equal(frame_mask, ~frame_pad)
    for b in range(len(lengths)):
        valid = frame_mask[b]
        torch.testing.assert_close(hidden[b][:, valid], expected[b][:, valid], atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def full_pair() -> tuple[torch.nn.Module, WavLM]:
    """Original and ours at the real Base+ size, same random weights (built once: ~3 s)."""
    return audiobox_pair(WavLMConfig.full())


def test_full_matches_audiobox_one_window(full_pair: tuple[torch.nn.Module, WavLM]) -> None:
    """The real Base+ size (random weights) matches the original on one 10 s window."""
    ref, ours = full_pair
    torch.manual_seed(2)
    wav = torch.randn(1, N) * 0.1
    lens = torch.tensor([N])
    expected, _ = reference_states(ref, wav, lens)
    with torch.no_grad():
        hidden, frame_mask = ours(wav, lens)
    assert hidden.shape == (1, 13, 499, 768)
    assert bool(frame_mask.all())
    torch.testing.assert_close(hidden, expected, atol=1e-5, rtol=0)


def test_full_parameter_count(full_pair: tuple[torch.nn.Module, WavLM]) -> None:
    """Base+ has 94,381,936 parameters (unilm/HF count incl. mask_emb), i.e. 94.4 M, like the original."""
    ref, ours = full_pair
    n = sum(p.numel() for p in ours.parameters())
    assert n == sum(p.numel() for p in ref.parameters()) == 94_381_936
    assert (ours.out_dim, ours.num_layers_out, ours.num_frames) == (768, 13, 499)
    assert round(n / 1e6, 1) == 94.4


def masked_mean(hidden: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """[B, L, T, D], [B, T] -> [B, L, D] mean over valid frames."""
    m = frame_mask[:, None, :, None].to(hidden.dtype)
    return (hidden * m).sum(2) / m.sum(2)


def test_invalid_tail_cannot_change_valid_frames() -> None:
    """Valid frames and pooled outputs are the same whether the tail past `lengths` is silence or loud noise."""
    torch.manual_seed(3)
    model = WavLM(WavLMConfig.tiny())
    lens = torch.tensor([N, 100000, 12345, 1])
    clean = zero_tail(torch.randn(4, N), lens)
    loud = clean + (torch.arange(N)[None, :] >= lens[:, None]) * 30.0 * torch.randn(4, N)
    with torch.no_grad():
        h0, m0 = model(clean, lens)
        h1, m1 = model(loud, lens)
    assert torch.equal(m0, m1)
    assert not torch.allclose(loud, clean)
    for b in range(4):
        torch.testing.assert_close(h1[b][:, m1[b]], h0[b][:, m0[b]], atol=1e-5, rtol=0)
    torch.testing.assert_close(masked_mean(h1, m1), masked_mean(h0, m0), atol=1e-5, rtol=0)


def test_window_does_not_depend_on_batch() -> None:
    """A window scores the same alone and next to another window."""
    torch.manual_seed(4)
    model = WavLM(WavLMConfig.tiny())
    wav = torch.randn(2, N)
    lens = torch.tensor([N, 54321])
    with torch.no_grad():
        both, _ = model(wav, lens)
        alone, _ = model(wav[1:], lens[1:])
    torch.testing.assert_close(both[1:], alone, atol=1e-5, rtol=0)


def test_contract_attributes_and_frame_rule() -> None:
    """Encoder contract attributes, output dtypes and Audiobox's frame-validity rule."""
    model = WavLM(WavLMConfig.tiny())
    assert (model.name, model.sample_rate, model.window_samples, model.frame_seconds) == ("wavlm", 16000, N, 0.02)
    assert (model.num_frames, model.out_dim, model.num_layers_out) == (499, 64, 3)
    lengths = torch.tensor([1, 320, 321, 159680, 159681, N])
    mask = model.frame_mask(lengths, model.num_frames)
    assert mask.dtype == torch.bool
    spf = (N - N % 499) // 499
    expected = [min(499, -(-int(n) // spf)) for n in lengths]
    assert mask.sum(1).tolist() == expected == [1, 1, 2, 499, 499, 499]
    assert WavLMConfig.tiny().num_frames(48000) == 149


def test_bake_weight_norm_keeps_outputs() -> None:
    """Baking the pos-conv weight norm changes the state-dict keys, not the outputs."""
    torch.manual_seed(5)
    model = WavLM(WavLMConfig.tiny())
    wav, lens = torch.randn(1, N), torch.tensor([N])
    with torch.no_grad():
        before, _ = model(wav, lens)
        model.bake_weight_norm()
        after, _ = model(wav, lens)
    keys = model.state_dict().keys()
    assert "encoder.pos_conv.0.weight" in keys and "encoder.pos_conv.0.weight_g" not in keys
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)


def test_config_constructors() -> None:
    """from_unilm_cfg reads Audiobox's inlined Base+ config; the conv spec parser refuses code."""
    aes = pytest.importorskip("audiobox_aesthetics.model.aes")
    assert WavLMConfig.from_unilm_cfg(vars(aes.DEFAULT_AUDIO_CFG)) == WavLMConfig.full()
    assert WavLMConfig.from_unilm_cfg(unilm_cfg_dict(WavLMConfig.tiny())) == WavLMConfig.tiny()
    hf = {"conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2]}
    assert WavLMConfig.from_hf_config(hf) == WavLMConfig.full()
    with pytest.raises(ValueError, match="unsupported syntax"):
        parse_conv_layers("__import__('os').system('true')")
    with pytest.raises(NotImplementedError, match="normalize=True"):
        WavLM(dataclasses.replace(WavLMConfig.tiny(), normalize=True))


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_onnx_export_matches_eager(tmp_path, dynamo: bool) -> None:
    """Fixed N, dynamic batch: ONNX Runtime output equals eager within 1e-4, no Log op, bool mask output."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    if dynamo:
        pytest.importorskip("onnxscript")
    torch.manual_seed(6)
    model = WavLM(WavLMConfig.tiny())
    model.bake_weight_norm()
    model.eval()
    path = tmp_path / "wavlm.onnx"
    example = (torch.randn(2, N), torch.tensor([N, 50000]))
    names = {"input_names": ["wav", "lengths"], "output_names": ["hidden", "frame_mask"]}
    if dynamo:
        batch = torch.export.Dim("batch")
        torch.onnx.export(
            model, example, path, dynamo=True, dynamic_shapes={"wav": {0: batch}, "lengths": {0: batch}}, **names
        )
    else:
        axes = {k: {0: "batch"} for k in ("wav", "lengths", "hidden", "frame_mask")}
        torch.onnx.export(model, example, path, dynamo=False, opset_version=17, dynamic_axes=axes, **names)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "Log" not in ops and "ScatterND" not in ops
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    torch.manual_seed(7)
    wav = torch.randn(3, N)
    lens = torch.tensor([N, 1, 99999])
    hidden, frame_mask = session.run(None, {"wav": wav.numpy(), "lengths": lens.numpy()})
    with torch.no_grad():
        ref_hidden, ref_mask = model(wav, lens)
    assert hidden.shape == (3, 3, 499, 64)
    np.testing.assert_array_equal(frame_mask, ref_mask.numpy())
    np.testing.assert_allclose(hidden, ref_hidden.numpy(), atol=1e-4, rtol=0)
