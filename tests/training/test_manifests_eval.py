"""Manifests (challenge CSV, Audiobox JSONL, skipped rows) and mmmos-eval on files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import stats
from typer.testing import CliRunner

from mmmos.training.eval_cli import app as eval_app
from mmmos.training.manifests import load_manifest


def _wav(path: Path, seconds: float = 0.5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(16000 * seconds), np.float32), 16000)
    return path


def test_challenge_csv_with_placeholder_and_bad_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _wav(tmp_path / "audio" / "a.wav")
    (tmp_path / "audio" / "broken.wav").write_bytes(b"not audio at all")
    csv = tmp_path / "lists" / "train.csv"
    csv.parent.mkdir()
    csv.write_text(
        "sample_id,data_path,Production_Quality,Production_Complexity,Content_Enjoyment,Content_Usefulness\n"
        "s1,/your_path/audio/a.wav,7.5,2.0,5.0,6.0\n"
        "s2,/your_path/audio/missing.wav,1,2,3,4\n"
        "s3,/your_path/audio/broken.wav,1,2,3,4\n"
    )
    m = load_manifest(csv, root=tmp_path)
    assert [c.id for c in m.clips] == ["s1"]
    assert m.clips[0].labels == (7.5, 2.0, 5.0, 6.0)  # PQ, PC, CE, CU
    assert m.clips[0].path == str(tmp_path / "audio" / "a.wav")
    assert len(m.skipped) == 2
    err = capsys.readouterr().err
    assert "skipped 2 of 3 rows" in err and "missing.wav (missing)" in err and "unreadable" in err


def test_jsonl_spelled_out_and_rating_lists(tmp_path: Path) -> None:
    _wav(tmp_path / "x.wav")
    _wav(tmp_path / "y.flac")
    jl = tmp_path / "m.jsonl"
    rows = [
        {"path": "x.wav", "PQ": 6, "PC": 3, "CE": 5, "CU": 7},
        {"path": "y.flac", "Production_Quality": [6, 8], "production_complexity": 2, "Content_Enjoyment": 1,
         "Content_Usefulness": 9, "system": "s"},
    ]
    jl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    m = load_manifest(jl)  # relative to the manifest's folder
    assert [c.labels for c in m.clips] == [(6, 3, 5, 7), (7, 2, 1, 9)]
    assert m.clips[1].system == "s" and not m.skipped
    unlabelled = tmp_path / "u.jsonl"
    unlabelled.write_text(json.dumps({"path": "x.wav"}) + "\n")
    m = load_manifest(unlabelled, warn=False)
    assert math.isnan(m.clips[0].labels[0]) and not m.clips[0].labelled
    assert load_manifest(unlabelled, require_labels=True, warn=False).skipped[0][1] == "missing label(s)"


def test_eval_cli_matches_scipy(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 60
    truth = rng.uniform(1, 9, size=(n, 4))
    pred = truth + rng.normal(0, 1, size=(n, 4))
    ids = [f"audiomos2025-track2-sys{k % 5}-utt{k:03d}" for k in range(n)]
    tpath = tmp_path / "truth.csv"
    tpath.write_text(
        "sample_id,data_path,Production_Quality,Production_Complexity,Content_Enjoyment,Content_Usefulness\n"
        + "".join(f"{i},/your_path/{i}.wav,{','.join(map(str, t.tolist()))}\n" for i, t in zip(ids, truth, strict=True))
    )
    ppath = tmp_path / "answer.txt"  # headerless challenge submission, shuffled, plus one stray row
    order = rng.permutation(n)
    ppath.write_text("".join(f"{ids[k]},{','.join(map(str, pred[k].tolist()))}\n" for k in order) + "stray,1,2,3,4\n")
    res = CliRunner().invoke(eval_app, [str(ppath), str(tpath), "--json", str(tmp_path / "m.json")])
    assert res.exit_code == 0, res.output
    assert "utterance" in res.output and "1 prediction rows unmatched" in res.output
    out = json.loads((tmp_path / "m.json").read_text())
    assert out["counts"] == {"n_utterances": n, "n_systems": 5}
    assert out["utterance"]["CE"]["SRCC"] == pytest.approx(stats.spearmanr(truth[:, 2], pred[:, 2])[0], abs=1e-9)
    sys_t = np.array([truth[np.arange(n) % 5 == s].mean(0) for s in range(5)])
    sys_p = np.array([pred[np.arange(n) % 5 == s].mean(0) for s in range(5)])
    assert out["system"]["PQ"]["KTAU"] == pytest.approx(stats.kendalltau(sys_t[:, 0], sys_p[:, 0])[0], abs=1e-9)
