"""Done-when test: an Audiobox Aesthetics ``checkpoint.pt`` exported with ``--audiobox`` scores, through ONNX
Runtime, what the ``audiobox_aesthetics`` package's own ``AesPredictor`` scores, within 1e-3.

The checkpoint is built here with random weights in the package's own format (``AesMultiOutput`` with a tiny
WavLM config injected through ``audiobox_aesthetics.model.aes.DEFAULT_AUDIO_CFG``; keys ``state_dict`` with a
``model.`` prefix, ``model_cfg``, ``target_transform``).

``audiobox_aesthetics.infer`` imports torchaudio, which cannot be installed next to torch 2.13 here, so the
test puts a tiny stand-in ``torchaudio`` module into ``sys.modules``: ``load`` and ``info`` read files with
soundfile, and ``functional.resample`` returns its input when the rates match (the clips are written at
16 kHz, so the package never resamples) and raises otherwise.
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("audiobox_aesthetics", reason="audiobox-aesthetics is not installed (CI installs it --no-deps)")
ort = pytest.importorskip("onnxruntime")

SR = 16000
TINY_AUDIO_CFG = {
    "extractor_mode": "default", "encoder_layers": 2, "encoder_embed_dim": 64, "encoder_ffn_embed_dim": 128,
    "encoder_attention_heads": 4, "activation_fn": "gelu", "dropout": 0.1, "attention_dropout": 0.1,
    "activation_dropout": 0.0, "encoder_layerdrop": 0.05, "dropout_input": 0.1, "dropout_features": 0.1,
    "layer_norm_first": False, "conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2",
    "conv_bias": False, "feature_grad_mult": 0.1, "mask_length": 10, "mask_prob": 0.8,
    "mask_selection": "static", "mask_other": 0.0, "no_mask_overlap": False, "mask_min_space": 1,
    "mask_channel_length": 10, "mask_channel_prob": 0.0, "mask_channel_selection": "static",
    "mask_channel_other": 0.0, "no_mask_channel_overlap": False, "mask_channel_min_space": 1,
    "conv_pos": 16, "conv_pos_groups": 4, "relative_position_embedding": True, "num_buckets": 320,
    "max_distance": 800, "gru_rel_pos": True, "normalize": False,
}
AB_AXES = ["CE", "CU", "PC", "PQ"]


def _torchaudio_standin() -> types.ModuleType:
    """A minimal ``torchaudio`` (load/info via soundfile; resample only as the identity)."""
    mod = types.ModuleType("torchaudio")

    def load(path: str, frame_offset: int = 0, num_frames: int = -1) -> tuple[torch.Tensor, int]:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True, start=int(frame_offset),
                           frames=int(num_frames))
        return torch.from_numpy(data.T.copy()), sr

    def info(path: str) -> types.SimpleNamespace:
        return types.SimpleNamespace(sample_rate=sf.info(str(path)).samplerate)

    def resample(wav: torch.Tensor, orig_freq: int, new_freq: int) -> torch.Tensor:
        if orig_freq != new_freq:
            raise NotImplementedError("the torchaudio stand-in only passes 16 kHz audio through")
        return wav

    mod.load, mod.info = load, info
    mod.functional = types.SimpleNamespace(resample=resample)
    return mod


@pytest.fixture
def audiobox_ckpt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A random-weight Audiobox checkpoint.pt with a tiny WavLM, two-layer heads with LayerNorm."""
    monkeypatch.setitem(sys.modules, "torchaudio", _torchaudio_standin())
    from audiobox_aesthetics.model import aes
    from audiobox_aesthetics.model.wavlm import WavLMConfig as ABWavLMConfig

    monkeypatch.setattr(aes, "DEFAULT_AUDIO_CFG", ABWavLMConfig(TINY_AUDIO_CFG))
    cfg = {"proj_num_layer": 2, "proj_ln": True, "proj_act_fn": "gelu", "proj_dropout": 0.0, "nth_layer": 3,
           "use_weighted_layer_sum": True, "precision": "32", "normalize_embed": True, "output_dim": 1}
    target = {"CE": {"mean": 5.5, "std": 1.3}, "CU": {"mean": 6.1, "std": 1.7},
              "PC": {"mean": 3.2, "std": 1.1}, "PQ": {"mean": 7.0, "std": 0.9}}
    torch.manual_seed(0)
    model = aes.AesMultiOutput(**cfg, target_transform=target)
    with torch.no_grad():
        for p in model.layer_weights.values():
            p.normal_(0.0, 1.0)  # distinct per-axis mixes, so a swapped axis would show
        for name, p in model.proj_layer.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.3)
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "model_cfg": cfg, "target_transform": target}, path)
    return path


def _windows(wav: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contract windowing: 10 s windows, hop 10 s, zero-padded, lengths and valid-seconds/10 weights."""
    k = max(1, int(np.ceil(len(wav) / n)))
    wins = np.zeros((k, n), np.float32)
    lengths = np.zeros(k, np.int64)
    for i in range(k):
        seg = wav[i * n:(i + 1) * n]
        wins[i, :len(seg)] = seg
        lengths[i] = max(1, min(n, len(wav) - i * n))
    return wins, lengths, lengths / n


def _ort_scores(bundle: Path, wav: np.ndarray) -> dict[str, float]:
    """The bundle's graphs on ONNX Runtime, each window fed what the encoder's length rule says (the runtime's
    contract: about its valid samples, not the zero-padded 10 s), folded by valid seconds."""
    import json

    from mmmos.runtime.windows import LengthRule

    manifest = json.loads((bundle / "manifest.json").read_text())
    enc = manifest["encoders"][0]
    rule = LengthRule.from_dict(enc["lengths"])
    opts = ort.SessionOptions()
    sess_e = ort.InferenceSession(str(bundle / enc["graphs"]["fp32"]), opts, providers=["CPUExecutionProvider"])
    sess_m = ort.InferenceSession(str(bundle / manifest["ensemble"]["graphs"]["fp32"]), opts,
                                  providers=["CPUExecutionProvider"])
    wins, lengths, weights = _windows(wav, enc["window_samples"])
    pooled = []
    for win, length in zip(wins, lengths, strict=True):
        fed = np.zeros((1, rule.fed_samples(int(length))), np.float32)
        fed[0, : min(fed.shape[1], win.size)] = win[: fed.shape[1]]
        pooled.append(sess_e.run(None, {"wav": fed, "lengths": np.array([length], np.int64)})[0])
    feeds = dict(zip(enc["outputs"], [np.concatenate(pooled)], strict=True))
    _, mean, _ = sess_m.run(None, {i: feeds[i] for i in manifest["ensemble"]["inputs"]})
    file_score = (mean * weights[:, None]).sum(0) / weights.sum()
    return dict(zip(manifest["axes"], file_score.tolist(), strict=True))


def test_audiobox_bundle_matches_aespredictor(audiobox_ckpt: Path, tmp_path: Path) -> None:
    from audiobox_aesthetics.infer import AesPredictor

    from mmmos.export.cli import main

    bundle = tmp_path / "bundle"
    with pytest.raises(SystemExit) as exit_info:
        main([str(bundle), "--audiobox", str(audiobox_ckpt), "--no-trt", "--no-fp16"])
    assert exit_info.value.code == 0
    rng = np.random.default_rng(1)
    files = []
    for seconds in (1, 10, 25):
        t = np.arange(seconds * SR) / SR
        wav = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.5 * t))
               + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
        path = tmp_path / f"clip_{seconds}s.wav"
        sf.write(path, wav, SR, subtype="FLOAT")
        files.append((path, wav))

    predictor = AesPredictor(checkpoint_pth=str(audiobox_ckpt), precision="32")
    rows = predictor.forward([{"path": str(p)} for p, _ in files])
    from mmmos.runtime import Scorer

    with Scorer(bundle, backend="ort-cpu", precision="fp32", warn=lambda _m: None) as scorer:
        scored = scorer.score([p for p, _ in files])
    for (path, wav), row, result in zip(files, rows, scored, strict=True):
        ours = _ort_scores(bundle, wav)
        for axis in AB_AXES:  # the package pads every window to 10 s; mmmos computes about the valid audio
            assert abs(ours[axis] - row[axis]) <= 1e-3, (path.name, axis, ours[axis], row[axis])
            assert abs(result.scores[axis] - row[axis]) <= 1e-3, (path.name, axis, result.scores[axis], row[axis])
    # Non-trivial scores: the axes differ (a name/position mix-up between CE,CU,PC,PQ and AXES would show).
    assert len({round(v, 3) for v in rows[1].values()}) == 4


def test_hf_folder_gives_the_same_member(audiobox_ckpt: Path, tmp_path: Path) -> None:
    """The Hugging Face layout (config.json + model.safetensors, no ``model.`` prefix) loads identically."""
    import json

    from safetensors.torch import save_file

    from mmmos.export.audiobox import load_audiobox

    ckpt = torch.load(audiobox_ckpt, weights_only=True)
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file({k.removeprefix("model."): v.contiguous() for k, v in ckpt["state_dict"].items()},
              str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(ckpt["model_cfg"] | {"target_transform": ckpt["target_transform"]}))
    a, b = load_audiobox(audiobox_ckpt), load_audiobox(folder)
    for (ka, va), (kb, vb) in zip(a.member.state_dict().items(), b.member.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    assert a.member.config.target_mean == (7.0, 3.2, 5.5, 6.1)  # PQ, PC, CE, CU: mapped by name
    assert a.member.config.layer_mix == "per-axis" and a.member.config.head_layers == 2


def test_offline_without_path_says_where_to_put_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    from mmmos.export.audiobox import load_audiobox
    from mmmos.export.cli import AUDIOBOX_FROM_HUB, _fill_optional_audiobox

    assert _fill_optional_audiobox(["out", "--audiobox", "--no-trt"]) == ["out", "--audiobox", AUDIOBOX_FROM_HUB,
                                                                          "--no-trt"]
    assert _fill_optional_audiobox(["out", "--audiobox"])[-1] == AUDIOBOX_FROM_HUB

    def offline(*args: object, **kwargs: object) -> str:
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(FileNotFoundError, match="--audiobox PATH"):
        load_audiobox(None)


def _hub_cache(audiobox_ckpt: Path, root: Path) -> Path:
    """A local Hugging Face cache holding facebook/audiobox-aesthetics in the Hub's own layout (HF folder format)."""
    import json

    from safetensors.torch import save_file

    ckpt = torch.load(audiobox_ckpt, weights_only=True)
    repo = root / "models--facebook--audiobox-aesthetics"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    save_file({k.removeprefix("model."): v.contiguous() for k, v in ckpt["state_dict"].items()},
              str(snap / "model.safetensors"))
    (snap / "config.json").write_text(json.dumps(ckpt["model_cfg"] | {"target_transform": ckpt["target_transform"]}))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return root


def _score_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmmos.runtime.cli", *args], capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.mark.slow
def test_model_audiobox_fetches_exports_once_then_scores_without_export(audiobox_ckpt: Path, tmp_path: Path) -> None:
    import json
    import os

    hub = _hub_cache(audiobox_ckpt, tmp_path / "hf")
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1", "MMMOS_CACHE_DIR": str(tmp_path / "mm")}
    clip = tmp_path / "clip.wav"
    sf.write(clip, (0.1 * np.random.default_rng(2).standard_normal(SR * 3)).astype(np.float32), SR)
    first = _score_cli([str(clip), "--model", "audiobox", "--backend", "ort-cpu", "-f", "jsonl"], env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "exporting facebook/audiobox-aesthetics" in first.stderr
    (row,) = [json.loads(line) for line in first.stdout.splitlines()]
    assert row["model"]["name"] == "audiobox-aesthetics" and row["error"] is None
    (bundle,) = (tmp_path / "mm" / "bundles").iterdir()
    assert bundle.name.startswith("audiobox-") and len(bundle.name) == len("audiobox-") + 12
    second = _score_cli([str(clip), "--model", "audiobox", "--backend", "ort-cpu", "-f", "jsonl"], env)
    assert second.returncode == 0 and "exporting" not in second.stderr  # the cached bundle, no torch needed
    assert json.loads(second.stdout) == row
    empty = {**env, "HF_HUB_CACHE": str(tmp_path / "empty_hf")}
    offline = _score_cli([str(clip), "--model", "audiobox"], empty)
    assert offline.returncode == 2 and "model.safetensors" in offline.stderr
    assert "facebook/audiobox-aesthetics" in offline.stderr and str(tmp_path / "empty_hf") in offline.stderr


def test_model_without_the_export_extra_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmmos.runtime import model_registry as mr
    from mmmos.runtime.errors import BackendUnavailableError, BundleNotFoundError

    monkeypatch.setenv("MMMOS_CACHE_DIR", str(tmp_path / "mm"))
    folder = tmp_path / "snap"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    monkeypatch.setattr(mr, "_fetch", lambda model: folder)
    monkeypatch.setattr(mr, "_export_available", lambda: "torch")
    with pytest.raises(BackendUnavailableError, match=r"pip install 'mmmos\[export\]'.*download.pytorch.org/whl/cpu"):
        mr.resolve_model("audiobox", log=lambda _m: None)
    with pytest.raises(BundleNotFoundError, match="neither a bundle folder nor a known model"):
        mr.resolve_model("no-such-model", log=lambda _m: None)
    assert mr.resolve_model(str(folder), log=lambda _m: None) == folder  # a folder is taken as is
