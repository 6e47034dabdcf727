"""TensorRT backend: `tensorrt` (10.x / 11.x) + `cuda-bindings`, no torch, no PyCUDA.

Name-based API only (`set_input_shape` -> `set_tensor_address` -> `execute_async_v3`). Engines are
strongly typed (precision comes from the ONNX graph: fp16 graphs give fp16 engines), keyed by
TensorRT version, GPU compute capability and batch profile, and (re)built from the bundle's ONNX when
missing or unloadable. Encoder outputs stay in device buffers that the ensemble engine reads directly.

Untested on the build machine (no GPU, no TensorRT); its tests skip when tensorrt is absent.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import Bundle, cache_dir
from .errors import BackendUnavailableError, NoEnsembleError
from .names import GraphKey
from .runner import EncoderBatch, EnsembleOut, Pipeline, Runner


def import_trt() -> tuple[Any, Any]:
    """Import tensorrt and cuda.bindings.runtime, or raise an error naming the extra to install."""
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
    except ImportError as exc:
        raise BackendUnavailableError(
            f"{exc.name or 'tensorrt'} is not installed; install mmmos[trt-cu12] or mmmos[trt-cu13] (TensorRT and "
            "cuda-bindings of the CUDA major your NVIDIA driver supports)"
        ) from None
    return trt, cudart


def check_cuda(cudart: Any, ret: Any) -> Any:
    """Unpack a cuda-bindings `(err, *values)` tuple, raising RuntimeError on a CUDA error."""
    err, *rest = ret if isinstance(ret, tuple) else (ret,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA error {cudart.cudaGetErrorName(err)[1]!r}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def compute_capability(cudart: Any) -> tuple[int, int]:
    """Compute capability of GPU 0, or BackendUnavailableError when there is no usable GPU."""
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or not count:
        raise BackendUnavailableError("no CUDA GPU is visible (or the NVIDIA driver is missing)")
    attr = cudart.cudaDeviceAttr
    major = check_cuda(cudart, cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, 0))
    minor = check_cuda(cudart, cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, 0))
    return int(major), int(minor)


def engine_key(trt_version: str, cc: tuple[int, int], profile: tuple[int, int, int]) -> str:
    """Folder name of an engine set, as mmmos-export writes it: `<trt_version>-sm<cc>-b<min>-<opt>-<max>`."""
    return f"{trt_version}-sm{cc[0]}{cc[1]}-b{profile[0]}-{profile[1]}-{profile[2]}"


_KEY_RE = re.compile(r"^(?P<prefix>.+-sm\d+)-b(?P<min>\d+)-(?P<opt>\d+)-(?P<max>\d+)$")


def matching_engine_dirs(roots: list[Path], trt_version: str, cc: tuple[int, int], batch_size: int) -> list[Path]:
    """Engine folders built by this TensorRT for this GPU whose profile covers batches 1..batch_size.

    Sorted by profile max (the smallest that fits uses the least memory). Folders of other TensorRT
    versions or GPUs are ignored: their plans would not deserialize.
    """
    prefix = f"{trt_version}-sm{cc[0]}{cc[1]}"
    found: list[tuple[int, Path]] = []
    for root in roots:
        if not root.is_dir():
            continue
        for d in root.iterdir():
            m = _KEY_RE.match(d.name)
            if d.is_dir() and m and m["prefix"] == prefix and int(m["min"]) <= 1 <= batch_size <= int(m["max"]):
                found.append((int(m["max"]), d))
    return [d for _, d in sorted(found, key=lambda t: (t[0], str(t[1])))]


def foreign_engine_dirs(roots: list[Path], trt_version: str, cc: tuple[int, int]) -> list[str]:
    """Names of engine folders built by another TensorRT version or GPU (for the rebuild message)."""
    prefix = f"{trt_version}-sm{cc[0]}{cc[1]}-"
    return sorted(d.name for r in roots if r.is_dir() for d in r.iterdir()
                  if d.is_dir() and _KEY_RE.match(d.name) and not d.name.startswith(prefix))


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def engine_roots(bundle: Bundle) -> list[Path]:
    """Where engines are looked for: the bundle's `engines/`, then a per-bundle user cache folder."""
    tag = hashlib.sha256((bundle.root / "manifest.json").read_bytes()).hexdigest()[:16]
    return [bundle.engines_dir(), cache_dir() / "engines" / tag]


def build_engine(trt: Any, onnx_path: Path, plan_path: Path, profile: tuple[int, int, int],
                 log: Callable[[str], None]) -> None:
    """Build a strongly typed engine for `onnx_path` with one batch profile (min, opt, max).

    Raises:
        RuntimeError: the parser or the builder failed (the message lists the parser errors).
    """
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # STRONGLY_TYPED: opt-in on 10.x, always on (flag ignored) on 11.x; precision comes from the ONNX.
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if flag is None else 1 << int(flag))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # resolves the .onnx.data sidecar
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 4 << 30)
    opt_profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        rest = tuple(int(d) for d in t.shape[1:])
        if any(d < 0 for d in rest):
            raise RuntimeError(f"input {t.name} of {onnx_path.name} has a dynamic non-batch axis {t.shape}")
        opt_profile.set_shape(t.name, (profile[0], *rest), (profile[1], *rest), (profile[2], *rest))
    config.add_optimization_profile(opt_profile)
    cache_path = plan_path.parent / "timing.cache"
    blob = cache_path.read_bytes() if cache_path.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(blob), ignore_mismatch=True)
    log(f"building TensorRT engine for {onnx_path.name} (batch <= {profile[2]}); this takes minutes, once")
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build an engine for {onnx_path.name}")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = plan_path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(bytes(plan))
    os.replace(tmp, plan_path)
    with contextlib.suppress(OSError, AttributeError):  # the timing cache only speeds up the next build
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))


class TrtRunner(Runner):
    """One TensorRT engine with device buffers preallocated at its profile's max shapes.

    Inputs may be host arrays (copied to the runner's own buffers) or device pointers of another
    runner's outputs (`external`), which is how encoder outputs feed the ensemble without a copy.
    """

    def __init__(self, plan_path: Path, trt: Any, cudart: Any, stream: Any) -> None:
        super().__init__(plan_path.name)
        self.plan_path = plan_path
        self.trt, self.cudart, self.stream = trt, cudart, stream
        self.engine: Any = None
        self.context: Any = None
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.buffers: dict[str, tuple[int, int]] = {}  # name -> (device ptr, capacity bytes)

    def _ck(self, ret: Any) -> Any:
        return check_cuda(self.cudart, ret)

    def activate_impl(self) -> None:
        """Deserialize the plan (RuntimeError if it was built by another TensorRT/GPU) and allocate."""
        trt = self.trt
        runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
        self.engine = runtime.deserialize_cuda_engine(self.plan_path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"engine {self.plan_path} does not load on this TensorRT/GPU")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        for n in self.inputs:  # size everything at the profile max, once
            self.context.set_input_shape(n, tuple(self.engine.get_tensor_profile_shape(n, 0)[2]))
        for n in names:
            shape = tuple(self.context.get_tensor_shape(n))
            itemsize = np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))).itemsize
            nbytes = max(int(np.prod(shape)) * itemsize, 1)
            self.buffers[n] = (int(self._ck(self.cudart.cudaMalloc(nbytes))), nbytes)

    def max_batch(self) -> int:
        """Largest batch the engine's profile accepts."""
        return int(self.engine.get_tensor_profile_shape(self.inputs[0], 0)[2][0])

    def enqueue(self, host: dict[str, np.ndarray], external: dict[str, tuple[int, tuple[int, ...]]]) -> None:
        """Set shapes and addresses and launch on the stream (no sync).

        Args:
            host: input name -> host array, copied into this runner's buffer.
            external: input name -> (device pointer, shape) owned by another runner.
        """
        cudart = self.cudart
        for n in self.inputs:
            if n in external:
                ptr, shape = external[n]
                self.context.set_input_shape(n, shape)
                self.context.set_tensor_address(n, ptr)
                continue
            arr = np.ascontiguousarray(host[n], dtype=self.trt.nptype(self.engine.get_tensor_dtype(n)))
            ptr, cap = self.buffers[n]
            if arr.nbytes > cap:
                raise ValueError(f"batch too large for engine {self.name}: {arr.shape} exceeds its profile")
            self.context.set_input_shape(n, arr.shape)
            self._ck(cudart.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes,
                                            cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))
            self.context.set_tensor_address(n, ptr)
        for n in self.outputs:
            self.context.set_tensor_address(n, self.buffers[n][0])
        if not self.context.execute_async_v3(self.stream_handle()):
            raise RuntimeError(f"TensorRT failed to enqueue {self.name}")

    def stream_handle(self) -> int:
        """The raw stream handle execute_async_v3 wants."""
        try:
            from cuda.bindings.utils import get_cuda_native_handle  # type: ignore[import-not-found]

            return int(get_cuda_native_handle(self.stream))
        except ImportError:  # cuda-bindings 12.x before utils.get_cuda_native_handle
            return int(self.stream)

    def output_shape(self, name: str) -> tuple[int, ...]:
        """Shape of an output for the shapes set by the last enqueue."""
        return tuple(int(d) for d in self.context.get_tensor_shape(name))

    def fetch(self, name: str) -> np.ndarray:
        """Copy an output to the host (async on the stream; call `sync` before reading it)."""
        out = np.empty(self.output_shape(name), dtype=self.trt.nptype(self.engine.get_tensor_dtype(name)))
        self._ck(self.cudart.cudaMemcpyAsync(out.ctypes.data, self.buffers[name][0], out.nbytes,
                                             self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
        return out

    def sync(self) -> None:
        """Wait for the stream."""
        self._ck(self.cudart.cudaStreamSynchronize(self.stream))

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Host in, host out."""
        self.enqueue(feeds, {})
        outs = {n: self.fetch(n) for n in self.outputs}
        self.sync()
        return outs

    def deactivate_impl(self) -> None:
        """Free the device buffers and the engine."""
        for ptr, _ in self.buffers.values():
            self.cudart.cudaFree(ptr)
        self.buffers.clear()
        self.context = None
        self.engine = None


class TrtPipeline(Pipeline):
    """A bundle's graphs as TensorRT engines sharing one CUDA stream.

    Raises:
        BackendUnavailableError: tensorrt/cuda-bindings missing, no GPU, or an engine neither loads nor builds.
    """

    name = "tensorrt"

    def __init__(self, bundle: Bundle, graphs: GraphKey, batch_size: int = 8,
                 log: Callable[[str], None] | None = None) -> None:
        super().__init__(bundle, graphs)
        self.trt, self.cudart = import_trt()
        self.log = log or (lambda _m: None)
        self.cc = compute_capability(self.cudart)
        self.batch_size = max(1, int(batch_size))
        self.roots = engine_roots(bundle)
        self.candidates = matching_engine_dirs(self.roots, self.trt.__version__, self.cc, self.batch_size)
        foreign = foreign_engine_dirs(self.roots, self.trt.__version__, self.cc)
        if foreign and not self.candidates:
            self.log(f"TensorRT engines {foreign} were built by another TensorRT/GPU "
                     f"(this is {self.trt.__version__} sm{self.cc[0]}{self.cc[1]}); rebuilding them for this one")
        self.stream = check_cuda(self.cudart, self.cudart.cudaStreamCreate())
        self.encoders: dict[str, TrtRunner] = {}
        self.ensemble: TrtRunner | None = None
        try:
            for e in bundle.encoders:
                self.encoders[e.name] = self._runner(bundle.encoder_graph(e, graphs))
            if bundle.has_ensemble:
                self.ensemble = self._runner(bundle.ensemble_graph(graphs))
        except BaseException:
            self.close()
            raise

    def _runner(self, onnx_path: Path) -> TrtRunner:
        """Load the keyed engine for a graph, building it when absent or unloadable."""
        plan_name = onnx_path.name.removesuffix(".onnx") + ".plan"
        for folder in self.candidates:
            plan = folder / plan_name
            if plan.is_file():
                runner = TrtRunner(plan, self.trt, self.cudart, self.stream)
                try:
                    runner.activate()
                    return runner
                except RuntimeError as exc:
                    self.log(f"warning: {exc}; rebuilding it")
        profile = (1, min(8, self.batch_size), self.batch_size)
        key = engine_key(self.trt.__version__, self.cc, profile)
        target = next((r / key for r in self.roots if _writable(r / key)), None)
        if target is None:
            raise BackendUnavailableError(f"no writable folder to build TensorRT engines in ({self.roots})")
        plan = target / plan_name
        try:
            build_engine(self.trt, onnx_path, plan, profile, self.log)
            runner = TrtRunner(plan, self.trt, self.cudart, self.stream)
            runner.activate()
        except (RuntimeError, ValueError) as exc:
            raise BackendUnavailableError(str(exc)) from None
        return runner

    def _enqueue_all(self, batch: EncoderBatch, want_scores: bool) -> None:
        for name, (wav, lengths) in batch.items():
            self.encoders[name].enqueue({"wav": wav, "lengths": lengths}, {})
        if want_scores:
            assert self.ensemble is not None
            external = {}
            for r in self.encoders.values():
                for o in r.outputs:
                    external[o] = (r.buffers[o][0], r.output_shape(o))
            self.ensemble.enqueue({}, {k: v for k, v in external.items() if k in self.ensemble.inputs})

    def run(
        self, batch: EncoderBatch, *, want_features: bool, want_scores: bool = True
    ) -> tuple[dict[str, np.ndarray], EnsembleOut | None]:
        """Encoders then ensemble on one stream; encoder outputs stay on the device."""
        if want_scores and self.ensemble is None:
            raise NoEnsembleError(self.bundle)
        self._enqueue_all(batch, want_scores)
        feats = {o: r.fetch(o) for r in self.encoders.values() for o in r.outputs} if want_features else {}
        outs = {o: self.ensemble.fetch(o) for o in self.ensemble.outputs} if self.ensemble and want_scores else {}
        next(iter(self.encoders.values())).sync()  # one stream: this waits for every copy above
        scores = (outs["scores"], outs["mean"], outs["std"]) if want_scores else None
        return feats, scores

    def close(self) -> None:
        """Free every engine and the stream."""
        for r in [*getattr(self, "encoders", {}).values(), getattr(self, "ensemble", None)]:
            if r is not None:
                r.deactivate()
        if getattr(self, "stream", None) is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None
