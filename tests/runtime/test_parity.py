"""Done-when: the runtime on an exported tiny bundle equals the PyTorch reference on the same weights.

The bundle is written by the real exporter (`mmmos.export`) from `--random-init --preset tiny`
members (all three aggregators, so frame outputs are exercised), and scored through ORT CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmmos.runtime import AXES, Scorer

from ..audio_helpers import tone

pytest.importorskip("torch", reason="the PyTorch reference needs the export extra (torch)")
export_pipeline = pytest.importorskip("mmmos.export.pipeline", reason="mmmos.export is not importable")
sources = pytest.importorskip("mmmos.export.sources", reason="mmmos.export is not importable")
reference_mod = pytest.importorskip("mmmos.models.reference", reason="mmmos.models.reference is not importable")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A tiny random-init bundle (fp32 only, no engines) and the torch reference with its weights."""
    out = tmp_path_factory.mktemp("exported") / "bundle"
    spec = sources.from_random_init("tiny", seed=1, num_members=3)
    export_pipeline.export_bundle(out, spec, fp16=False, trt=False, log=lambda _m: None)
    ref = reference_mod.ReferenceModel(spec.encoders, spec.members)
    return out, ref


@pytest.mark.parametrize(("seconds", "sr", "channels"), [(23.0, 44100, 2), (4.0, 16000, 1)])
def test_runtime_equals_pytorch_reference(exported: tuple[Path, Any], seconds: float, sr: int,
                                          channels: int) -> None:
    root, ref = exported
    x = tone(seconds, sr, channels=channels, seed=3)
    expected = ref.score_waveform(x, sr)
    with Scorer(root, backend="ort-cpu", batch_size=2, warn=lambda _m: None) as s:
        got = s.score((x, sr))
    assert got.ok, got.error
    assert got.scores is not None and got.std is not None and got.members is not None
    np.testing.assert_allclose([got.scores[a] for a in AXES], [expected[a] for a in AXES], atol=1e-3)
    np.testing.assert_allclose([got.std[a] for a in AXES], [expected["std"][a] for a in AXES], atol=1e-3)
    np.testing.assert_allclose(got.members, expected["member_scores"], atol=1e-3)
    assert got.windows == expected["window_scores"].shape[0]


def test_encode_outputs_feed_run_ensemble(exported: tuple[Path, Any]) -> None:
    root, ref = exported
    x = tone(12.0, 16000, seed=4)
    expected = ref.score_waveform(x, 16000)
    with Scorer(root, backend="ort-cpu", warn=lambda _m: None) as s:
        (item,) = s.encode([(x, 16000)])
        assert set(item.outputs) >= set(s.bundle.ensemble_inputs)
        scores, _, _ = s.run_ensemble(item.outputs)
    np.testing.assert_allclose(scores, expected["window_scores"], atol=1e-3)
    np.testing.assert_allclose(item.weights, expected["weights"], atol=1e-6)


def test_real_graphs_score_a_file_the_same_alone_or_batched(exported: tuple[Path, Any]) -> None:
    root, _ = exported
    clips = [(tone(d, 16000, seed=i), 16000) for i, d in enumerate([4.0, 23.0, 0.5, 11.0])]
    results = []
    for bs in (1, 4):
        with Scorer(root, backend="ort-cpu", batch_size=bs, warn=lambda _m: None) as s:
            results.append([[r.scores[a] for a in AXES] for r in s.score(clips)])  # type: ignore[index]
    np.testing.assert_allclose(results[0], results[1], atol=1e-6, rtol=0)
