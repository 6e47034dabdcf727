"""`mmmos-score --ray`: Ray Data corpus scoring equals `mmmos-score`, and a killed run resumes exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'mmmos[ray]')")
pytest.importorskip("onnxruntime")

from mmmos.runtime.cli import main as score_main
from mmmos.runtime.inputs import row_key
from mmmos.runtime.serving.ray_scoring import part_files, read_rows


def _clips(folder: Path, n: int, seed: int, max_s: float = 25.0) -> list[Path]:
    """n wav clips of 0.3..max_s s (several windows for some), mixed rates, plus one corrupt file."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        sr = (16000, 22050, 44100)[i % 3]
        x = 0.1 * rng.standard_normal(int(sr * rng.uniform(0.3, max_s))).astype(np.float32)
        p = folder / f"clip{i:03d}.wav"
        sf.write(p, x, sr)
        paths.append(p)
    (folder / "corrupt.wav").write_bytes(b"RIFF not really audio")
    return paths


def _ray_cmd(bundle: Path, clips: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mmmos.runtime.cli", str(clips), "--ray", "--ray-cpus", "2", "--bundle",
            str(bundle), "--backend", "ort-cpu", "--output", str(out), "-q", *extra]


def _env() -> dict[str, str]:
    # A throwaway local instance: no token file written into the user's home.
    return {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _reference(bundle: Path, clips: Path, out: Path) -> dict[tuple, dict]:
    with pytest.raises(SystemExit) as info:
        score_main([str(clips), "--bundle", str(bundle), "--backend", "ort-cpu", "-o", str(out), "-q"])
    assert info.value.code == 1  # the corrupt file fails
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return {row_key(r["path"], r.get("start_time"), r.get("end_time")): r for r in rows}


def _assert_rows_equal(got: list[dict], want: dict[tuple, dict]) -> None:
    keyed = {row_key(r["path"], r.get("start_time"), r.get("end_time")): r for r in got}
    assert len(keyed) == len(got), "an input was written twice"
    assert set(keyed) == set(want)
    for k, w in want.items():
        g = keyed[k]
        assert set(g) == set(w)  # same row schema
        assert g["error"] == w["error"] and g["windows"] == w["windows"]
        if w["error"] is None:
            for a in ("PQ", "PC", "CE", "CU"):
                assert abs(g[a] - w[a]) <= 1e-6 and abs(g["std"][a] - w["std"][a]) <= 1e-6
            assert abs(g["duration_s"] - w["duration_s"]) <= 1e-6


@pytest.mark.slow
def test_ray_scores_a_folder_like_mmmos_score(bundle: tuple[Path, object], tmp_path: Path) -> None:
    root, _ = bundle
    clips = tmp_path / "clips"
    _clips(clips, 40, seed=1)
    want = _reference(root, clips, tmp_path / "ref.jsonl")
    out = tmp_path / "ray_out"
    cmd = _ray_cmd(root, clips, out, "--actors", "2", "--cpus-per-actor", "0.5", "--files-per-batch", "4",
                   "--shard-rows", "16")
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 1, proc.stderr[-3000:]  # 1: the corrupt file has its error row
    assert len(part_files(out)) == 3  # 41 rows in shards of 16
    _assert_rows_equal(read_rows(out), want)
    # A rerun finds every input written and scores nothing.
    again = subprocess.run(_ray_cmd(root, clips, out), env=_env(), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "nothing to do" in again.stderr
    assert len(read_rows(out)) == 41


def test_ray_refuses_a_pool_that_starves_decoding(bundle: tuple[Path, object], tmp_path: Path) -> None:
    root, _ = bundle
    clips = tmp_path / "clips"
    _clips(clips, 2, seed=3, max_s=1.0)
    proc = subprocess.run(_ray_cmd(root, clips, tmp_path / "out", "--actors", "2"), env=_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "lower --actors or --cpus-per-actor" in proc.stderr


@pytest.mark.slow
def test_ray_resumes_after_a_kill(bundle: tuple[Path, object], tmp_path: Path) -> None:
    root, _ = bundle
    clips = tmp_path / "clips"
    paths = _clips(clips, 60, seed=2, max_s=35.0)
    out = tmp_path / "ray_out"
    cmd = _ray_cmd(root, clips, out, "--actors", "1", "--files-per-batch", "1", "--shard-rows", "5")
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            lines = sum(p.read_bytes().count(b"\n") for p in part_files(out))
            if lines >= 8:
                break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray instance it started
        proc.wait(timeout=30)
    first = sum(p.read_bytes().count(b"\n") for p in part_files(out))
    assert 8 <= first < len(paths) + 1, f"the kill did not land part-way ({first} rows)"
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 1, done.stderr[-3000:]
    rows = read_rows(out)
    keys = [r["path"] for r in rows]
    assert sorted(keys) == sorted([str(p) for p in paths] + [str(clips / "corrupt.wav")])  # each exactly once
    assert len({p.name.split("-")[1] for p in part_files(out)}) == 2  # two runs wrote parts


@pytest.mark.parametrize("extra, message", [
    ([], "--ray needs --output DIR"),
    (["-o", "out", "--format", "csv"], "--ray writes jsonl part files"),
    (["-o", "out", "--shard", "0/2"], "drop --shard"),
])
def test_ray_usage_errors(extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        score_main(["clips", "--ray", *extra])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_rerun_refuses_part_files_of_another_model(tmp_path: Path) -> None:
    from mmmos.runtime.bundle import ModelId
    from mmmos.runtime.errors import OutputError
    from mmmos.runtime.serving.ray_scoring import written_keys

    out = tmp_path / "out"
    out.mkdir()
    row = {"path": "a.wav", "PQ": 1.0, "error": None, "model": {"name": "aes", "sha256": "0123456789ab"}}
    (out / "part-00000-00000.jsonl").write_text(json.dumps(row) + "\n")
    assert written_keys(out, ModelId("aes", "0123456789ab")) == {row_key("a.wav")}
    with pytest.raises(OutputError, match="holds rows of model aes@0123456789ab"):
        written_keys(out, ModelId("aes", "ffffffffffff"))
