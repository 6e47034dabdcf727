"""Fake `tensorrt` and `cuda.bindings` modules, so the TensorRT path runs here (no GPU, no TensorRT).

They follow the real APIs the runtime calls (TensorRT 10/11 name-based API, cuda-bindings `(err, value)` tuples),
over real host memory: `cudaMalloc` and `cudaMallocHost` hand out addresses of numpy buffers kept here, and
`cudaMemcpyAsync` is a `memmove` recorded with its kind, so tests see which copies went through pinned memory and
what was freed. The fake parser reads the ONNX graph's inputs, a "plan" is JSON naming that graph and the profile
shapes, and the fake engine runs the graph with ONNX Runtime on the bytes at its input addresses.

`install(monkeypatch, ...)` puts them into `sys.modules`; the code under test imports them as the real ones.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import json
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

VERSION = "10.99.0"
SUCCESS, ERR_MEMORY, ERR_INSUFFICIENT_DRIVER, ERR_NO_DEVICE = 0, 2, 35, 100
_NAMES = {SUCCESS: b"cudaSuccess", ERR_MEMORY: b"cudaErrorMemoryAllocation",
          ERR_INSUFFICIENT_DRIVER: b"cudaErrorInsufficientDriver", ERR_NO_DEVICE: b"cudaErrorNoDevice"}
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(float16)": "float16",
               "tensor(int32)": "int32"}


def _view(ptr: int, nbytes: int) -> np.ndarray:
    return np.ctypeslib.as_array((ctypes.c_ubyte * nbytes).from_address(ptr))


class FakeStream:
    """A cudaStream_t: `int()` gives its address."""

    def __int__(self) -> int:
        return 0xC0FFEE


@dataclass
class Memory:
    """What the fake CUDA runtime allocated and copied."""

    device: dict[int, np.ndarray] = field(default_factory=dict)
    pinned: dict[int, np.ndarray] = field(default_factory=dict)
    copies: list[tuple[str, str | None, str | None, int]] = field(default_factory=list)  # kind, owner of dst, src, n
    mallocs: int = 0

    def owner(self, ptr: int) -> str | None:
        """"device" / "pinned" when `ptr` lies in one of those allocations, else None (pageable host memory)."""
        for kind, pool in (("device", self.device), ("pinned", self.pinned)):
            for base, arr in pool.items():
                if base <= ptr < base + arr.nbytes:
                    return kind
        return None


class FakeCudart(types.ModuleType):
    """`cuda.bindings.runtime` over host memory."""

    def __init__(self, mem: Memory, capability: tuple[int, int], count_error: int, fail_malloc_at: int | None,
                 driver: int, runtime: int) -> None:
        super().__init__("cuda.bindings.runtime")
        self.mem, self.capability, self.count_error, self.fail_malloc_at = mem, capability, count_error, fail_malloc_at
        self.driver, self.runtime = driver, runtime
        self.cudaError_t = types.SimpleNamespace(cudaSuccess=SUCCESS, cudaErrorMemoryAllocation=ERR_MEMORY,
                                                 cudaErrorInsufficientDriver=ERR_INSUFFICIENT_DRIVER,
                                                 cudaErrorNoDevice=ERR_NO_DEVICE)
        self.cudaDeviceAttr = types.SimpleNamespace(cudaDevAttrComputeCapabilityMajor="major",
                                                    cudaDevAttrComputeCapabilityMinor="minor")
        self.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice="H2D", cudaMemcpyDeviceToHost="D2H")
        self.streams: list[FakeStream] = []

    def cudaGetErrorName(self, err: int) -> tuple[int, bytes]:  # noqa: N802
        return SUCCESS, _NAMES.get(err, b"cudaErrorUnknown")

    def cudaGetDeviceCount(self) -> tuple[int, int]:  # noqa: N802
        return (self.count_error, 0) if self.count_error else (SUCCESS, 1)

    def cudaDriverGetVersion(self) -> tuple[int, int]:  # noqa: N802
        return SUCCESS, self.driver

    def cudaRuntimeGetVersion(self) -> tuple[int, int]:  # noqa: N802
        return SUCCESS, self.runtime

    def cudaDeviceGetAttribute(self, attr: str, device: int) -> tuple[int, int]:  # noqa: N802
        return SUCCESS, self.capability[0] if attr == "major" else self.capability[1]

    def cudaStreamCreate(self) -> tuple[int, FakeStream]:  # noqa: N802
        self.streams.append(FakeStream())
        return SUCCESS, self.streams[-1]

    def cudaStreamDestroy(self, stream: FakeStream) -> tuple[int]:  # noqa: N802
        self.streams.remove(stream)
        return (SUCCESS,)

    def cudaStreamSynchronize(self, stream: FakeStream) -> tuple[int]:  # noqa: N802
        return (SUCCESS,)

    def _alloc(self, pool: dict[int, np.ndarray], nbytes: int) -> tuple[int, int]:
        self.mem.mallocs += 1
        if self.fail_malloc_at is not None and self.mem.mallocs == self.fail_malloc_at:
            return ERR_MEMORY, 0
        arr = np.zeros(nbytes, np.uint8)
        pool[arr.ctypes.data] = arr
        return SUCCESS, arr.ctypes.data

    def cudaMalloc(self, nbytes: int) -> tuple[int, int]:  # noqa: N802
        return self._alloc(self.mem.device, nbytes)

    def cudaMallocHost(self, nbytes: int) -> tuple[int, int]:  # noqa: N802
        return self._alloc(self.mem.pinned, nbytes)

    def cudaFree(self, ptr: int) -> tuple[int]:  # noqa: N802
        self.mem.device.pop(ptr)
        return (SUCCESS,)

    def cudaFreeHost(self, ptr: int) -> tuple[int]:  # noqa: N802
        self.mem.pinned.pop(ptr)
        return (SUCCESS,)

    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: str, stream: FakeStream) -> tuple[int]:  # noqa: N802
        assert isinstance(dst, int) and isinstance(src, int) and stream in self.streams
        ctypes.memmove(dst, src, count)
        self.mem.copies.append((kind, self.mem.owner(dst), self.mem.owner(src), count))
        return (SUCCESS,)


@dataclass
class Recorder:
    """What the fake TensorRT did: graphs parsed, profiles set, shapes refused, stream handles used."""

    parsed: list[Path] = field(default_factory=list)
    profiles: list[dict[str, list[list[int]]]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)  # set_input_shape returns False for these inputs
    handles: set[int] = field(default_factory=set)


def _graph_inputs(path: Path) -> dict[str, tuple[int, ...]]:
    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    return {i.name: tuple(d.dim_value if d.HasField("dim_value") else -1 for d in i.type.tensor_type.shape.dim)
            for i in model.graph.input if i.name not in inits}


class _Engine:
    def __init__(self, plan: dict[str, Any], mem: Memory, rec: Recorder) -> None:
        self.plan, self.mem, self.rec = plan, mem, rec
        self.session = ort.InferenceSession(plan["onnx"], providers=["CPUExecutionProvider"])
        self.ins = {i.name: _ORT_DTYPES[i.type] for i in self.session.get_inputs()}
        self.outs = {o.name: _ORT_DTYPES[o.type] for o in self.session.get_outputs()}
        self.names = [*self.ins, *self.outs]
        zeros = {n: np.zeros((1, *r[0][1:]), dtype) for n, dtype in self.ins.items() for r in [plan["shapes"][n]]}
        self.out_rest = {n: v.shape[1:] for n, v in zip(self.outs, self.session.run(None, zeros), strict=True)}

    num_io_tensors = property(lambda self: len(self.names))

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> str:
        return "in" if name in self.ins else "out"

    def get_tensor_dtype(self, name: str) -> str:
        return {**self.ins, **self.outs}[name]

    def get_tensor_profile_shape(self, name: str, index: int) -> list[tuple[int, ...]]:
        return [tuple(s) for s in self.plan["shapes"][name]]

    def create_execution_context(self) -> _Context:
        return _Context(self)


class _Context:
    def __init__(self, engine: _Engine) -> None:
        self.e = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        lo, _, hi = self.e.plan["shapes"][name]
        ok = (name not in self.e.rec.refuse and len(shape) == len(lo)
              and all(a <= d <= b for a, d, b in zip(lo, shape, hi, strict=True)))
        if ok:
            self.shapes[name] = tuple(shape)
        return ok

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if name in self.e.ins:
            return self.shapes[name]
        return (next(iter(self.shapes.values()))[0], *self.e.out_rest[name])

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = int(ptr)
        return True

    def execute_async_v3(self, handle: int) -> bool:
        assert isinstance(handle, int)
        self.e.rec.handles.add(handle)
        feeds = {}
        for n, dtype in self.e.ins.items():
            shape, item = self.shapes[n], np.dtype(dtype).itemsize
            assert self.e.mem.owner(self.addresses[n]) == "device", f"input {n} is not in device memory"
            feeds[n] = _view(self.addresses[n], int(np.prod(shape)) * item).view(dtype).reshape(shape).copy()
        for n, value in zip(self.e.outs, self.e.session.run(list(self.e.outs), feeds), strict=True):
            value = np.ascontiguousarray(value, dtype=self.e.outs[n])
            assert self.e.mem.owner(self.addresses[n]) == "device", f"output {n} is not in device memory"
            ctypes.memmove(self.addresses[n], value.ctypes.data, value.nbytes)
        return True


def _make_trt(mem: Memory, rec: Recorder) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = VERSION

    class Logger:
        WARNING, ERROR = "warning", "error"

        def __init__(self, level: str) -> None:
            self.level = level

    class Network:
        def __init__(self) -> None:
            self.inputs: dict[str, tuple[int, ...]] = {}
            self.onnx: Path | None = None

        num_inputs = property(lambda self: len(self.inputs))

        def get_input(self, i: int) -> Any:
            name = list(self.inputs)[i]
            return types.SimpleNamespace(name=name, shape=self.inputs[name])

    class OnnxParser:
        def __init__(self, network: Network, logger: Logger) -> None:
            self.network, self.errors = network, []

        def parse_from_file(self, path: str) -> bool:
            rec.parsed.append(Path(path))
            self.network.onnx = Path(path)
            self.network.inputs = _graph_inputs(Path(path))
            return True

        num_errors = property(lambda self: len(self.errors))

        def get_error(self, i: int) -> str:
            return self.errors[i]

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, list[list[int]]] = {}

        def set_shape(self, name: str, lo: tuple[int, ...], opt: tuple[int, ...], hi: tuple[int, ...]) -> None:
            self.shapes[name] = [list(lo), list(opt), list(hi)]

    class Config:
        def __init__(self) -> None:
            self.profiles: list[Profile] = []

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            pass

        def add_optimization_profile(self, profile: Profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, blob: bytes) -> Any:
            return types.SimpleNamespace(serialize=lambda: b"timing")

        def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
            self.cache = cache
            return True

        def get_timing_cache(self) -> Any:
            return self.cache

    class Builder:
        def __init__(self, logger: Logger) -> None:
            pass

        def create_network(self, flags: int) -> Network:
            assert flags == 1 << 1  # STRONGLY_TYPED
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            (profile,) = config.profiles
            assert set(profile.shapes) == set(network.inputs), "every input needs a profile shape"
            rec.profiles.append(profile.shapes)
            return json.dumps({"onnx": str(network.onnx), "shapes": profile.shapes}).encode()

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            pass

        def deserialize_cuda_engine(self, blob: bytes) -> _Engine | None:
            try:
                plan = json.loads(blob)
            except ValueError:
                return None  # what TensorRT does with a plan of another version or GPU
            return _Engine(plan, mem, rec)

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, OnnxParser, Runtime
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.nptype = np.dtype
    return trt


@dataclass
class FakeGpu:
    """The installed fakes and what they recorded."""

    trt: types.ModuleType
    cudart: FakeCudart
    utils: types.ModuleType
    mem: Memory
    rec: Recorder

    def live(self) -> tuple[int, int]:
        """(device buffers, pinned buffers) not freed yet."""
        return len(self.mem.device), len(self.mem.pinned)



def install(monkeypatch: pytest.MonkeyPatch, *, capability: tuple[int, int] = (9, 0), count_error: int = SUCCESS,
            fail_malloc_at: int | None = None, native_handle: Any = int, driver: int = 12040,
            runtime: int = 12090) -> FakeGpu:
    """Put fake `tensorrt` and `cuda.bindings` (runtime, utils) into sys.modules for one test.

    Args:
        capability: compute capability of the fake GPU.
        count_error: a CUDA error cudaGetDeviceCount returns (e.g. 35, an old driver).
        fail_malloc_at: the n-th allocation (device or pinned, counted together) fails with an out-of-memory error.
        native_handle: `cuda.bindings.utils.get_cuda_native_handle` (None: utils has no such function).
        driver, runtime: what cudaDriverGetVersion / cudaRuntimeGetVersion report (12040 = CUDA 12.4).
    """
    mem, rec = Memory(), Recorder()
    cudart = FakeCudart(mem, capability, count_error, fail_malloc_at, driver, runtime)
    utils = types.ModuleType("cuda.bindings.utils")
    if native_handle is not None:
        utils.get_cuda_native_handle = native_handle
    cuda, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    cuda.bindings, bindings.runtime, bindings.utils = bindings, cudart, utils
    trt = _make_trt(mem, rec)
    for name, module in (("tensorrt", trt), ("cuda", cuda), ("cuda.bindings", bindings),
                         ("cuda.bindings.runtime", cudart), ("cuda.bindings.utils", utils)):
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        monkeypatch.setitem(sys.modules, name, module)
    return FakeGpu(trt, cudart, utils, mem, rec)

