"""`mmmos-export --triton-repo`: configs parse with Triton's protobuf definitions, the layout is Triton's, and the
repository's graphs, ensemble wiring and preprocessing model score like the runtime.

No Triton with the ONNX Runtime / TensorRT backends can run here (the NGC container is out of reach), so the
ensemble is executed step by step with onnxruntime from its own config, and the python model's maths
(`score_clip`) is run outside Triton.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed (Triton's config protobufs)")
ort = pytest.importorskip("onnxruntime")

from mmmos import AXES  # noqa: E402
from mmmos.export.cli import main  # noqa: E402
from mmmos.runtime import Scorer  # noqa: E402
from mmmos.runtime.serving.triton_model import score_clip  # noqa: E402
from mmmos.runtime.serving.triton_repo import check_repo, parse_config  # noqa: E402

MODELS = {"wavlm", "muq", "m2d", "mmmos_heads", "mmmos_windows", "mmmos"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("triton")
    bundle, repo = base / "bundle", base / "repo"
    with pytest.raises(SystemExit) as info:
        main([str(bundle), "--random-init", "--preset", "tiny", "--num-members", "3", "--no-trt", "--no-fp16",
              "--triton-repo", str(repo)])
    assert info.value.code == 0
    return bundle, repo


def _configs(repo: Path) -> dict[str, object]:
    return {d.name: parse_config((d / "config.pbtxt").read_text()) for d in repo.iterdir() if d.is_dir()}


def test_configs_parse_and_the_layout_is_tritons(exported: tuple[Path, Path]) -> None:
    _, repo = exported
    cfgs = _configs(repo)
    assert set(cfgs) == MODELS  # no *_trt models: this bundle has no engines
    assert check_repo(repo) == []
    for name, cfg in cfgs.items():
        assert cfg.name == name and cfg.max_batch_size > 0
        if cfg.platform == "ensemble":
            assert (repo / name / "1").is_dir() and len(cfg.ensemble_scheduling.step) == 4
            continue
        assert cfg.HasField("dynamic_batching")
        if cfg.backend == "python":
            assert (repo / name / "1" / "model.py").is_file()
            continue
        assert cfg.platform == "onnxruntime_onnx"
        sess = ort.InferenceSession(str(repo / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        assert [i.name for i in cfg.input] == [i.name for i in sess.get_inputs()]
        assert {o.name for o in cfg.output} <= {o.name for o in sess.get_outputs()}
        for o in cfg.output:  # declared dims are the graph's (without the batch axis)
            shape = next(s.shape for s in sess.get_outputs() if s.name == o.name)
            assert list(o.dims) == [d if isinstance(d, int) else -1 for d in shape[1:]]


def test_check_repo_reports_broken_repositories(exported: tuple[Path, Path], tmp_path: Path) -> None:
    _, repo = exported
    broken = tmp_path / "repo"
    shutil.copytree(repo, broken)
    (broken / "muq" / "1" / "model.onnx").unlink()
    text = (broken / "mmmos_windows" / "config.pbtxt").read_text()
    (broken / "mmmos_windows" / "config.pbtxt").write_text(text.replace('key: "wavlm_pooled"', 'key: "nope"', 1))
    problems = check_repo(broken)
    assert any("muq: no model.onnx" in p for p in problems)
    assert any("wavlm has no output 'nope'" in p for p in problems)
    with pytest.raises(ValueError, match=r"invalid config\.pbtxt"):
        parse_config('name: "x" platform: "onnxruntime_onnx" max_batch_size: many')


def _run_ensemble_from_config(repo: Path):
    """Execute mmmos_windows the way Triton would: its steps, in order, through each model's graph."""
    cfg = parse_config((repo / "mmmos_windows" / "config.pbtxt").read_text())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sessions = {s.model_name: ort.InferenceSession(str(repo / s.model_name / "1" / "model.onnx"), opts,
                                                   providers=["CPUExecutionProvider"])
                for s in cfg.ensemble_scheduling.step}
    configs = {name: parse_config((repo / name / "config.pbtxt").read_text()) for name in sessions}

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        tensors = dict(feeds)
        for step in cfg.ensemble_scheduling.step:
            reshape = {i.name: list(i.reshape.shape) for i in configs[step.model_name].input if i.HasField("reshape")}
            inputs = {}
            for key, value in step.input_map.items():
                x = tensors[value]
                inputs[key] = x.reshape(x.shape[0], *reshape[key]) if key in reshape else x
            names = list(step.output_map.keys())
            for key, out in zip(names, sessions[step.model_name].run(names, inputs), strict=True):
                tensors[step.output_map[key]] = out
        return tensors["scores"]

    return run


def test_repository_scores_like_the_runtime(exported: tuple[Path, Path]) -> None:
    bundle, repo = exported
    scorer = Scorer(bundle, backend="ort-cpu", threads=1)
    encoders = scorer.bundle.encoders
    run = _run_ensemble_from_config(repo)
    rng = np.random.default_rng(3)
    for seconds, sr in ((3.0, 16000), (21.5, 44100)):  # one window; three windows with a short tail
        x = (0.1 * rng.standard_normal(int(seconds * sr))).astype(np.float32)
        mean, std, duration = score_clip(x, sr, encoders, run, batch=2)
        want = scorer.score((x, sr))
        np.testing.assert_allclose(mean, [want.scores[a] for a in AXES], atol=1e-4, rtol=0)
        np.testing.assert_allclose(std, [want.std[a] for a in AXES], atol=1e-4, rtol=0)
        assert abs(duration - seconds) < 1e-3
    scorer.close()


class _FakePbUtils:
    """A stand-in `triton_python_backend_utils`: BLS answers in GPU memory unless asked for CPU memory, as a
    TensorRT model on KIND_GPU does (`as_numpy` of a GPU tensor raises in Triton)."""

    TRITONSERVER_MEMORY_CPU = 0
    TRITONSERVER_MEMORY_GPU = 1

    def __init__(self, run: object) -> None:
        self.run = run
        self.calls: list[dict[str, object]] = []

    class Tensor:
        def __init__(self, name: str, data: np.ndarray, on_cpu: bool = True) -> None:
            self.name, self.data, self.on_cpu = name, data, on_cpu

        def is_cpu(self) -> bool:
            return self.on_cpu

        def as_numpy(self) -> np.ndarray:
            if not self.on_cpu:
                raise RuntimeError("Tensor is stored in GPU and cannot be converted to NumPy.")
            return self.data

    class PreferredMemory:
        def __init__(self, preferred_memory_type: int, preferred_device_id: int = 0) -> None:
            self.type, self.device = preferred_memory_type, preferred_device_id

    def InferenceRequest(self, model_name: str, requested_output_names: list[str], inputs: list,  # noqa: N802
                         preferred_memory: object = None) -> object:
        pb = self
        pb.calls.append({"model": model_name, "batch": inputs[0].data.shape[0], "memory": preferred_memory})

        class _Request:
            def exec(self) -> object:
                scores = pb.run({t.name: t.data for t in inputs})
                on_cpu = preferred_memory is not None and preferred_memory.type == pb.TRITONSERVER_MEMORY_CPU

                class _Response:
                    def has_error(self) -> bool:
                        return False

                    def output(self) -> object:
                        return pb.Tensor("scores", scores, on_cpu=on_cpu)

                return _Response()

        return _Request()

    def get_output_tensor_by_name(self, response: object, name: str) -> object:
        return response.output()  # type: ignore[attr-defined]

    def get_input_tensor_by_name(self, request: dict, name: str) -> object:
        return self.Tensor(name, request[name])

    class InferenceResponse:
        def __init__(self, output_tensors: list, error: object = None) -> None:
            self.outputs, self.error = {t.name: t.data for t in output_tensors}, error

    class TritonError:
        def __init__(self, message: str) -> None:
            self.message = message


def test_python_model_asks_for_cpu_memory_and_batches_windows_as_configured(
        exported: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import sys

    from mmmos.runtime.serving.triton_model import TritonPythonModel

    bundle, repo = exported
    fake = _FakePbUtils(_run_ensemble_from_config(repo))
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    cfg = parse_config((repo / "mmmos" / "config.pbtxt").read_text())
    windows_per_call = json.loads(cfg.parameters["mmmos_config"].string_value)["windows_per_call"]
    assert windows_per_call == parse_config((repo / "mmmos_windows" / "config.pbtxt").read_text()).max_batch_size
    model = TritonPythonModel()
    model.initialize({"model_config": json.dumps({"parameters": {
        "mmmos_config": {"string_value": cfg.parameters["mmmos_config"].string_value}}})})
    x = (0.1 * np.random.default_rng(5).standard_normal(16000 * 25)).astype(np.float32)
    (response,) = model.execute([{"pcm": x[None, :], "sample_rate": np.array([[16000]], np.int32)}])
    assert response.error is None, response.error.message
    with Scorer(bundle, backend="ort-cpu", threads=1) as scorer:
        want = scorer.score((x, 16000))
    np.testing.assert_allclose(response.outputs["scores"][0], [want.scores[a] for a in AXES], atol=1e-4, rtol=0)
    assert fake.calls and all(c["memory"] is not None and c["memory"].type == fake.TRITONSERVER_MEMORY_CPU
                              for c in fake.calls)
    assert max(c["batch"] for c in fake.calls) <= windows_per_call


def test_python_model_answers_non_finite_scores_with_an_error(exported: tuple[Path, Path]) -> None:
    from mmmos.runtime.errors import AudioError

    bundle, _ = exported
    with Scorer(bundle, backend="ort-cpu", threads=1) as scorer:
        encoders = scorer.bundle.encoders
    nan_run = lambda feeds: np.full((len(next(iter(feeds.values()))), 3, 4), np.nan, np.float32)  # noqa: E731
    with pytest.raises(AudioError, match="non-finite"):
        score_clip(np.zeros(16000, np.float32), 16000, encoders, nan_run)
