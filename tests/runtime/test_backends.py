"""Backend selection and fallback, ORT runner lifecycle, TensorRT engine keys; real TensorRT runs skip here."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmmos.runtime import Bundle, Scorer
from mmmos.runtime.backend_ort import OrtRunner
from mmmos.runtime.backends import start_pipeline
from mmmos.runtime.settings import ScorerSettings
from mmmos.runtime.trt_engine import (
    BatchProfile,
    engine_key,
    foreign_engine_dirs,
    matching_engine_dirs,
    parse_engine_key,
    unavailable_reason,
)

from ..audio_helpers import tone
from ..bundle_factory import Params

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
TRT_REASON = unavailable_reason()  # the runtime's one GPU probe: None when TensorRT and a GPU are usable


def _gpu() -> bool:
    return TRT_REASON is None


def _start(root: Path, backend: str, warn: object = None) -> object:
    return start_pipeline(Bundle.load(root), ScorerSettings(backend=backend), warn=warn).pipeline  # type: ignore[arg-type]


@pytest.mark.skipif(HAS_TRT, reason="checks the fallback when tensorrt is absent")
def test_tensorrt_falls_back_with_one_line(bundle: tuple[Path, Params]) -> None:
    said: list[str] = []
    pipe = _start(bundle[0], "tensorrt", said.append)
    assert pipe.name in ("ort-cpu", "ort-cuda") and len(said) == 1
    assert "tensorrt" in said[0] and "mmmos[trt-cu12]" in said[0] and "\n" not in said[0]
    pipe.close()


def test_ort_cuda_without_provider_falls_back(bundle: tuple[Path, Params]) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed: no fallback to check")
    said: list[str] = []
    pipe = _start(bundle[0], "ort-cuda", said.append)
    assert pipe.name == "ort-cpu" and len(said) == 1 and "CUDA provider" in said[0]
    pipe.close()


def test_auto_is_silent_unless_the_bundle_ships_engines(bundle: tuple[Path, Params], tmp_path: Path) -> None:
    said: list[str] = []
    _start(bundle[0], "auto", said.append).close()
    if HAS_TRT and _gpu():
        return
    assert said == []
    root = tmp_path / "b"
    shutil.copytree(bundle[0], root)
    (root / "engines" / "10.13.0.35-sm90-b1-8-32").mkdir(parents=True)
    _start(root, "auto", said.append).close()
    assert len(said) == 1 and "tensorrt" in said[0]


def test_unknown_backend(bundle: tuple[Path, Params]) -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        _start(bundle[0], "cuda")


def test_ort_runner_lifecycle(bundle: tuple[Path, Params]) -> None:
    r = OrtRunner(bundle[0] / "muq.fp32.onnx", threads=1)
    with pytest.raises(RuntimeError, match="activate"):
        r.infer({})
    with r:
        out = r.infer({"wav": np.zeros((2, 240000), np.float32), "lengths": np.array([5, 240000])})
        assert out["muq_pooled"].shape == (2, 6) and r.last_inference_time is not None
    assert not r.is_active and r.session is None


def test_engine_keys_and_a_fitting_profile(tmp_path: Path) -> None:
    key = engine_key("10.13.3.9", (9, 0), BatchProfile(1, 8, 32))
    assert key == "10.13.3.9-sm90-b1-8-32"
    assert parse_engine_key(key) == ("10.13.3.9-sm90", BatchProfile(1, 8, 32))
    assert parse_engine_key("11.4.0.106-sm120-b1-4-8") == ("11.4.0.106-sm120", BatchProfile(1, 4, 8))
    assert parse_engine_key("timing.cache") is None and parse_engine_key("10.1-sm90-b8-4-2") is None
    for name in ("10.13.3.9-sm90-b1-8-32", "10.13.3.9-sm90-b1-4-8", "10.13.3.9-sm90-b2-8-64",
                 "10.13.3.9-sm86-b1-8-32", "11.4.0.106-sm90-b1-8-32"):
        (tmp_path / name).mkdir()
    got = matching_engine_dirs([tmp_path, tmp_path / "absent"], "10.13.3.9-sm90", 8)
    assert [d.name for d in got] == ["10.13.3.9-sm90-b1-4-8", "10.13.3.9-sm90-b1-8-32"]
    assert [d.name for d in matching_engine_dirs([tmp_path], "10.13.3.9-sm90", 16)] == ["10.13.3.9-sm90-b1-8-32"]
    assert foreign_engine_dirs([tmp_path], "10.13.3.9-sm90") == ["10.13.3.9-sm86-b1-8-32", "11.4.0.106-sm90-b1-8-32"]


@pytest.mark.trt
@pytest.mark.gpu
@pytest.mark.skipif(TRT_REASON is not None, reason=f"needs TensorRT and a GPU: {TRT_REASON}")
def test_tensorrt_builds_engines_and_matches_ort(bundle: tuple[Path, Params], tmp_path: Path) -> None:
    root = tmp_path / "b"
    shutil.copytree(bundle[0], root)
    clips = [(tone(d, 16000, seed=i), 16000) for i, d in enumerate([3.0, 21.0])]
    with Scorer(root, backend="ort-cpu", batch_size=4, warn=lambda _m: None) as cpu:
        want = cpu.score(clips)
    said: list[str] = []
    with Scorer(root, backend="tensorrt", batch_size=4, warn=said.append) as trt:
        assert trt.backend == "tensorrt", said
        got = trt.score(clips)
        (enc,) = trt.encode([clips[1]])
    assert any((tmp_path / "cache" / "engines").rglob("*.plan"))  # built into the user cache folder
    for g, w in zip(got, want, strict=True):
        assert g.scores and w.scores
        np.testing.assert_allclose(list(g.scores.values()), list(w.scores.values()), atol=1e-3)
    assert enc.outputs["wavlm_pooled"].shape[0] == 3
    with Scorer(root, backend="tensorrt", batch_size=4, warn=said.append) as again:  # engines reused
        assert again.backend == "tensorrt"


def test_io_binding_path_matches_plain_run(bundle: tuple[Path, Params]) -> None:
    # The ort-cuda code path (encoder outputs bound as OrtValues, fed to the ensemble), run on CPU memory.
    from mmmos.runtime.backend_ort import OrtPipeline

    pipe = OrtPipeline(Bundle.load(bundle[0]), "fp32", device="cpu", threads=1)
    pipe.io_device = "cpu"
    rng = np.random.default_rng(0)
    batch = {"wavlm": (rng.standard_normal((3, 160000)).astype(np.float32), np.array([1, 80000, 160000])),
             "muq": (rng.standard_normal((3, 240000)).astype(np.float32), np.array([1, 120000, 240000]))}
    feats, plain = pipe.run(batch, want_features=True)
    feats_b, bound = pipe._run_bound(batch, want_features=True, want_scores=True)
    assert plain is not None and bound is not None and set(feats) == set(feats_b)
    for a, b in zip(plain, bound, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    for k in feats:
        np.testing.assert_allclose(feats[k], feats_b[k], atol=1e-6)
    pipe.close()
