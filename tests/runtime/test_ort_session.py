"""The ORT session factory on a fake onnxruntime-gpu: CUDA libraries preloaded, no silent CPU fallback."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from mmmos.runtime.errors import BackendUnavailableError
from mmmos.runtime.ort_session import make_session


class _Options:
    def __init__(self) -> None:
        self.entries: dict[str, str] = {}

    def add_session_config_entry(self, key: str, value: str) -> None:
        self.entries[key] = value


def _fake_ort(calls: list[str], loads_cuda: bool, has_preload: bool = True) -> types.ModuleType:
    ort = types.ModuleType("onnxruntime")

    class Session:
        def __init__(self, graph: str, options: _Options, providers: list[Any]) -> None:
            calls.append("session")
            self.providers = providers
            self.loaded = ["CUDAExecutionProvider", "CPUExecutionProvider"] if loads_cuda \
                else ["CPUExecutionProvider"]

        def get_providers(self) -> list[str]:
            return self.loaded

    ort.SessionOptions = _Options  # type: ignore[attr-defined]
    ort.InferenceSession = Session  # type: ignore[attr-defined]
    ort.get_available_providers = lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]  # type: ignore[attr-defined]
    if has_preload:
        ort.preload_dlls = lambda: calls.append("preload")  # type: ignore[attr-defined]
    return ort


def test_cuda_sessions_preload_the_cuda_and_cudnn_wheels_first(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setitem(sys.modules, "onnxruntime", _fake_ort(calls, loads_cuda=True))
    session = make_session("g.onnx", device="cuda")
    assert calls == ["preload", "session"]
    assert session.providers[0] == ("CUDAExecutionProvider", {"device_id": 0})
    calls.clear()
    make_session("g.onnx", device="cpu")
    assert calls == ["session"]  # the CPU path loads no CUDA libraries


def test_older_ort_without_preload_still_makes_cuda_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setitem(sys.modules, "onnxruntime", _fake_ort(calls, loads_cuda=True, has_preload=False))
    make_session("g.onnx", device="cuda")
    assert calls == ["session"]


def test_a_cuda_session_that_fell_back_to_cpu_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", _fake_ort([], loads_cuda=False))
    with pytest.raises(BackendUnavailableError, match=r"CUDA provider failed to load.*mmmos\[gpu\]"):
        make_session("g.onnx", device="cuda")
