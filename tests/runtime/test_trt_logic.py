"""TensorRT pipeline wiring without TensorRT: a fake `tensorrt`/`cudart` pair and a runner that executes the
plan's ONNX graph on ORT CPU, so engine lookup, rebuild-on-mismatch, the encoder->ensemble device hand-off
(pointers) and result assembly are checked here; the real TensorRT run is in test_rt_backends (GPU only)."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from mmmos.runtime import AXES, Bundle, Scorer
from mmmos.runtime import backend_trt as bt

from ..audio_helpers import tone
from ..bundle_factory import Params

DEVICE: dict[int, np.ndarray] = {}  # fake device memory: pointer -> array
_ptrs = itertools.count(1000)


class FakeRunner(bt.TrtRunner):
    """Runs the ONNX file named inside the plan; a plan that reads 'bad' fails like a foreign engine."""

    def activate_impl(self) -> None:
        text = self.plan_path.read_text()
        if text == "bad":
            raise RuntimeError(f"engine {self.plan_path} does not load on this TensorRT/GPU")
        self.session = ort.InferenceSession(text, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.buffers = {n: (next(_ptrs), 0) for n in self.inputs + self.outputs}

    def enqueue(self, host: dict[str, np.ndarray], external: dict[str, tuple[int, tuple[int, ...]]]) -> None:
        feeds = {n: (DEVICE[external[n][0]] if n in external else host[n]) for n in self.inputs}
        for n, v in zip(self.outputs, self.session.run(self.outputs, feeds), strict=True):
            DEVICE[self.buffers[n][0]] = v

    def output_shape(self, name: str) -> tuple[int, ...]:
        return tuple(DEVICE[self.buffers[name][0]].shape)

    def fetch(self, name: str) -> np.ndarray:
        return DEVICE[self.buffers[name][0]].copy()

    def sync(self) -> None:
        pass

    def deactivate_impl(self) -> None:
        self.session = None


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Patch the TensorRT seams; returns the list of plans 'built'."""
    ok = SimpleNamespace(cudaSuccess=0)
    cudart = SimpleNamespace(
        cudaError_t=ok, cudaGetDeviceCount=lambda: (0, 1),
        cudaDeviceAttr=SimpleNamespace(
            cudaDevAttrComputeCapabilityMajor="maj", cudaDevAttrComputeCapabilityMinor="min"
        ),
        cudaDeviceGetAttribute=lambda a, _d: (0, 9 if a == "maj" else 0),
        cudaStreamCreate=lambda: (0, "stream"), cudaStreamDestroy=lambda _s: (0,),
    )
    built: list[Path] = []

    def build(_trt: Any, onnx_path: Path, plan: Path, profile: tuple[int, int, int], log: Any) -> None:
        plan.parent.mkdir(parents=True, exist_ok=True)
        plan.write_text(str(onnx_path))
        built.append(plan)

    monkeypatch.setattr(bt, "import_trt", lambda: (SimpleNamespace(__version__="10.99.0"), cudart))
    monkeypatch.setattr(bt, "TrtRunner", FakeRunner)
    monkeypatch.setattr(bt, "build_engine", build)
    return built


def test_builds_missing_engines_then_reuses_them(bundle: tuple[Path, Params], tmp_path: Path,
                                                 fake_trt: list[Path]) -> None:
    root = tmp_path / "b"
    shutil.copytree(bundle[0], root)
    clips = [(tone(d, 16000, seed=i), 16000) for i, d in enumerate([3.0, 21.0, 0.4])]
    with Scorer(root, backend="ort-cpu", batch_size=2, warn=lambda _m: None) as ref:
        want = ref.score(clips)
    said: list[str] = []
    with Scorer(root, backend="tensorrt", batch_size=2, warn=said.append) as s:
        assert s.backend == "tensorrt"
        got = s.score(clips)
        (enc,) = s.encode([clips[1]])
    assert sorted(p.name for p in fake_trt) == ["ensemble.fp32.plan", "muq.fp32.plan", "wavlm.fp32.plan"]
    assert {p.parent.name for p in fake_trt} == {"10.99.0-sm90-b1-2-2"}
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose([g.scores[a] for a in AXES], [w.scores[a] for a in AXES], atol=1e-6)
    assert enc.outputs["wavlm_pooled"].shape[0] == 3
    fake_trt.clear()
    with Scorer(root, backend="tensorrt", batch_size=2, warn=said.append) as s:
        assert s.backend == "tensorrt" and fake_trt == []  # found by key, nothing rebuilt


def test_foreign_or_broken_engines_are_rebuilt(bundle: tuple[Path, Params], tmp_path: Path,
                                               fake_trt: list[Path]) -> None:
    root = tmp_path / "b"
    shutil.copytree(bundle[0], root)
    (root / "engines" / "8.6.1-sm80-b1-8-32").mkdir(parents=True)  # another TensorRT and GPU
    mine = root / "engines" / "10.99.0-sm90-b1-8-32"
    mine.mkdir()
    (mine / "wavlm.fp32.plan").write_text("bad")  # same key but does not deserialize
    (mine / "muq.fp32.plan").write_text(str(root / "muq.fp32.onnx"))
    said: list[str] = []
    pipe = bt.TrtPipeline(Bundle.load(root), "fp32", batch_size=4, log=said.append)
    pipe.close()
    assert sorted(p.name for p in fake_trt) == ["ensemble.fp32.plan", "wavlm.fp32.plan"]  # muq reused
    assert any("rebuilding" in m for m in said)


def test_batch_beyond_every_profile_builds_a_new_key(bundle: tuple[Path, Params], tmp_path: Path,
                                                     fake_trt: list[Path]) -> None:
    root = tmp_path / "b"
    shutil.copytree(bundle[0], root)
    small = root / "engines" / "10.99.0-sm90-b1-2-4"
    small.mkdir(parents=True)
    for g in ("wavlm", "muq", "ensemble"):
        (small / f"{g}.fp32.plan").write_text(str(root / f"{g}.fp32.onnx"))
    bt.TrtPipeline(Bundle.load(root), "fp32", batch_size=16, log=lambda _m: None).close()
    assert {p.parent.name for p in fake_trt} == {"10.99.0-sm90-b1-8-16"}
