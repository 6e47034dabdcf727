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
    encoders = [(e.name, e.sample_rate, e.window_samples) for e in scorer.bundle.encoders]
    run = _run_ensemble_from_config(repo)
    rng = np.random.default_rng(3)
    for seconds, sr in ((3.0, 16000), (21.5, 44100)):  # one window; three windows with a short tail
        x = (0.1 * rng.standard_normal(int(seconds * sr))).astype(np.float32)
        mean, std, duration = score_clip(x, sr, encoders, scorer.bundle.window_seconds, run, batch=2)
        want = scorer.score((x, sr))
        np.testing.assert_allclose(mean, [want.scores[a] for a in AXES], atol=1e-4, rtol=0)
        np.testing.assert_allclose(std, [want.std[a] for a in AXES], atol=1e-4, rtol=0)
        assert abs(duration - seconds) < 1e-3
    scorer.close()
