"""TensorRT engines at export time: profile rules and keys everywhere; the plans mmmos-export writes are the ones the
runtime loads (fake tensorrt/cuda-bindings, tests/fake_trt.py); the real build only with TensorRT and a GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmmos.export.tensorrt_build import BatchProfile, build_engines, fp16_graphs, unavailable_reason
from mmmos.runtime import Bundle
from mmmos.runtime.backend_trt import TrtPipeline
from mmmos.runtime.trt_engine import engine_key

from .. import fake_trt
from ..bundle_factory import make_bundle


def test_profile_and_key() -> None:
    profile = BatchProfile()
    assert (profile.min, profile.opt, profile.max) == (1, 8, 32)
    assert engine_key("10.13.3.9", (9, 0), profile) == "10.13.3.9-sm90-b1-8-32"
    with pytest.raises(ValueError, match="min <= opt <= max"):
        BatchProfile(4, 2, 8)


@pytest.mark.skipif(unavailable_reason() is None, reason="TensorRT and a GPU are present")
def test_skipped_with_one_line_without_tensorrt(tmp_path: Path) -> None:
    lines: list[str] = []
    result = build_engines(tmp_path, ["wavlm.fp16.onnx"], BatchProfile(), lines.append)
    assert result["status"] == "skipped" and result["reason"]
    assert len(lines) == 1 and lines[0].startswith("TensorRT engines skipped:") and "mmmos[trt-cu12]" in lines[0]
    assert not (tmp_path / "engines").exists()


def test_exported_plans_are_named_by_graph_hash_and_loaded_by_the_runtime(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = fake_trt.install(monkeypatch)
    monkeypatch.setenv("MMMOS_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "b"
    make_bundle(root)
    manifest = json.loads((root / "manifest.json").read_text())
    files = manifest["files"]
    manifest["ensemble"]["graphs"]["fp16"] = "ensemble.fp32.onnx"  # as mmmos-export writes it
    graphs = [*fp16_graphs(manifest["encoders"], manifest["ensemble"]), "ensemble.fp32.onnx"]
    assert graphs == ["wavlm.fp16.onnx", "muq.fp16.onnx", "ensemble.fp32.onnx", "ensemble.fp32.onnx"]
    report = build_engines(root, graphs, BatchProfile(1, 2, 4), log=lambda _m: None)
    assert report["status"] == "built" and report["key"] == "10.99.0-sm90-b1-2-4"
    folder = root / "engines" / report["key"]
    assert sorted(p.name for p in folder.glob("*.plan")) == sorted(
        f"{g.removesuffix('.onnx')}.{files[g][:16]}.plan" for g in set(graphs))
    assert (folder / "timing.cache").is_file() and len(gpu.rec.parsed) == 3  # the shared ensemble once
    again = build_engines(root, graphs, BatchProfile(1, 2, 4), log=lambda _m: None)
    assert all(e.get("kept") for e in again["engines"]) and len(gpu.rec.parsed) == 3
    TrtPipeline(Bundle.load(root), "fp16", batch_size=4).close()
    assert len(gpu.rec.parsed) == 3  # the runtime found every plan: nothing rebuilt


@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.skipif(unavailable_reason() is not None, reason=f"needs TensorRT and a GPU: {unavailable_reason()}")
def test_builds_engines_for_a_tiny_bundle(tmp_path: Path) -> None:
    from mmmos.export.pipeline import export_bundle
    from mmmos.export.sources import from_random_init

    manifest = export_bundle(tmp_path / "b", from_random_init("tiny", num_members=3), trt=True,
                             profile=BatchProfile(1, 2, 4), log=lambda _: None)
    plans = sorted((tmp_path / "b" / "engines").rglob("*.plan"))
    assert len(plans) == 4 and all(p.parent.name.endswith("-b1-2-4") for p in plans)
    fp16 = [g for e in manifest["encoders"] for g in [e["graphs"]["fp16"]]] + [manifest["ensemble"]["graphs"]["fp16"]]
    assert sorted(p.name for p in plans) == sorted(f"{g.removesuffix('.onnx')}.{manifest['files'][g][:16]}.plan"
                                                   for g in fp16)
    assert (plans[0].parent / "timing.cache").is_file()
