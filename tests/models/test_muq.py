"""MuQ encoder: front-end formula, masking, sizes, full-preset parameter count, ONNX export of the tiny preset."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from mmmos.models.muq import MuQ, MuQConfig, muq_frontend
from mmmos.models.muq_conformer import rotary_tables


@pytest.fixture(scope="module")
def tiny() -> MuQ:
    torch.manual_seed(0)
    model = MuQ(MuQConfig.tiny()).eval()
    # Non-trivial BatchNorm statistics, so eval-mode BN is not an identity.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


def reference_logmel(wav: np.ndarray, cfg: MuQConfig) -> np.ndarray:
    """torchaudio MelSpectrogram + AmplitudeToDB + drop last + normalise, written independently in numpy."""
    n_fft, hop = cfg.n_fft, cfg.hop_length
    padded = np.pad(wav.astype(np.float64), n_fft // 2, mode="reflect")
    frames = 1 + (len(padded) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    power = np.abs(np.fft.rfft(padded[idx] * window, axis=-1)) ** 2  # [frames, n_freq]
    fb = librosa.filters.mel(
        sr=cfg.mel_sample_rate, n_fft=n_fft, n_mels=cfg.n_mels, fmin=cfg.f_min, fmax=cfg.f_max, htk=True, norm=None
    )
    mel = fb.astype(np.float64) @ power.T
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))[:, :-1]
    return (db - cfg.mel_mean) / cfg.mel_std


@pytest.mark.parametrize("preset", ["tiny", "full"])
def test_frontend_matches_formula(preset: str) -> None:
    cfg = MuQConfig.tiny() if preset == "tiny" else MuQConfig.full()
    frontend = muq_frontend(cfg)  # what MuQ.__init__ builds, without the (large) body
    rng = np.random.default_rng(0)
    n = 24000
    t = np.arange(n) / 24000
    wav = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)
    wav[n // 2 :] *= 0.01  # a quiet half, so low-dB bins are covered too
    ours = frontend(torch.from_numpy(wav)[None]).numpy()[0]
    ref = reference_logmel(wav, cfg)
    assert ours.shape == ref.shape == (cfg.n_mels, n // cfg.hop_length)
    # Relative to the dB value before normalisation (the normalised value crosses zero).
    err = np.abs(ours - ref) * cfg.mel_std / np.maximum(np.abs(ref * cfg.mel_std + cfg.mel_mean), 1.0)
    assert err.max() < 1e-4, err.max()


def test_frontend_is_the_one_muq_uses(tiny: MuQ) -> None:
    cfg = tiny.config
    fe = tiny.frontend.config
    assert (fe.sample_rate, fe.n_fft, fe.hop_length, fe.n_mels) == (24000, cfg.n_fft, 240, cfg.n_mels)
    assert (fe.htk, fe.mel_norm, fe.log, fe.floor, fe.drop_last_frame) == (True, None, "db", 1e-10, True)
    assert (fe.mean, fe.std) == (cfg.mel_mean, cfg.mel_std)


def test_shapes_and_attributes(tiny: MuQ) -> None:
    assert tiny.name == "muq" and tiny.sample_rate == 24000 and tiny.window_samples == 240000
    assert tiny.frame_seconds == pytest.approx(0.04) and tiny.out_dim == 64
    wav = torch.randn(2, 240000) * 0.1
    with torch.no_grad():
        hidden, mask = tiny(wav, torch.tensor([240000, 960 * 10 + 1]))
    assert hidden.shape == (2, 250, 64) and mask.shape == (2, 250) and mask.dtype == torch.bool
    # token t valid iff t * 960 < length
    assert mask[0].all() and mask[1].sum().item() == 11
    assert torch.isfinite(hidden).all()


def test_token_counts_and_mmmos_feed() -> None:
    cfg = MuQConfig.full()
    assert cfg.num_tokens(240000) == 250 and cfg.num_tokens(160000) == 167 and cfg.num_tokens(24000) == 25
    mmmos_feed = MuQ(MuQConfig.tiny(sample_rate=16000))
    assert mmmos_feed.window_samples == 160000 and mmmos_feed.num_tokens == 167
    assert mmmos_feed.frame_seconds == pytest.approx(0.06)
    with torch.no_grad():
        hidden, mask = mmmos_feed.eval()(torch.randn(1, 160000), torch.tensor([1]))
    assert hidden.shape == (1, 167, 64) and mask.sum().item() == 1  # at least one valid frame


def test_tail_content_cannot_change_valid_frames(tiny: MuQ) -> None:
    torch.manual_seed(1)
    length = 100_000
    base = torch.randn(1, 240000) * 0.1
    quiet, loud = base.clone(), base.clone()
    quiet[:, length:] = 0.0
    loud[:, length:] = torch.randn(1, 240000 - length) * 10.0
    lengths = torch.tensor([length])
    with torch.no_grad():
        h_quiet, mask = tiny(quiet, lengths)
        h_loud, _ = tiny(loud, lengths)
    m = mask[..., None].float()
    pooled_quiet = (h_quiet * m).sum(1) / m.sum(1)
    pooled_loud = (h_loud * m).sum(1) / m.sum(1)
    assert torch.allclose(pooled_quiet, pooled_loud, atol=1e-5)
    # The mask does something: attending to the padded keys changes the valid frames.
    with torch.no_grad():
        unmasked = tiny.conformer(tiny.conv(tiny.frontend(quiet)), None)
    assert not torch.allclose(unmasked[mask], h_quiet[mask], atol=1e-3)


def test_batch_independence(tiny: MuQ) -> None:
    torch.manual_seed(2)
    wav = torch.randn(3, 240000) * 0.1
    lengths = torch.tensor([240000, 50000, 123457])
    with torch.no_grad():
        together, _ = tiny(wav, lengths)
        alone, _ = tiny(wav[1:2], lengths[1:2])
    assert torch.allclose(together[1], alone[0], atol=1e-5)


def test_rotary_tables_match_hf_formula() -> None:
    cos, sin = rotary_tables(250, 64, 10000.0)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, 64, 2).float() / 64))
    freqs = torch.arange(250).float()[:, None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    assert cos.dtype == torch.float32 and cos.shape == (250, 64)
    assert torch.allclose(cos, emb.cos(), atol=1e-5) and torch.allclose(sin, emb.sin(), atol=1e-5)


def test_full_preset_parameter_count() -> None:
    # The package builds 328,932,480 parameters; minus the logits head Linear(1024, 4096) (4,198,400), the
    # cls_token (1,024) and the unused pos_conv_embed (8,389,760) leaves the feature path: 316,343,296.
    with torch.device("meta"):
        model = MuQ(MuQConfig.full())
    stem = sum(p.numel() for p in model.conv.parameters())
    conformer = sum(p.numel() for p in model.conformer.parameters())
    total = sum(p.numel() for p in model.parameters())
    assert stem == 26_233_856
    assert conformer == 298_499_200 - 8_389_760
    assert total == stem + conformer == 328_932_480 - 4_198_400 - 1_024 - 8_389_760 == 316_343_296
    assert model.num_tokens == 250 and model.out_dim == 1024


def test_onnx_export_matches_eager(tiny: MuQ, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = tmp_path / "muq_tiny.onnx"
    wav = torch.randn(2, 240000) * 0.1
    lengths = torch.tensor([240000, 70000])
    torch.onnx.export(
        tiny, (wav, lengths), str(path), input_names=["wav", "lengths"], output_names=["hidden", "frame_mask"],
        dynamic_axes={"wav": {0: "batch"}, "lengths": {0: "batch"}, "hidden": {0: "batch"}, "frame_mask": {0: "batch"}},
        opset_version=17, dynamo=False,
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wav3 = torch.randn(3, 240000) * 0.1  # another batch size than the one traced
    lengths3 = torch.tensor([240000, 1, 150001])
    hidden, mask = sess.run(None, {"wav": wav3.numpy(), "lengths": lengths3.numpy()})
    with torch.no_grad():
        ref_hidden, ref_mask = tiny(wav3, lengths3)
    assert np.array_equal(mask, ref_mask.numpy())
    err = np.abs(hidden - ref_hidden.numpy()).max() / np.abs(ref_hidden.numpy()).max()
    assert err < 1e-4, err
