"""TensorRT engine building: profile rules and keys everywhere; the build itself only with TensorRT and a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmmos.export.tensorrt_build import BatchProfile, build_engines, engine_key, unavailable_reason


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
    assert len(lines) == 1 and lines[0].startswith("TensorRT engines skipped:")
    assert not (tmp_path / "engines").exists()


@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.skipif(unavailable_reason() is not None, reason=f"needs TensorRT and a GPU: {unavailable_reason()}")
def test_builds_engines_for_a_tiny_bundle(tmp_path: Path) -> None:
    from mmmos.export.pipeline import export_bundle
    from mmmos.export.sources import from_random_init

    manifest = export_bundle(tmp_path / "b", from_random_init("tiny", num_members=3), trt=True,
                             profile=BatchProfile(1, 2, 4), log=lambda _: None)
    plans = [f for f in manifest["files"] if f.endswith(".plan")]
    assert len(plans) == 4 and all(f.startswith("engines/") and "-b1-2-4/" in f for f in plans)
    assert any(f.endswith("timing.cache") for f in manifest["files"])
