"""The TensorRT backend against fake `tensorrt`/`cuda.bindings` modules (tests/fake_trt.py): engine lookup by graph
hash, rebuilds, the int8-trt graph, pinned staging, checked shapes, freed memory, the stream handle and the GPU
probe. The fakes run each plan's ONNX graph on ORT CPU over real host memory; a real GPU run is
test_backends.py::test_tensorrt_builds_engines_and_matches_ort and scripts/gpu_check.sh."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmmos.runtime import AXES, Bundle, Scorer
from mmmos.runtime import backend_trt as bt
from mmmos.runtime import trt_engine as te
from mmmos.runtime.errors import BackendUnavailableError
from mmmos.runtime.manifest import read_manifest, update_manifest

from .. import fake_trt
from ..audio_helpers import tone
from ..bundle_factory import Params, make_bundle

CLIPS = [(tone(d, 16000, seed=i), 16000) for i, d in enumerate([3.0, 21.0, 0.4])]


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> fake_trt.FakeGpu:
    """Fake TensorRT + cuda-bindings on a fake sm90 GPU."""
    return fake_trt.install(monkeypatch)


@pytest.fixture
def root(bundle: tuple[Path, Params], tmp_path: Path) -> Path:
    """A private copy of the test bundle."""
    return Path(shutil.copytree(bundle[0], tmp_path / "b"))


def _scores(root: Path, backend: str, **kw: object) -> np.ndarray:
    with Scorer(root, backend=backend, batch_size=2, warn=lambda _m: None, **kw) as s:  # type: ignore[arg-type]
        assert s.backend == backend
        return np.array([[r.scores[a] for a in AXES] for r in s.score(CLIPS)])


def _sha16(root: Path, graph: str) -> str:
    return read_manifest(root)["files"][graph][:16]


def test_builds_missing_engines_into_the_cache_then_reuses_them(root: Path, gpu: fake_trt.FakeGpu) -> None:
    want = _scores(root, "ort-cpu")
    np.testing.assert_allclose(_scores(root, "tensorrt", precision="fp32"), want, atol=1e-6)
    key = te.cache_dir() / "engines" / "10.99.0-sm90-b1-2-2"
    assert sorted(p.name for p in key.glob("*.plan")) == sorted(
        f"{g.removesuffix('.onnx')}.{_sha16(root, g)}.plan" for g in ("wavlm.fp32.onnx", "muq.fp32.onnx",
                                                                      "ensemble.fp32.onnx"))
    assert not (root / "engines").exists()  # the bundle folder is left as exported
    assert len(gpu.rec.parsed) == 3
    np.testing.assert_allclose(_scores(root, "tensorrt", precision="fp32"), want, atol=1e-6)
    assert len(gpu.rec.parsed) == 3  # found by key and graph hash: nothing rebuilt
    with Scorer(root, backend="tensorrt", precision="fp32", batch_size=2, warn=lambda _m: None) as s:
        (enc,) = s.encode([CLIPS[1]])
    assert enc.outputs["wavlm_pooled"].shape[0] == 3


def test_a_plan_of_another_graph_version_is_never_loaded(root: Path, gpu: fake_trt.FakeGpu, tmp_path: Path) -> None:
    # export-time plans in the bundle, named by graph hash
    report = te.build_plans(root, ["wavlm.fp32.onnx", "muq.fp32.onnx", "ensemble.fp32.onnx"], te.BatchProfile(1, 2, 4),
                            log=lambda _m: None, files=read_manifest(root)["files"])
    assert report["status"] == "built" and len(gpu.rec.parsed) == 3
    old_digest = _sha16(root, "muq.fp32.onnx")
    # then the muq graph changes (as mmmos-calibrate rewrites a graph) and the manifest with it
    make_bundle(tmp_path / "other", seed=7)
    shutil.copy2(tmp_path / "other" / "muq.fp32.onnx", root / "muq.fp32.onnx")
    update_manifest(root, read_manifest(root), ["muq.fp32.onnx"])
    assert _sha16(root, "muq.fp32.onnx") != old_digest
    said: list[str] = []
    with Scorer(root, backend="tensorrt", precision="fp32", batch_size=2, warn=said.append) as s:
        got = np.array([[r.scores[a] for a in AXES] for r in s.score(CLIPS)])
    assert [p.name for p in gpu.rec.parsed[3:]] == ["muq.fp32.onnx"]  # only the changed graph is rebuilt
    assert any(f"muq.fp32.{old_digest}.plan" in m and "another version" in m for m in said)
    np.testing.assert_allclose(got, _scores(root, "ort-cpu"), atol=1e-6)  # and its new plan is what runs


def test_foreign_or_broken_engines_are_rebuilt(root: Path, gpu: fake_trt.FakeGpu) -> None:
    (root / "engines" / "8.6.1-sm80-b1-8-32").mkdir(parents=True)  # another TensorRT and GPU
    mine = root / "engines" / "10.99.0-sm90-b1-8-32"
    mine.mkdir()
    (mine / f"wavlm.fp32.{_sha16(root, 'wavlm.fp32.onnx')}.plan").write_text("bad")  # right name, won't deserialize
    te.build_plans(root, ["muq.fp32.onnx"], log=lambda _m: None)
    assert len(gpu.rec.parsed) == 1
    said: list[str] = []
    bt.TrtPipeline(Bundle.load(root), "fp32", batch_size=4, log=said.append).close()
    assert sorted(p.name for p in gpu.rec.parsed[1:]) == ["ensemble.fp32.onnx", "wavlm.fp32.onnx"]  # muq reused
    assert any("does not load" in m for m in said)
    assert gpu.live() == (0, 0) and not gpu.cudart.streams


def test_batch_beyond_every_profile_builds_a_new_key(root: Path, gpu: fake_trt.FakeGpu) -> None:
    te.build_plans(root, ["wavlm.fp32.onnx", "muq.fp32.onnx", "ensemble.fp32.onnx"], te.BatchProfile(1, 2, 4),
                   log=lambda _m: None)
    bt.TrtPipeline(Bundle.load(root), "fp32", batch_size=16, log=lambda _m: None).close()
    assert len(gpu.rec.parsed) == 6
    assert sorted(p.name for p in (te.cache_dir() / "engines").iterdir()) == ["10.99.0-sm90-b1-8-16"]
    # the profile the build used, per input, from the one helper (windows per batch on axis 0)
    assert gpu.rec.profiles[-3]["wav"] == [[1, 160000], [8, 160000], [16, 160000]]
    assert gpu.rec.profiles[-3]["lengths"] == [[1], [8], [16]]


def test_int8_on_tensorrt_parses_the_int8_trt_graph(root: Path, gpu: fake_trt.FakeGpu) -> None:
    man = read_manifest(root)
    for enc in man["encoders"]:  # calibration's two INT8 graphs: ORT's (uint8) and TensorRT's (symmetric)
        for key in ("int8", "int8-trt"):
            shutil.copy2(root / enc["graphs"]["fp32"], root / f"{enc['name']}.{key}.onnx")
            enc["graphs"][key] = f"{enc['name']}.{key}.onnx"
    man["precisions"].update({"int8": {"status": "passed"}, "int8-trt": {"status": "passed"}})
    update_manifest(root, man, [f"{e['name']}.{k}.onnx" for e in man["encoders"] for k in ("int8", "int8-trt")])
    np.testing.assert_allclose(_scores(root, "tensorrt", precision="int8"), _scores(root, "ort-cpu"), atol=1e-6)
    assert sorted(p.name for p in gpu.rec.parsed) == ["ensemble.fp32.onnx", "muq.int8-trt.onnx",
                                                      "wavlm.int8-trt.onnx"]


def test_host_copies_go_through_pinned_buffers_and_everything_is_freed(root: Path, gpu: fake_trt.FakeGpu) -> None:
    with Scorer(root, backend="tensorrt", precision="fp32", batch_size=2, warn=lambda _m: None) as s:
        s.score(CLIPS)
        s.encode([CLIPS[0]])
        assert gpu.live()[0] == gpu.live()[1] > 0  # one device and one pinned buffer per tensor
    h2d = [c for c in gpu.mem.copies if c[0] == "H2D"]
    d2h = [c for c in gpu.mem.copies if c[0] == "D2H"]
    assert h2d and d2h
    # pageable memory would make cudaMemcpyAsync synchronous: host sides must be pinned
    assert {(dst, src) for _, dst, src, _ in h2d} == {("device", "pinned")}
    assert {(dst, src) for _, dst, src, _ in d2h} == {("pinned", "device")}
    assert gpu.live() == (0, 0) and not gpu.cudart.streams  # cudaFree + cudaFreeHost + stream on close
    assert gpu.rec.handles == {int(fake_trt.FakeStream())}


@pytest.mark.parametrize("fail_at", [1, 2, 4])
def test_a_failed_activation_frees_what_it_allocated(root: Path, monkeypatch: pytest.MonkeyPatch,
                                                      fail_at: int) -> None:
    gpu = fake_trt.install(monkeypatch)
    report = te.build_plans(root, ["muq.fp32.onnx"], log=lambda _m: None)
    plan = root / "engines" / report["key"] / report["engines"][0]["plan"]
    gpu.cudart.fail_malloc_at = fail_at  # the n-th cudaMalloc/cudaMallocHost runs out of memory
    _, stream = gpu.cudart.cudaStreamCreate()
    runner = bt.TrtRunner(plan, gpu.trt, gpu.cudart, stream)
    with pytest.raises(RuntimeError, match="cudaErrorMemoryAllocation"):
        runner.activate()
    assert gpu.live() == (0, 0) and not runner.is_active and runner.buffers == {}


def test_a_refused_input_shape_is_an_error_naming_it(root: Path, gpu: fake_trt.FakeGpu) -> None:
    report = te.build_plans(root, ["muq.fp32.onnx"], te.BatchProfile(1, 2, 4), log=lambda _m: None)
    plan = root / "engines" / report["key"] / report["engines"][0]["plan"]
    _, stream = gpu.cudart.cudaStreamCreate()
    runner = bt.TrtRunner(plan, gpu.trt, gpu.cudart, stream)
    gpu.rec.refuse.add("lengths")
    with pytest.raises(RuntimeError, match=r"refuses shape \(4,\) for input 'lengths'"):
        runner.activate()
    assert gpu.live() == (0, 0)
    gpu.rec.refuse.clear()
    with runner:
        wav = np.zeros((2, 240000), np.float32)
        runner.infer({"wav": wav, "lengths": np.array([5, 240000])})
        gpu.rec.refuse.add("wav")
        with pytest.raises(RuntimeError, match=r"refuses shape \(2, 240000\) for input 'wav'"):
            runner.infer({"wav": wav, "lengths": np.array([5, 240000])})


class _Stream:
    def __int__(self) -> int:
        return 1234


def _raise(exc: type[Exception]):
    def get(_stream: object) -> int:
        raise exc("no handle")

    return get


@pytest.mark.parametrize(("native", "want"), [
    (lambda _s: 99, 99),  # cuda-bindings >= 12.9.1: the documented helper
    (None, 1234),  # 12.9.0: utils has no get_cuda_native_handle -> int(stream)
    (_raise(TypeError), 1234),  # an object the helper does not know
    (_raise(AttributeError), 1234),
])
def test_stream_handle(monkeypatch: pytest.MonkeyPatch, native: object, want: int) -> None:
    fake_trt.install(monkeypatch, native_handle=native)
    assert bt.stream_handle(_Stream()) == want


def test_stream_handle_does_not_hide_other_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_trt.install(monkeypatch, native_handle=_raise(RuntimeError))
    with pytest.raises(RuntimeError, match="no handle"):
        bt.stream_handle(_Stream())


def test_an_old_driver_names_the_extra_that_fits_it(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # cuda-bindings 13 on a 570 driver: every call returns cudaErrorInsufficientDriver
    fake_trt.install(monkeypatch, count_error=fake_trt.ERR_INSUFFICIENT_DRIVER, driver=12080, runtime=13000)
    why = te.unavailable_reason()
    assert why is not None and "driver (CUDA 12.8)" in why and "CUDA 13.0 runtime" in why
    assert "mmmos[trt-cu12]" in why and "no CUDA GPU" not in why and "\n" not in why
    said: list[str] = []
    with Scorer(root, backend="tensorrt", warn=said.append) as s:
        assert s.backend != "tensorrt"
    assert any("older than the CUDA 13.0 runtime" in m for m in said)


def test_no_gpu_and_missing_packages_say_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_trt.install(monkeypatch, count_error=fake_trt.ERR_NO_DEVICE)
    assert "no CUDA GPU is visible ('cudaErrorNoDevice')" in (te.unavailable_reason() or "")
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", None)  # an import of it raises ImportError
    with pytest.raises(BackendUnavailableError, match=r"tensorrt does not import .*mmmos\[trt-cu13\]"):
        te.import_trt()


def test_export_style_plans_are_found_by_the_runtime(root: Path, gpu: fake_trt.FakeGpu) -> None:
    # what mmmos-export ships (fp16 plans, the fp16 precision's ensemble is the fp32 graph) is what auto loads
    man = read_manifest(root)
    man["precisions"]["fp16"] = {"status": "passed"}
    update_manifest(root, man)
    graphs = [e["graphs"]["fp16"] for e in man["encoders"]] + ["ensemble.fp32.onnx"]
    assert te.build_plans(root, graphs, log=lambda _m: None)["status"] == "built"
    parsed = len(gpu.rec.parsed)
    with Scorer(root, backend="auto", batch_size=8, warn=lambda _m: None) as s:
        assert (s.backend, s.precision) == ("tensorrt", "fp16")
        s.score(CLIPS[:1])
    assert len(gpu.rec.parsed) == parsed  # nothing built at scoring time
    saved = json.loads((root / "manifest.json").read_text())["files"]
    assert not any(f.startswith("engines/") for f in saved)  # plans are keyed by graph hash, not listed
