"""Calibrated intervals and the out-of-domain score, end to end: `mmmos-calibrate --targets` fits them on labelled
clips made here, and rows of held-out clips then carry intervals with the nominal coverage, and an `ood` flag that
pure tones raise and speech-like clips do not."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mmmos import AXES
from mmmos.calibration.calibrate import CalibrationOptions, calibrate_bundle
from mmmos.runtime import Scorer
from mmmos.runtime.uncertainty import conformal_quantile, fit_conformal, fit_ood

from ..bundle_factory import make_bundle

SR = 16000


def _speech_like(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Syllables of a gliding harmonic voice with breath noise and pauses (varied pitch, rate and level)."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = rng.uniform(90, 220) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6)), 0, None) ** 2
    x = voice * syllables + 0.05 * rng.standard_normal(t.size)
    return (rng.uniform(0.1, 0.5) * x / np.max(np.abs(x))).astype(np.float32)


def _tone(seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.4 * np.sin(2 * np.pi * rng.uniform(300, 3000) * t)).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A bundle, 150 labelled calibration clips and 150 held-out labelled test clips (labels: score + noise)."""
    root = tmp_path_factory.mktemp("unc")
    bundle = root / "bundle"
    make_bundle(bundle, seed=4)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(300):
        p = root / "clips" / f"s{i:03d}.wav"
        p.parent.mkdir(exist_ok=True)
        sf.write(p, _speech_like(rng.uniform(1.0, 3.0), rng), SR)
        paths.append(p)
    with Scorer(bundle, backend="ort-cpu", threads=1, warn=lambda _m: None) as s:
        results = s.score(paths)
    scores = np.array([[r.scores[a] for a in AXES] for r in results])
    spread = np.array([[r.std[a] for a in AXES] for r in results])
    # labels scatter around the model's scores, more where the members disagree (what scaling can exploit)
    labels = scores + rng.standard_normal(scores.shape) * (0.2 + 0.5 * spread)
    manifests = {}
    for name, idx in (("calib", range(0, 150)), ("test", range(150, 300))):
        manifests[name] = root / f"{name}.csv"
        with open(manifests[name], "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["data_path", "Production_Quality", "Production_Complexity", "Content_Enjoyment",
                        "Content_Usefulness"])
            for i in idx:
                w.writerow([str(paths[i]), *labels[i]])
    return {"bundle": bundle, "paths": paths, "labels": labels, **manifests}


def test_intervals_reach_the_nominal_coverage_on_held_out_clips(corpus: dict) -> None:
    block = calibrate_bundle(corpus["bundle"], corpus["calib"],
                             CalibrationOptions(int8=False, targets=corpus["calib"]), log=lambda _m: None)
    assert block["conformal"]["n"] == 150 and block["ood_reference"]["n"] == 150
    test = corpus["paths"][150:]
    for coverage in (0.9, 0.8):
        with Scorer(corpus["bundle"], backend="ort-cpu", threads=1, warn=lambda _m: None) as s:
            s.settings = s.settings.with_changes(coverage=coverage)
            rows = [r.to_row() for r in s.score(test)]
        for k, a in enumerate(AXES):
            inside = [lo <= y <= hi for (lo, hi), y in zip((r["interval"][a] for r in rows),
                                                             corpus["labels"][150:, k], strict=True)]
            # 150 held-out clips: sampling alone moves the coverage by a few points around the nominal one
            assert coverage - 0.1 <= np.mean(inside) <= min(coverage + 0.1, 1.0), (a, coverage, np.mean(inside))
    assert any(block["conformal"]["scaled_by_ensemble_spread"].values())  # the spread predicted the errors


@pytest.fixture(scope="module")
def tiny_real_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real tiny architectures with random weights (the numpy test bundle's encoders average too much away)."""
    pytest.importorskip("torch", reason="building the tiny bundle needs the export extra (torch)")
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("ood") / "bundle"
    cmd = [sys.executable, "-m", "mmmos.export.cli", str(root), "--random-init", "--preset", "tiny",
           "--num-members", "3", "--no-trt", "--no-fp16"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return root


def test_pure_tones_are_flagged_and_held_out_speech_is_not(tiny_real_bundle: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    refs = tmp_path / "speech"
    refs.mkdir()
    for i in range(40):
        sf.write(refs / f"r{i:02d}.wav", _speech_like(rng.uniform(1.0, 3.0), rng), SR)
    block = calibrate_bundle(tiny_real_bundle, refs, CalibrationOptions(int8=False), log=lambda _m: None)
    assert block["ood_reference"]["n"] == 40
    held_out = [(_speech_like(rng.uniform(1.0, 3.0), rng), SR) for _ in range(20)]
    tones = [(_tone(2.0, rng), SR) for _ in range(10)]
    with Scorer(tiny_real_bundle, backend="ort-cpu", threads=1, warn=lambda _m: None) as s:
        foreign, speech = s.score(tones), s.score(held_out)
    assert all(r.ood is not None and r.ood["flag"] for r in foreign), [r.ood for r in foreign]
    assert sum(bool(r.ood and r.ood["flag"]) for r in speech) <= 2, [r.ood for r in speech]
    assert min(r.ood["score"] for r in foreign) > max(r.ood["score"] for r in speech)  # type: ignore[index]
    row = speech[0].to_row()
    assert set(row["ood"]) == {"score", "flag"} and "interval" not in row  # no labelled set: no intervals


def test_conformal_quantile_and_fit_rules() -> None:
    scores = np.arange(1.0, 20.0)  # 19 scores: a 90% interval is the 18th smallest
    assert conformal_quantile(scores, 0.9) == 18.0 and conformal_quantile(scores[:5], 0.9) == float("inf")
    rng = np.random.default_rng(1)
    pred = rng.uniform(2, 8, (200, 4))
    with pytest.raises(ValueError, match="at least 10"):
        fit_conformal(pred[:5], np.zeros((5, 4)), pred[:5])
    one_member = fit_conformal(pred, np.zeros((200, 4)), pred + rng.standard_normal((200, 4)))
    assert not any(c.scaled for c in one_member.axes.values())  # no spread to scale by
    with pytest.raises(ValueError, match="at least 10 clips"):
        fit_ood(np.zeros((5, 8)))
