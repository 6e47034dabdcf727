"""TensorRT backend: `tensorrt` (10.12+ / 11.x) + `cuda-bindings`, no torch, no PyCUDA.

Runners are handed plan files; building, keys and lookup live in `trt_engine.py` (shared with mmmos-export and
mmmos-calibrate). Name-based API only (`set_input_shape` -> `set_tensor_address` -> `execute_async_v3`), every
`set_input_shape` checked. Each tensor has a device buffer and a pinned (page-locked) host staging buffer, both
sized at the profile max when the runner is activated: host arrays are copied into the pinned buffer and then
`cudaMemcpyAsync`'d (a copy from pageable memory would be synchronous), outputs come back device -> pinned and
are copied out after the stream is synchronized. Encoder outputs stay in device buffers that the ensemble engine
reads directly.

Untested on a GPU (none where it was written); tests run it against fake `tensorrt`/`cudart` modules.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import Bundle
from .errors import BackendUnavailableError, NoEnsembleError
from .names import GraphKey
from .runner import EncoderBatch, EnsembleOut, Pipeline, Runner
from .trt_engine import (
    TIMING_CACHE,
    BatchProfile,
    build_engine,
    check_cuda,
    engine_key,
    engine_roots,
    foreign_engine_dirs,
    graph_digest,
    matching_engine_dirs,
    open_gpu,
    plan_name,
    profile_shapes,
    samples_ranges,
    stale_plans,
)


def stream_handle(stream: Any) -> int:
    """The raw `cudaStream_t` address that `execute_async_v3` wants."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle  # type: ignore[import-not-found]

        return int(get_cuda_native_handle(stream))
    except (ImportError, AttributeError, TypeError):
        # cuda-bindings before 12.9.1 has no utils.get_cuda_native_handle; int(stream) is the same address there.
        # Any other error (a CUDA one) is real and propagates.
        return int(stream)


@dataclass
class Buffer:
    """One tensor's memory: a device buffer and a pinned host staging buffer of `nbytes` each."""

    device: int
    host: int
    nbytes: int
    dtype: np.dtype


class TrtRunner(Runner):
    """One TensorRT plan with device and pinned host buffers allocated at its profile's max shapes.

    Inputs may be host arrays (staged through the runner's pinned buffers) or device pointers of another
    runner's outputs (`external`), which is how encoder outputs feed the ensemble without a copy. One `enqueue`
    per stream sync: the next `enqueue` reuses the staging buffers.
    """

    def __init__(self, plan_path: Path, trt: Any, cudart: Any, stream: Any, handle: int | None = None) -> None:
        super().__init__(plan_path.name)
        self.plan_path = plan_path
        self.trt, self.cudart, self.stream = trt, cudart, stream
        self.handle = stream_handle(stream) if handle is None else handle
        self.runtime: Any = None
        self.engine: Any = None
        self.context: Any = None
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.buffers: dict[str, Buffer] = {}
        self._device: list[int] = []  # every pointer allocated so far, freed even after a half-done activation
        self._host: list[int] = []

    def _ck(self, ret: Any) -> Any:
        return check_cuda(self.cudart, ret)

    def _set_shape(self, name: str, shape: tuple[int, ...]) -> None:
        if not self.context.set_input_shape(name, tuple(int(d) for d in shape)):
            raise RuntimeError(f"TensorRT engine {self.name} refuses shape {tuple(shape)} for input {name!r} "
                               "(outside its profile); rebuild the engine or lower --batch-size")

    def activate_impl(self) -> None:
        """Deserialize the plan (RuntimeError if it was built by another TensorRT/GPU) and allocate buffers."""
        trt, cudart = self.trt, self.cudart
        try:
            self.runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))  # kept: the engine is only valid with it
            self.engine = self.runtime.deserialize_cuda_engine(self.plan_path.read_bytes())
            if self.engine is None:
                raise RuntimeError(f"engine {self.plan_path} does not load on this TensorRT/GPU")
            self.context = self.engine.create_execution_context()
            if self.context is None:
                raise RuntimeError(f"TensorRT cannot create an execution context for {self.plan_path} (GPU memory?)")
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
            for n in self.inputs:  # size everything at the profile max, once
                self._set_shape(n, tuple(self.engine.get_tensor_profile_shape(n, 0)[2]))
            for n in names:
                dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(n)))
                nbytes = max(int(np.prod(tuple(self.context.get_tensor_shape(n)))) * dtype.itemsize, 1)
                device = int(self._ck(cudart.cudaMalloc(nbytes)))
                self._device.append(device)
                host = int(self._ck(cudart.cudaMallocHost(nbytes)))
                self._host.append(host)
                self.buffers[n] = Buffer(device, host, nbytes, dtype)
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        """Drop the context and engine, then free every buffer allocated so far (errors ignored: nothing to do)."""
        self.context = self.engine = self.runtime = None
        for ptr in self._device:
            self.cudart.cudaFree(ptr)
        for ptr in self._host:
            self.cudart.cudaFreeHost(ptr)
        self._device, self._host = [], []
        self.buffers = {}

    def _staging(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A numpy view of a tensor's pinned host buffer with `shape`."""
        buf = self.buffers[name]
        raw = np.ctypeslib.as_array((ctypes.c_ubyte * buf.nbytes).from_address(buf.host))
        return raw.view(buf.dtype)[: int(np.prod(shape))].reshape(shape)

    def max_batch(self) -> int:
        """Largest batch the engine's profile accepts."""
        return int(self.engine.get_tensor_profile_shape(self.inputs[0], 0)[2][0])

    def enqueue(self, host: dict[str, np.ndarray], external: dict[str, tuple[int, tuple[int, ...]]]) -> None:
        """Set shapes and addresses, stage host inputs and launch on the stream (no sync).

        Args:
            host: input name -> host array, copied into this runner's pinned buffer, then to its device buffer.
            external: input name -> (device pointer, shape) owned by another runner.

        Raises:
            ValueError: an input is larger than the profile allows.
            RuntimeError: TensorRT refused a shape or the launch.
        """
        cudart = self.cudart
        for n in self.inputs:
            if n in external:
                ptr, shape = external[n]
                self._set_shape(n, shape)
                self.context.set_tensor_address(n, ptr)
                continue
            arr, buf = np.asarray(host[n]), self.buffers[n]
            nbytes = arr.size * buf.dtype.itemsize
            if nbytes > buf.nbytes:
                raise ValueError(f"batch too large for engine {self.name}: {arr.shape} exceeds its profile")
            self._set_shape(n, arr.shape)
            np.copyto(self._staging(n, arr.shape), arr, casting="unsafe")
            self._ck(cudart.cudaMemcpyAsync(buf.device, buf.host, nbytes,
                                            cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))
            self.context.set_tensor_address(n, buf.device)
        for n in self.outputs:
            self.context.set_tensor_address(n, self.buffers[n].device)
        if not self.context.execute_async_v3(self.handle):
            raise RuntimeError(f"TensorRT failed to enqueue {self.name}")

    def output_shape(self, name: str) -> tuple[int, ...]:
        """Shape of an output for the shapes set by the last enqueue."""
        return tuple(int(d) for d in self.context.get_tensor_shape(name))

    def stage_output(self, name: str) -> tuple[int, ...]:
        """Queue the copy of an output into its pinned buffer; read it with `read_output` after `sync`."""
        shape = self.output_shape(name)
        buf = self.buffers[name]
        self._ck(self.cudart.cudaMemcpyAsync(buf.host, buf.device, int(np.prod(shape)) * buf.dtype.itemsize,
                                             self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
        return shape

    def read_output(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A copy of a staged output (only valid after `sync`: the copy into the pinned buffer is async)."""
        return self._staging(name, shape).copy()

    def sync(self) -> None:
        """Wait for the stream."""
        self._ck(self.cudart.cudaStreamSynchronize(self.stream))

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Host in, host out."""
        self.enqueue(feeds, {})
        shapes = {n: self.stage_output(n) for n in self.outputs}
        self.sync()
        return {n: self.read_output(n, s) for n, s in shapes.items()}

    def deactivate_impl(self) -> None:
        """Free the buffers (device and pinned) and the engine."""
        self._release()


class TrtPipeline(Pipeline):
    """A bundle's graphs as TensorRT engines sharing one CUDA stream.

    Plans are looked up by graph key (int8 on TensorRT is the `int8-trt` graph) and by the graph's sha256 in the
    bundle's `engines/`, then in the user cache folder; a missing or unloadable one is built into the cache.

    Raises:
        BackendUnavailableError: tensorrt/cuda-bindings missing, no GPU, or an engine neither loads nor builds.
    """

    name = "tensorrt"

    def __init__(self, bundle: Bundle, graphs: GraphKey, batch_size: int = 8,
                 log: Callable[[str], None] | None = None) -> None:
        super().__init__(bundle, graphs)
        self.log = log or (lambda _m: None)
        self.gpu = open_gpu()
        self.trt, self.cudart, self.cc = self.gpu.trt, self.gpu.cudart, self.gpu.capability
        self.batch_size = max(1, int(batch_size))
        self.roots = engine_roots(bundle)
        self.candidates = matching_engine_dirs(self.roots, self.gpu.prefix, self.batch_size)
        foreign = foreign_engine_dirs(self.roots, self.gpu.prefix)
        if foreign and not self.candidates:
            self.log(f"TensorRT engines {foreign} were built by another TensorRT/GPU or for smaller batches "
                     f"(this is {self.gpu.prefix}, batch {self.batch_size}); building engines for this one")
        self.files: dict[str, str] = dict(bundle.manifest.get("files") or {})
        self.encoders: dict[str, TrtRunner] = {}
        self.ensemble: TrtRunner | None = None
        self.stream = check_cuda(self.cudart, self.cudart.cudaStreamCreate())
        try:
            self.handle = stream_handle(self.stream)
            for e in bundle.encoders:
                self.encoders[e.name] = self._runner(bundle.encoder_graph(e, graphs))
            if bundle.has_ensemble:
                self.ensemble = self._runner(bundle.ensemble_graph(graphs))
        except BaseException:
            self.close()
            raise

    def _new_runner(self, plan: Path) -> TrtRunner:
        runner = TrtRunner(plan, self.trt, self.cudart, self.stream, self.handle)
        runner.activate()
        return runner

    def _runner(self, onnx_path: Path) -> TrtRunner:
        """Load the plan of a graph (matched by its sha256), building it when absent or unloadable."""
        graph = onnx_path.relative_to(self.bundle.root).as_posix()
        digest = graph_digest(self.bundle.root, graph, self.files)
        name = plan_name(graph, digest)
        for folder in self.candidates:
            if (folder / name).is_file():
                try:
                    return self._new_runner(folder / name)
                except RuntimeError as exc:
                    self.log(f"warning: {exc}; trying another or rebuilding it")
        stale = stale_plans(self.candidates, graph, digest)
        if stale:
            self.log(f"TensorRT plans {stale} were built from another version of {graph} (re-exported or "
                     "recalibrated since) and are not used; building one for this graph")
        profile = BatchProfile(1, min(8, self.batch_size), self.batch_size)
        key = engine_key(self.gpu.version, self.cc, profile)
        # The user cache first: a bundle folder is what export and calibration wrote, verified, often read-only.
        target = next((d for d in (self.roots[1] / key, self.roots[0] / key) if _writable(d)), None)
        if target is None:
            raise BackendUnavailableError(f"no writable folder to build TensorRT engines in ({self.roots[1]}); "
                                          f"set $MMMOS_CACHE_DIR to a writable folder")
        try:
            span = samples_ranges(self.bundle.encoders, self.graphs).get(graph)
            build_engine(self.trt, onnx_path, target / name, lambda ins: profile_shapes(ins, profile, span), self.log,
                         target / TIMING_CACHE)
            return self._new_runner(target / name)
        except (RuntimeError, ValueError) as exc:
            raise BackendUnavailableError(str(exc)) from None

    def run(
        self, batch: EncoderBatch, *, want_features: bool, want_scores: bool = True
    ) -> tuple[dict[str, np.ndarray], EnsembleOut | None]:
        """Encoders then ensemble on one stream; encoder outputs stay on the device unless asked for."""
        if want_scores and self.ensemble is None:
            raise NoEnsembleError(self.bundle)
        for name, (wav, lengths) in batch.items():
            self.encoders[name].enqueue({"wav": wav, "lengths": lengths}, {})
        staged: list[tuple[TrtRunner, str, tuple[int, ...]]] = []
        if want_scores:
            assert self.ensemble is not None
            external = {o: (r.buffers[o].device, r.output_shape(o)) for r in self.encoders.values() for o in r.outputs}
            self.ensemble.enqueue({}, {k: v for k, v in external.items() if k in self.ensemble.inputs})
            staged += [(self.ensemble, o, self.ensemble.stage_output(o)) for o in self.ensemble.outputs]
        if want_features:
            staged += [(r, o, r.stage_output(o)) for r in self.encoders.values() for o in r.outputs]
        check_cuda(self.cudart, self.cudart.cudaStreamSynchronize(self.stream))  # one stream: waits for every copy
        out = {(id(r), o): r.read_output(o, s) for r, o, s in staged}
        feats = {o: out[id(r), o] for r, o, _ in staged if r is not self.ensemble}
        scores = None
        if want_scores:
            assert self.ensemble is not None
            scores = (out[id(self.ensemble), "scores"], out[id(self.ensemble), "mean"], out[id(self.ensemble), "std"])
        return feats, scores

    def close(self) -> None:
        """Free every engine and buffer, then the stream."""
        for r in [*getattr(self, "encoders", {}).values(), getattr(self, "ensemble", None)]:
            if r is not None:
                r.deactivate()
        if getattr(self, "stream", None) is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)
