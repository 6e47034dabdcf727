"""`mmmos-serve` on Triton (PyTriton): concurrent tritonclient requests score like `mmmos-score`, a bad request
gets its own error without failing the requests batched with it, the server stays up and stops on SIGTERM.

PyTriton caps numpy<2, so CI installs it in a separate environment and names its interpreter in
$MMMOS_SERVE_PYTHON; the server runs there and this test talks to it over loopback with tritonclient.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")
httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed")
pytest.importorskip("onnxruntime")

from tritonclient.utils import InferenceServerException  # noqa: E402

from mmmos.runtime.cli import main as score_main  # noqa: E402

AXES = ("PQ", "PC", "CE", "CU")
OUTPUTS = ("scores", "std", "duration_s", "error")


def _serve_python() -> str:
    env = os.environ.get("MMMOS_SERVE_PYTHON")
    if env:
        return env
    if importlib.util.find_spec("pytriton") is not None:
        return sys.executable
    pytest.skip("nvidia-pytriton is not installed here and $MMMOS_SERVE_PYTHON names no environment that has it "
                "(it caps numpy<2; see .ci/run)")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture
def server(bundle: tuple[Path, object], tmp_path: Path):
    """A running `mmmos-serve` on 127.0.0.1 (yields (http_port, grpc_port, process)); stopped at the end."""
    py = _serve_python()
    http_port, grpc_port, metrics_port = _free_ports(3)
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed below
    cmd = [py, "-m", "mmmos.runtime.serving.pytriton_server", "--bundle", str(bundle[0]), "--backend", "ort-cpu",
           "--threads", "1",
           "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port),
           "--max-batch-size", "8", "--max-queue-delay-us", "100000"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
        deadline = time.monotonic() + 150
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mmmos-serve exited ({proc.returncode}):\n{(tmp_path / 'serve.log').read_text()[-4000:]}")
            try:
                if client.is_model_ready("mmmos") and client.is_model_ready("mmmos_file"):
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mmmos-serve not ready in time:\n{(tmp_path / 'serve.log').read_text()[-4000:]}")
            time.sleep(0.5)
        yield http_port, grpc_port, proc, metrics_port
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        log.close()


def _pcm_request(grpc_port: int, pcm: np.ndarray, sr: int, dtype: str = "FP32") -> dict[str, np.ndarray]:
    with grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}") as c:
        x = pcm[None, :].astype(np.float32 if dtype == "FP32" else np.float64)
        inputs = [grpcclient.InferInput("pcm", list(x.shape), dtype),
                  grpcclient.InferInput("sample_rate", [1, 1], "INT32")]
        inputs[0].set_data_from_numpy(x)
        inputs[1].set_data_from_numpy(np.array([[sr]], np.int32))
        res = c.infer("mmmos", inputs, client_timeout=60)
        return {k: res.as_numpy(k)[0] for k in OUTPUTS}


def _file_request(http_port: int, data: bytes) -> dict[str, np.ndarray]:
    c = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}", network_timeout=60)
    inp = httpclient.InferInput("audio", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[data]], dtype=object), binary_data=True)
    res = c.infer("mmmos_file", [inp])
    return {k: res.as_numpy(k)[0] for k in OUTPUTS}


def _error(out: dict[str, np.ndarray]) -> str:
    return bytes(out["error"][0]).decode()


@pytest.mark.slow
def test_serve_scores_concurrent_requests_like_mmmos_score(server, bundle, tmp_path: Path) -> None:
    http_port, grpc_port, proc, _ = server
    rng = np.random.default_rng(7)
    clips = tmp_path / "clips"
    clips.mkdir()
    files = []
    for i in range(12):
        sr = (16000, 24000, 44100)[i % 3]
        seconds = (2.0, 12.5)[i % 2]  # repeated lengths: same-shape requests that Triton may batch
        x = (0.1 * rng.standard_normal(int(sr * seconds))).astype(np.float32)
        p = clips / f"c{i:02d}.wav"
        sf.write(p, x, sr, subtype="FLOAT")  # float WAV: the PCM sent equals what mmmos-score decodes
        files.append(p)
    ref = tmp_path / "ref.jsonl"
    with pytest.raises(SystemExit) as info:
        score_main([str(clips), "--bundle", str(bundle[0]), "--backend", "ort-cpu", "-o", str(ref), "-q"])
    assert info.value.code == 0
    want = {r["path"]: r for r in map(json.loads, ref.read_text().splitlines())}

    # 36 concurrent requests: every file as PCM twice (gRPC) and once as encoded bytes (HTTP).
    jobs = [("pcm", p) for p in files] * 2 + [("file", p) for p in files]

    def call(job: tuple[str, Path]) -> tuple[Path, dict[str, np.ndarray]]:
        kind, p = job
        if kind == "file":
            return p, _file_request(http_port, p.read_bytes())
        x, sr = sf.read(p, dtype="float32")
        return p, _pcm_request(grpc_port, x, sr)

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(call, jobs))
    assert len(results) == 36
    for p, out in results:
        w = want[str(p)]
        assert _error(out) == ""
        np.testing.assert_allclose(out["scores"], [w[a] for a in AXES], atol=1e-5, rtol=0)
        np.testing.assert_allclose(out["std"], [w["std"][a] for a in AXES], atol=1e-5, rtol=0)
        assert abs(float(out["duration_s"][0]) - w["duration_s"]) < 1e-4

    # The health endpoint answers, on loopback.
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=10) as r:
        assert r.status == 200

    # A request Triton itself rejects (wrong dtype) gets an error response; clips the model cannot score get their
    # own `error` and NaN scores; the next good request still succeeds.
    good_x, good_sr = sf.read(files[0], dtype="float32")
    with pytest.raises(InferenceServerException):
        _pcm_request(grpc_port, good_x, good_sr, dtype="FP64")
    bad_calls = [
        (lambda: _pcm_request(grpc_port, np.full(1000, np.nan, np.float32), 16000), "non-finite"),  # NaN audio
        (lambda: _pcm_request(grpc_port, good_x, 0), "sample_rate"),  # impossible sample rate
        (lambda: _file_request(http_port, b"definitely not audio"), "not recognised"),  # undecodable bytes
    ]
    for bad, needle in bad_calls:
        out = bad()
        assert needle in _error(out) and np.isnan(out["scores"]).all()
        again = _pcm_request(grpc_port, good_x, good_sr)
        np.testing.assert_allclose(again["scores"], [want[str(files[0])][a] for a in AXES], atol=1e-5, rtol=0)
    assert proc.poll() is None

    # Stopping: SIGTERM ends the server (and its tritonserver child) cleanly.
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) is not None


def _batched_away(metrics_port: int) -> float:
    """Requests Triton served without an execution of their own, i.e. inside a batch of several (Prometheus
    metrics: inferences minus executions over the two models)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        for name, sign in (("nv_inference_count{", 1.0), ("nv_inference_exec_count{", -1.0)):
            if line.startswith(name) and ('model="mmmos"' in line or 'model="mmmos_file"' in line):
                total += sign * float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.slow
def test_one_bad_request_never_fails_the_others_in_its_batch(server, bundle, tmp_path: Path) -> None:
    http_port, grpc_port, proc, metrics_port = server
    rng = np.random.default_rng(11)
    n = 16000 * 3  # one shape for every request, so that Triton's dynamic batcher may put them together
    good = [(0.1 * rng.standard_normal(n)).astype(np.float32) for _ in range(5)]
    clips = tmp_path / "good"
    clips.mkdir()
    for i, x in enumerate(good):
        sf.write(clips / f"g{i}.wav", x, 16000, subtype="FLOAT")
    ref = tmp_path / "ref.jsonl"
    with pytest.raises(SystemExit):
        score_main([str(clips), "--bundle", str(bundle[0]), "--backend", "ort-cpu", "-o", str(ref), "-q"])
    want = {Path(r["path"]).name: r for r in map(json.loads, ref.read_text().splitlines())}
    pcm_jobs = [(f"g{i}.wav", x, 16000) for i, x in enumerate(good)]
    pcm_jobs += [("nan", np.full(n, np.nan, np.float32), 16000), ("rate0", good[0], 0),
                 ("huge", np.full(n, 1e30, np.float32), 16000)]
    wav = (clips / "g0.wav").read_bytes()
    file_jobs = [("g0.wav", wav), ("bytes", b"definitely not audio"), ("g0.wav", wav), ("empty", b"RIFF")]
    before = _batched_away(metrics_port)

    def call(job: tuple) -> tuple[str, dict[str, np.ndarray]]:
        if len(job) == 3:
            return job[0], _pcm_request(grpc_port, job[1], job[2])
        return job[0], _file_request(http_port, job[1])

    for _ in range(3):  # bursts inside one batching window (100 ms), until Triton batched some together
        with ThreadPoolExecutor(max_workers=len(pcm_jobs) + len(file_jobs)) as pool:
            results = list(pool.map(call, pcm_jobs + file_jobs))
        for name, out in results:
            if name in want:
                assert _error(out) == "", (name, _error(out))
                np.testing.assert_allclose(out["scores"], [want[name][a] for a in AXES], atol=1e-5, rtol=0)
            else:
                assert _error(out) and np.isnan(out["scores"]).all(), (name, out)
        if _batched_away(metrics_port) > before:
            break
    else:
        pytest.fail("Triton never batched the concurrent requests together; the test proved nothing")
    assert proc.poll() is None


def test_serve_without_pytriton_names_the_extra(bundle, capsys: pytest.CaptureFixture[str]) -> None:
    if importlib.util.find_spec("pytriton") is not None:
        pytest.skip("pytriton is installed in this environment")
    from mmmos.runtime.serving.pytriton_server import main as serve_main

    with pytest.raises(SystemExit) as info:
        serve_main(["--bundle", str(bundle[0])])
    assert info.value.code == 2 and "pip install 'mmmos[serve]'" in capsys.readouterr().err
