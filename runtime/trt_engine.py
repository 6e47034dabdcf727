"""TensorRT engines, defined once: the GPU probe, the engine key, plan names, `build_engine` and plan lookup.

The runtime (`backend_trt.py`), `mmmos-export` (`export/tensorrt_build.py`) and `mmmos-calibrate` (the TensorRT
INT8 plans) build and find engines here, so the plan one of them writes is the plan the others look for.
Build apart from run (Polygraphy style): this module builds plans and finds them; runners are handed plan files.

Layout, in a bundle's `engines/` and in the user cache folder's `engines/`:

    <trt_version>-sm<cc>-b<min>-<opt>-<max>/<graph stem>.<sha16>.plan   (+ timing.cache)

`sha16` is the first 16 hex digits of the graph's sha256 as the manifest's `files` lists it (the runtime
verifies those at load), so a plan built from another version of a graph (re-exported, recalibrated) is never
loaded. Written for TensorRT 10.12+/11.x and cuda-bindings 12.9/13.x; untested on a GPU (no GPU where it was
written: the tests use fake `tensorrt`/`cudart` modules, scripts/gpu_check.sh is the check on a real one).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bundle import Bundle, cache_dir
from .errors import BackendUnavailableError
from .manifest import ENGINES_DIR, EncoderSpec, graph_files, sha256_file

TRT_INSTALL = ("install mmmos[trt-cu12] for an NVIDIA driver older than 580, or mmmos[trt-cu13] for driver 580 or "
               "newer (TensorRT and cuda-bindings of one CUDA major; `nvidia-smi` shows the driver)")
"""The one line every message about a missing or mismatched TensorRT install ends with."""

WORKSPACE_BYTES = 4 << 30
TIMING_CACHE = "timing.cache"

Shape = tuple[int, ...]
ShapeRange = tuple[Shape, Shape, Shape]
"""(min, opt, max) shape of one engine input."""
ShapeFn = Callable[[Mapping[str, Shape]], dict[str, ShapeRange]]
"""Maps the parsed network's inputs (name -> shape, -1 for a dynamic axis) to their (min, opt, max) shapes."""


def import_trt() -> tuple[Any, Any]:
    """Import `tensorrt` and `cuda.bindings.runtime`, or raise an error naming the extra to install.

    Raises:
        BackendUnavailableError: either package is missing or does not load.
    """
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except (ImportError, OSError) as exc:  # OSError: the TensorRT libraries of the wheel did not load
        raise BackendUnavailableError(f"tensorrt does not import ({str(exc).splitlines()[0]}); {TRT_INSTALL}") from None
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
    except ImportError:
        raise BackendUnavailableError(f"cuda-bindings (>= 12.9) is not installed; {TRT_INSTALL}") from None
    return trt, cudart


def _error_name(cudart: Any, err: Any) -> str:
    name = cudart.cudaGetErrorName(err)[1]  # bytes in cuda-bindings
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name)


def check_cuda(cudart: Any, ret: Any) -> Any:
    """Unpack a cuda-bindings `(err, *values)` tuple, raising RuntimeError on a CUDA error."""
    err, *rest = ret if isinstance(ret, tuple) else (ret,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA error {_error_name(cudart, err)!r}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def _cuda_version(cudart: Any, fn: str) -> str | None:
    """"12.4" from cudaDriverGetVersion / cudaRuntimeGetVersion (12040), or None when unknown."""
    try:
        err, v = getattr(cudart, fn)()
    except (AttributeError, TypeError, ValueError):
        return None
    if err != cudart.cudaError_t.cudaSuccess or not v:
        return None
    return f"{int(v) // 1000}.{int(v) % 1000 // 10}"


def probe_gpu(cudart: Any) -> tuple[int, int]:
    """Compute capability of GPU 0: the one GPU probe of mmmos's TensorRT path.

    Raises:
        BackendUnavailableError: no usable GPU; a driver older than the CUDA runtime of cuda-bindings (every call
            then returns cudaErrorInsufficientDriver) says which extra fits the driver.
    """
    err, count = cudart.cudaGetDeviceCount()
    if err == getattr(cudart.cudaError_t, "cudaErrorInsufficientDriver", object()):
        driver = _cuda_version(cudart, "cudaDriverGetVersion") or "unknown"
        runtime = _cuda_version(cudart, "cudaRuntimeGetVersion") or "a newer CUDA"
        raise BackendUnavailableError(
            f"the NVIDIA driver (CUDA {driver}) is older than the CUDA {runtime} runtime of the installed "
            f"cuda-bindings; {TRT_INSTALL}")
    if err != cudart.cudaError_t.cudaSuccess or not count:
        why = "" if err == cudart.cudaError_t.cudaSuccess else f" ({_error_name(cudart, err)!r})"
        raise BackendUnavailableError(f"no CUDA GPU is visible{why}; check `nvidia-smi` and CUDA_VISIBLE_DEVICES")
    attr = cudart.cudaDeviceAttr
    major = check_cuda(cudart, cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, 0))
    minor = check_cuda(cudart, cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, 0))
    return int(major), int(minor)


@dataclass(frozen=True)
class Gpu:
    """TensorRT and cuda-bindings, imported, with the compute capability of GPU 0."""

    trt: Any
    cudart: Any
    capability: tuple[int, int]

    @property
    def version(self) -> str:
        """TensorRT's version string (plans load only on the version that built them)."""
        return str(self.trt.__version__)

    @property
    def prefix(self) -> str:
        """`<trt_version>-sm<cc>`: the part of an engine key that says where plans load."""
        return key_prefix(self.version, self.capability)


def open_gpu() -> Gpu:
    """Import TensorRT + cuda-bindings and probe GPU 0.

    Raises:
        BackendUnavailableError: a package or the GPU is missing (the message says what to install or check).
    """
    trt, cudart = import_trt()
    return Gpu(trt, cudart, probe_gpu(cudart))


def unavailable_reason() -> str | None:
    """One line saying why engines cannot be built or run here, or None when TensorRT and a GPU are usable."""
    try:
        open_gpu()
    except BackendUnavailableError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class BatchProfile:
    """An optimization profile in windows per batch (every mmmos graph's only dynamic axis is the batch)."""

    min: int = 1
    opt: int = 8
    max: int = 32

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"a TensorRT profile needs 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}.")

    @property
    def tag(self) -> str:
        """Folder-name form, e.g. `b1-8-32`."""
        return f"b{self.min}-{self.opt}-{self.max}"

    def covers(self, batch_size: int) -> bool:
        """True when every batch of 1..batch_size windows fits the profile."""
        return self.min <= 1 and batch_size <= self.max


def key_prefix(trt_version: str, capability: tuple[int, int]) -> str:
    """`<trt_version>-sm<cc>`, e.g. `10.13.3.9-sm90`: where the plans of a key folder load."""
    return f"{trt_version}-sm{capability[0]}{capability[1]}"


def engine_key(trt_version: str, capability: tuple[int, int], profile: BatchProfile) -> str:
    """Key folder of an engine set: `<trt_version>-sm<cc>-<profile>`, e.g. `10.13.3.9-sm90-b1-8-32`."""
    return f"{key_prefix(trt_version, capability)}-{profile.tag}"


_KEY_RE = re.compile(r"^(?P<prefix>.+-sm\d+)-b(?P<min>\d+)-(?P<opt>\d+)-(?P<max>\d+)$")


def parse_engine_key(name: str) -> tuple[str, BatchProfile] | None:
    """(`<trt_version>-sm<cc>`, profile) of a key folder name, or None when it is not one."""
    m = _KEY_RE.match(name)
    if not m:
        return None
    try:
        return m["prefix"], BatchProfile(int(m["min"]), int(m["opt"]), int(m["max"]))
    except ValueError:
        return None


def profile_shapes(inputs: Mapping[str, Shape], profile: BatchProfile,
                   samples: tuple[int, int] | None = None) -> dict[str, ShapeRange]:
    """Per-input (min, opt, max) shapes of one profile: axis 0 takes the windows per batch; a dynamic samples axis
    (an encoder graph whose windows are fed their valid length, `LengthRule`) takes `samples` = (min, max), tuned
    for full windows (opt = max); the other axes stay.

    This is the one place that turns a profile into shapes.

    Raises:
        ValueError: an input has another dynamic axis, or a dynamic samples axis without a range.
    """
    out: dict[str, ShapeRange] = {}
    for name, shape in inputs.items():
        rest = [int(d) for d in shape[1:]]
        lo, opt, hi = list(rest), list(rest), list(rest)
        for i, d in enumerate(rest):
            if d >= 0:
                continue
            if samples is None or i != 0:
                raise ValueError(f"input {name} has a dynamic axis {tuple(shape)} that the profile does not cover; "
                                 "re-export the graph (only the batch and an encoder's samples axis are dynamic).")
            lo[i], opt[i], hi[i] = samples[0], samples[1], samples[1]
        out[name] = ((profile.min, *lo), (profile.opt, *opt), (profile.max, *hi))
    return out


def samples_ranges(encoders: Iterable[EncoderSpec], key: str) -> dict[str, tuple[int, int]]:
    """Graph file -> (min, max) samples of every encoder graph (for `key`) with a dynamic samples axis."""
    return {e.graphs[key]: (e.lengths.min_samples, e.lengths.max_samples)
            for e in encoders if e.lengths is not None and key in e.graphs}


def graph_digest(root: Path, graph: str, files: Mapping[str, str] | None = None) -> str:
    """First 16 hex digits of a graph's sha256, from the manifest's `files` (hashed here when not listed).

    A graph with external data (`X.onnx.data`) is both files: the digest is then the sha256 of their two sha256s,
    so new weights under an unchanged .onnx still give a new digest.
    """
    digests = [(files or {}).get(f) or sha256_file(Path(root) / f) for f in graph_files(Path(root), graph)]
    full = digests[0] if len(digests) == 1 else hashlib.sha256(":".join(digests).encode()).hexdigest()
    return full[:16]


def plan_name(graph: str, digest: str) -> str:
    """File name of the plan of a graph: `<graph stem>.<sha16>.plan` (e.g. `wavlm.fp16.0123abcd4567ef89.plan`)."""
    return f"{Path(graph).name.removesuffix('.onnx')}.{digest}.plan"


def _is_plan_of(file: str, graph: str) -> bool:
    stem = re.escape(Path(graph).name.removesuffix(".onnx"))
    return re.fullmatch(rf"{stem}(\.[0-9a-f]{{16}})?\.plan", file) is not None


def engine_roots(bundle: Bundle) -> list[Path]:
    """Where the runtime looks for plans: the bundle's `engines/`, then the user cache folder's `engines/`."""
    return [bundle.engines_dir(), cache_dir() / ENGINES_DIR]


def key_dirs(roots: Iterable[Path]) -> list[tuple[Path, str, BatchProfile]]:
    """Every engine key folder under `roots`, with its `<trt_version>-sm<cc>` prefix and profile."""
    out = []
    for root in roots:
        if root.is_dir():
            for d in sorted(root.iterdir()):
                parsed = parse_engine_key(d.name) if d.is_dir() else None
                if parsed:
                    out.append((d, *parsed))
    return out


def matching_engine_dirs(roots: Iterable[Path], gpu_prefix: str, batch_size: int) -> list[Path]:
    """Key folders built by this TensorRT for this GPU whose profile covers batches 1..batch_size.

    Sorted by profile max (the smallest that fits uses the least memory). Folders of other TensorRT versions
    or GPUs are left out: their plans would not deserialize.
    """
    found = [(p.max, str(d), d) for d, prefix, p in key_dirs(roots) if prefix == gpu_prefix and p.covers(batch_size)]
    return [d for *_, d in sorted(found)]


def foreign_engine_dirs(roots: Iterable[Path], gpu_prefix: str) -> list[str]:
    """Names of key folders built by another TensorRT version or GPU (for the rebuild message)."""
    return sorted({d.name for d, prefix, _ in key_dirs(roots) if prefix != gpu_prefix})


def stale_plans(folders: Iterable[Path], graph: str, digest: str) -> list[str]:
    """Plans of a graph's stem built from another version of it (other hash, or the unhashed old naming)."""
    want = plan_name(graph, digest)
    return sorted(f"{d.name}/{p.name}" for d in folders if d.is_dir() for p in d.iterdir()
                  if p.name != want and _is_plan_of(p.name, graph))


def build_engine(trt: Any, onnx_path: Path, plan_path: Path, shapes: ShapeFn, log: Callable[[str], None],
                 timing_cache: Path | None = None) -> dict[str, Any]:
    """Build a strongly typed engine from an ONNX graph and write it to `plan_path` (atomically).

    Precision comes from the graph (strongly typed: TensorRT 11 has no FP16/INT8 builder flags): a mixed fp16
    graph gives an fp16 engine, a symmetric QDQ graph an INT8 one.

    Args:
        trt: the `tensorrt` module.
        onnx_path: the graph (its `.onnx.data` sidecar is read by the parser).
        plan_path: where the serialized engine goes.
        shapes: the per-input (min, opt, max) shapes of the one optimization profile (see `profile_shapes`).
        log: progress lines.
        timing_cache: read before and written after the build (speeds up later builds on this GPU).

    Returns:
        `{"graph", "plan", "build_s"}` for the report.

    Raises:
        RuntimeError: the parser rejected the graph (its errors are in the message) or the build failed.
        ValueError: `shapes` gives no or a bad range for an input.
    """
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # STRONGLY_TYPED: opt-in on 10.x, deprecated and ignored (always on) on 11.x.
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if flag is None else 1 << int(flag))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    inputs = {t.name: tuple(int(d) for d in t.shape) for t in (network.get_input(i) for i in range(network.num_inputs))}
    ranges = shapes(inputs)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    opt_profile = builder.create_optimization_profile()
    for name in inputs:
        if name not in ranges:
            raise ValueError(f"no (min, opt, max) shape given for input {name} of {onnx_path.name}")
        opt_profile.set_shape(name, *ranges[name])
    config.add_optimization_profile(opt_profile)
    if timing_cache is not None:
        blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
        cache = config.create_timing_cache(blob)
        # A cache from another device/CUDA is refused (returns False) rather than used: the build just runs slower.
        if cache is None or not config.set_timing_cache(cache, False):
            log(f"TensorRT: timing cache {timing_cache} is unreadable or from another device; building without it")
    start = time.perf_counter()
    log(f"TensorRT: building {onnx_path.name} ({', '.join(f'{n} {r[0]}..{r[2]}' for n, r in ranges.items())}); "
        "this takes minutes, once")
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path.name}; see the TensorRT log above.")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = plan_path.with_name(f".{plan_path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(bytes(plan))
    os.replace(tmp, plan_path)  # never a half-written plan under the real name
    if timing_cache is not None:
        with contextlib.suppress(OSError, AttributeError):  # the cache only speeds up the next build
            timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return {"graph": onnx_path.name, "plan": plan_path.name, "build_s": round(time.perf_counter() - start, 2)}


def build_plans(root: Path, graphs: Iterable[str], profile: BatchProfile | None = None,
                log: Callable[[str], None] = print, files: Mapping[str, str] | None = None,
                samples: Mapping[str, tuple[int, int]] | None = None) -> dict[str, Any]:
    """Build the plans of a bundle's graphs into `root/engines/<key>/` (what mmmos-export and mmmos-calibrate ship).

    Args:
        root: the bundle folder.
        graphs: graph files relative to it (duplicates are built once; plans already there are kept).
        profile: windows per batch; None reuses the profile of the plans this TensorRT and GPU already have in
            the bundle (so calibration's INT8 plans sit beside the exporter's), else the default 1/8/32.
        log: progress lines.
        files: the manifest's `files` when it lists the graphs already (else they are hashed here).
        samples: graph -> (min, max) samples of its dynamic samples axis (`samples_ranges`).

    Returns:
        The report section: `{"status": "built" | "skipped" | "failed", ...}`; skipped, with the reason, when
        TensorRT or a GPU is missing.
    """
    try:
        gpu = open_gpu()
    except BackendUnavailableError as exc:
        log(f"TensorRT engines skipped: {exc}")
        return {"status": "skipped", "reason": str(exc)}
    own = [p for _, prefix, p in key_dirs([root / ENGINES_DIR]) if prefix == gpu.prefix]
    chosen = profile or (max(own, key=lambda p: p.max) if own else BatchProfile())
    key = engine_key(gpu.version, gpu.capability, chosen)
    folder = root / ENGINES_DIR / key
    built: list[dict[str, Any]] = []
    try:
        for graph in dict.fromkeys(graphs):
            plan = folder / plan_name(graph, graph_digest(root, graph, files))
            if plan.is_file():
                built.append({"graph": graph, "plan": plan.name, "kept": True})
                continue
            span = (samples or {}).get(graph)
            built.append(build_engine(gpu.trt, root / graph, plan,
                                      lambda ins, span=span: profile_shapes(ins, chosen, span), log,
                                      folder / TIMING_CACHE))
    except (RuntimeError, ValueError) as exc:
        log(f"TensorRT engines failed: {exc}")
        return {"status": "failed", "key": key, "error": str(exc), "engines": built}
    return {"status": "built", "key": key, "tensorrt": gpu.version,
            "compute_capability": f"{gpu.capability[0]}.{gpu.capability[1]}",
            "profile": {"min": chosen.min, "opt": chosen.opt, "max": chosen.max}, "engines": built}
