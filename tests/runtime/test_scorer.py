"""Scorer: window rule + per-file averaging vs a numpy reference, batching, memory bound, encode API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from mmmos.runtime import AXES, EncodedItem, Scorer, ScoreResult

from ..audio_helpers import tone, write_zoo
from ..bundle_factory import Params, reference, window_scores


def _vec(r: ScoreResult) -> np.ndarray:
    assert r.scores is not None, r.error
    return np.array([r.scores[a] for a in AXES])


def _scorer(bundle: tuple[Path, Params], warnings: list[str] | None = None, **kw: Any) -> Scorer:
    sink = warnings if warnings is not None else []
    return Scorer(bundle[0], backend="ort-cpu", threads=1, warn=sink.append, **kw)


@pytest.mark.parametrize(("seconds", "sr", "channels"), [(25.0, 16000, 1), (3.0, 44100, 2), (0.2, 8000, 1),
                                                         (12.0, 96000, 1)])
def test_scores_equal_numpy_reference(bundle: tuple[Path, Params], seconds: float, sr: int, channels: int) -> None:
    x = tone(seconds, sr, channels=channels, seed=int(seconds * 10))
    with _scorer(bundle, batch_size=2) as s:
        r = s.score((x, sr))
    mean, std = reference(bundle[1], x.mean(1) if channels > 1 else x, sr)
    np.testing.assert_allclose(_vec(r), mean, atol=1e-4)
    assert r.std is not None
    np.testing.assert_allclose([r.std[a] for a in AXES], std, atol=1e-4)
    assert r.windows == max(1, int(np.ceil(seconds / 10))) and r.duration_s == pytest.approx(seconds, abs=1e-3)
    assert r.members is not None and r.members.shape == (3, 4)


def test_silence_is_scored(bundle: tuple[Path, Params]) -> None:
    with _scorer(bundle) as s:
        r = s.score((np.zeros(16000, np.float32), 16000))
    assert r.ok and np.all(np.isfinite(_vec(r)))


def test_same_scores_alone_or_batched_and_run_after_run(bundle: tuple[Path, Params]) -> None:
    clips = [(tone(d, 16000, seed=i), 16000) for i, d in enumerate([4.0, 23.0, 0.5, 11.0, 31.0])]
    with _scorer(bundle, batch_size=1) as s1:
        alone = [_vec(s1.score(c)) for c in clips]
    for bs in (3, 8):
        with _scorer(bundle, batch_size=bs) as s:
            for _ in range(2):
                together = [_vec(r) for r in s.score(clips)]
                np.testing.assert_allclose(together, alone, atol=1e-6, rtol=0)


def test_memory_is_bounded_by_batch_for_a_file_over_3_minutes(bundle: tuple[Path, Params], tmp_path: Path) -> None:
    x = tone(190.0, 8000, seed=5)
    p = tmp_path / "long.wav"
    sf.write(p, x, 8000, subtype="PCM_16")
    seen: list[int] = []
    with _scorer(bundle, batch_size=4) as s:
        real = s.pipeline.run

        def spy(batch: Any, **kw: Any) -> Any:
            seen.append(max(wav.shape[0] for wav, _ in batch.values()))
            return real(batch, **kw)

        s.pipeline.run = spy  # type: ignore[method-assign]
        r = s.score(str(p))
    assert r.windows == 19 and max(seen) <= 4 and sum(seen) == 19
    y, _ = sf.read(p, dtype="float32")
    np.testing.assert_allclose(_vec(r), reference(bundle[1], y, 8000)[0], atol=1e-4)


def test_bad_inputs_get_error_rows_in_order(bundle: tuple[Path, Params], tmp_path: Path) -> None:
    zoo = write_zoo(tmp_path)
    names = list(zoo)
    with _scorer(bundle, batch_size=3) as s:
        results = s.score([str(tmp_path / n) for n in names] + [(np.array([np.nan], np.float32), 16000)])
    assert [Path(r.path).name for r in results[:-1]] == names
    for r, n in zip(results, names, strict=False):
        if zoo[n] is None:
            assert r.ok and r.windows == 1
        else:
            assert not r.ok and zoo[n] in (r.error or "") and r.scores is None
    assert "non-finite" in (results[-1].error or "")


def test_api_input_forms(bundle: tuple[Path, Params], tmp_path: Path) -> None:
    x = tone(1.0, 16000)
    p = tmp_path / "a.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    with _scorer(bundle) as s:
        single = s.score(p)
        assert isinstance(single, ScoreResult) and single.path == str(p)
        listed = s.score([str(p), (x, 16000)])
        assert isinstance(listed, list) and listed[1].path is None
        np.testing.assert_allclose(_vec(listed[0]), _vec(listed[1]), atol=1e-6)
        with pytest.raises(TypeError):
            s.score([42])  # type: ignore[list-item]


def test_untrained_and_forced_precision_warn(bundle: tuple[Path, Params]) -> None:
    warnings: list[str] = []
    s = _scorer(bundle, warnings, precision="fp16", force_precision=True)
    s.close()
    assert any("untrained" in w for w in warnings) and any("fp16" in w for w in warnings)


def test_encode_matches_contract_and_run_ensemble(bundle: tuple[Path, Params]) -> None:
    p = bundle[1]
    clips = [(tone(15.0, 16000, seed=1), 16000), (np.zeros(0, np.float32), 16000), (tone(3.0, 24000), 24000)]
    with _scorer(bundle, batch_size=2) as s:
        items = list(s.encode(clips))
        assert [type(i) for i in items] == [EncodedItem] * 3
        a, bad, c = items
        assert bad.error and not bad.outputs
        assert a.outputs["wavlm_pooled"].shape == (2, p.L, p.D) and a.outputs["muq_pooled"].shape == (2, p.D2)
        np.testing.assert_allclose(a.weights, [1.0, 0.5], atol=1e-6)
        scores, mean, std = s.run_ensemble(a.outputs)
        assert scores.shape == (2, 3, 4) and mean.shape == std.shape == (2, 4)
        np.testing.assert_allclose(mean, scores.mean(1), atol=1e-5)
        file_members = (scores * a.weights[:, None, None]).sum(0) / a.weights.sum()
        np.testing.assert_allclose(file_members.mean(0), _vec(s.score(clips[0])), atol=1e-5)
        assert c.outputs["wavlm_pooled"].shape[0] == 1
    # window 0 against the numpy maths of the graphs
    x = clips[0][0]
    import soxr

    w24 = soxr.resample(x, 16000, 24000, quality="HQ")[:240000].astype(np.float32)
    ref = window_scores(p, {"wavlm": x[:160000], "muq": w24}, {"wavlm": 160000, "muq": 240000})
    np.testing.assert_allclose(scores[0], ref, atol=1e-4)


def test_non_finite_model_output_becomes_an_error_never_a_null_row(bundle: tuple[Path, Params]) -> None:
    # The last guard: whatever makes the graphs produce NaN/Inf, the row says so instead of carrying nulls.
    with _scorer(bundle) as s:
        run = s.pipeline.run

        def nan_run(*args: Any, **kwargs: Any) -> Any:
            feats, out = run(*args, **kwargs)
            return feats, (np.full_like(out[0], np.nan), out[1], out[2])

        s.pipeline.run = nan_run  # type: ignore[method-assign]
        bad, = s.score([(tone(2.0, 16000), 16000)])
    assert bad.error is not None and "non-finite" in bad.error and bad.scores is None
    row = bad.to_row()
    assert row["error"] and row["PQ"] is None


def test_a_score_result_is_finite_scores_or_an_error() -> None:
    nan = ScoreResult(path="x", scores={a: float("nan") for a in AXES}, std={a: 0.0 for a in AXES})
    assert nan.error is not None and nan.scores is None and not nan.ok
    assert ScoreResult(path="y").error == "no scores were computed for this input"
    fine = ScoreResult(path="z", scores={a: 1.0 for a in AXES}, std={a: 0.0 for a in AXES})
    assert fine.ok and fine.to_row()["PQ"] == 1.0
