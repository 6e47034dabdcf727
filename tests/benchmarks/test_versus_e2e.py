"""`mmmos-bench versus` end to end on a tiny Audiobox checkpoint: both worker processes, 2 rounds on 1 s and 2 s
clips (no timed assertions; about 15 s on a 2-core CPU, most of it the export and the peer's torch import).

The checkpoint is made in the package's own format with a tiny WavLM (as tests/export/test_audiobox.py does), the
bundle exported from it with `mmmos-export OUT --audiobox CKPT --no-trt --no-fp16`; the peer worker finds the
checkpoint through the bundle's provenance and fits the package's WavLM config to its shapes.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("audiobox_aesthetics", reason="audiobox-aesthetics is not installed (CI installs it --no-deps)")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from mmmos.benchmarks.cli import app  # noqa: E402

TINY_WAVLM = {
    "encoder_layers": 2, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64, "encoder_attention_heads": 2,
    "conv_feature_layers": "[(16,10,5)] + [(16,3,2)] * 4 + [(16,2,2)] * 2", "conv_pos": 8, "conv_pos_groups": 4,
}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMMOS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def audiobox_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny random Audiobox checkpoint.pt (package format) and the bundle exported from it."""
    from audiobox_aesthetics.model import aes
    from audiobox_aesthetics.model.wavlm import WavLMConfig

    from mmmos.export.cli import main as export_main

    monkeypatch.setattr(aes, "DEFAULT_AUDIO_CFG", WavLMConfig(dict(vars(aes.DEFAULT_AUDIO_CFG)) | TINY_WAVLM))
    cfg = {"proj_num_layer": 1, "proj_ln": False, "proj_act_fn": "gelu", "proj_dropout": 0.0, "nth_layer": 3,
           "use_weighted_layer_sum": True, "precision": "32", "normalize_embed": True, "output_dim": 1}
    target = {a: {"mean": 5.0 + i, "std": 1.0 + 0.1 * i} for i, a in enumerate(("CE", "CU", "PC", "PQ"))}
    torch.manual_seed(0)
    model = aes.AesMultiOutput(**cfg, target_transform=target)
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "model_cfg": cfg,
                "target_transform": target}, ckpt)
    bundle = tmp_path / "bundle"
    with pytest.raises(SystemExit) as done:
        export_main([str(bundle), "--audiobox", str(ckpt), "--no-trt", "--no-fp16"])
    assert done.value.code == 0
    return bundle


def test_versus_runs_both_workers_interleaved_on_the_same_model(audiobox_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "vs"
    readme = tmp_path / "README.md"
    readme.write_text("# bench\n")
    res = CliRunner().invoke(app, ["versus", "--bundle", str(audiobox_bundle), "--lengths", "1,2", "--rounds", "2",
                                   "--warmup", "1", "--precision", "fp32", "--out", str(out), "--readme", str(readme)])
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "versus.json").read_text())
    assert rep["kind"] == "audiobox"
    assert sorted(rep["lengths"]) == ["1", "2"]
    for st in rep["lengths"].values():
        assert st["rounds"] == 2 and st["first"] == ["mmmos", "peer"]
        assert len(st["mmmos"]["times_s"]) == len(st["peer"]["times_s"]) == 2
        assert st["speedup"]["median"] > 0
        assert st["scores_max_abs_diff"] < 1e-3  # the same model on both sides
    assert rep["peer"]["weights"].startswith("checkpoint ")
    assert rep["peer"]["checkpoint_from"] == "the bundle's provenance"
    assert "not WavLM Base+" in rep["peer"]["wavlm_config"]
    assert rep["peer"]["device"] == "cpu" and rep["peer"]["threads"] == 2 and rep["mmmos"]["threads"] == 2
    if importlib.util.find_spec("torchaudio") is None:
        assert rep["peer"]["torchaudio"].startswith("stand-in")
    assert rep["mmmos"]["precision"] == "fp32" and rep["mmmos"]["backend"] == "ort-cpu"
    assert rep["goals"]["audiobox_2s"]["value"] is not None and rep["goals"]["audiobox_10s"]["value"] is None
    assert rep["load_average_before"] is not None and rep["peer"]["peak_rss_mb"] > 0
    assert rep["command"].startswith("mmmos-bench versus --bundle ")
    md = (out / "versus.md").read_text()
    assert "| 2 |" in md and rep["command"] in md
    assert (out / "clips" / "versus_2s.wav").is_file()
    assert "<!-- mmmos-bench versus audiobox: start -->" in readme.read_text()

