"""Graph export details: external data past the size limit, and an encoders-only bundle."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from mmmos.export import onnx_export
from mmmos.export.checks import check_graph

ort = pytest.importorskip("onnxruntime")


def test_big_graphs_use_external_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above the threshold the weights go to ``<graph>.data``; the graph still checks and runs."""
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_THRESHOLD", 1000)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 4)).eval()
    path = tmp_path / "head.fp32.onnx"
    files = onnx_export.export_module(model, [torch.randn(2, 64)], ["x"], ["y"], path)
    assert files == [path, tmp_path / "head.fp32.onnx.data"] and files[1].stat().st_size > 16_000
    assert check_graph(path).passed
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with torch.no_grad():
        assert np.abs(got - model(torch.from_numpy(x)).numpy()).max() < 1e-5
    small = onnx_export.save_model(onnx.load(str(path)), tmp_path / "again.onnx")
    assert len(small) == 2  # the threshold still applies when re-saving


def test_encoders_only_bundle(tmp_path: Path) -> None:
    """Without members the bundle holds encoder graphs only (for the training cache); parity compares outputs."""
    from mmmos.export.pipeline import ExportSpec, export_bundle
    from mmmos.models.presets import build_encoders

    spec = ExportSpec(encoders=build_encoders("tiny", names=("m2d",)), members=[], provenance={"source": "test"},
                      untrained=True)
    manifest = export_bundle(tmp_path / "enc", spec, trt=False, log=lambda _: None)
    assert manifest["ensemble"] is None and manifest["members"] == []
    assert manifest["encoders"][0]["outputs"] == ["m2d_pooled"] and manifest["encoders"][0]["frames"] is False
    report = json.loads((tmp_path / "enc" / "report.json").read_text())
    assert report["parity"]["fp32"]["compared"] == "encoder_outputs"
    assert report["parity"]["fp32"]["max_abs"] <= 1e-3
    assert set(manifest["files"]) == {"m2d.fp32.onnx", "m2d.fp16.onnx", "report.json"}


def test_wavlm_checkpoint_source_exports_encoders_only(tmp_path: Path) -> None:
    """``--wavlm`` with a unilm-format checkpoint (``cfg`` + ``model``) and no members: an encoder-only bundle."""
    from mmmos.export.cli import main
    from mmmos.models.wavlm import WavLM, WavLMConfig

    cfg = WavLMConfig.tiny()
    torch.manual_seed(3)
    model = WavLM(cfg)
    unilm_cfg = {
        "conv_feature_layers": str([list(c) for c in cfg.conv_layers]), "encoder_embed_dim": cfg.embed_dim,
        "encoder_ffn_embed_dim": cfg.ffn_dim, "encoder_layers": cfg.num_layers,
        "encoder_attention_heads": cfg.num_heads, "conv_pos": cfg.conv_pos, "conv_pos_groups": cfg.conv_pos_groups,
        "relative_position_embedding": True, "num_buckets": cfg.num_buckets, "max_distance": cfg.max_distance,
        "gru_rel_pos": True, "layer_norm_first": False, "extractor_mode": "default",
    }
    ckpt = tmp_path / "WavLM-tiny.pt"
    torch.save({"cfg": unilm_cfg, "model": model.state_dict()}, ckpt)
    out = tmp_path / "b"
    with pytest.raises(SystemExit) as info:
        main([str(out), "--wavlm", str(ckpt), "--no-trt", "--no-fp16"])
    assert info.value.code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [e["name"] for e in manifest["encoders"]] == ["wavlm"] and manifest["ensemble"] is None
    assert manifest["untrained"] is False and manifest["provenance"]["source"] == "checkpoints"
    assert manifest["provenance"]["checkpoints"][0]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
