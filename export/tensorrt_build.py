"""TensorRT engines from the mixed fp16 ONNX graphs (strongly typed), keyed by TRT version, GPU and profile.

Written for TensorRT 11 (always strongly typed, no FP16 builder flag: precision comes from the ONNX)
and 10.x (the STRONGLY_TYPED network flag is opt-in there; on 11 it is accepted and ignored).
Profiles are given in windows per batch (default min 1, opt 8, max 32): every graph's only dynamic
axis is the batch. A timing cache per key folder makes rebuilds fast.
Without ``tensorrt`` or a CUDA GPU, ``unavailable_reason()`` says why and the exporter skips this step.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENGINES_DIR = "engines"
WORKSPACE_BYTES = 4 << 30


@dataclass(frozen=True)
class BatchProfile:
    """An optimization profile in windows per batch."""

    min: int = 1
    opt: int = 8
    max: int = 32

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"a TensorRT profile needs 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}.")

    @property
    def tag(self) -> str:
        """Folder-name form, e.g. ``b1-8-32``."""
        return f"b{self.min}-{self.opt}-{self.max}"


def compute_capability() -> tuple[int, int] | None:
    """(major, minor) of CUDA device 0 through cuda-bindings (no torch), or None without a usable GPU."""
    if importlib.util.find_spec("cuda") is None:
        return None
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return None
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or not count:
        return None
    err, major = cudart.cudaDeviceGetAttribute(cudart.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor, 0)
    err2, minor = cudart.cudaDeviceGetAttribute(cudart.cudaDeviceAttr.cudaDevAttrComputeCapabilityMinor, 0)
    if int(err) != 0 or int(err2) != 0:
        return None
    return int(major), int(minor)


def unavailable_reason() -> str | None:
    """One line saying why engines cannot be built here, or None when tensorrt and a GPU are present."""
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt is not installed (pip install 'mmmos[trt]' on a machine with an NVIDIA GPU)"
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError) as err:
        return f"tensorrt does not import ({str(err).splitlines()[0]}); install the tensorrt libs wheel"
    if compute_capability() is None:
        return "no CUDA GPU is visible (or cuda-bindings is missing: pip install 'mmmos[trt]')"
    return None


def engine_key(trt_version: str, capability: tuple[int, int], profile: BatchProfile) -> str:
    """Key folder name under engines/: ``<trt version>-sm<cc>-<profile>``, e.g. ``10.13.3.9-sm90-b1-8-32``."""
    return f"{trt_version}-sm{capability[0]}{capability[1]}-{profile.tag}"


def _strongly_typed_flags(trt: Any) -> int:
    """Network creation flags: STRONGLY_TYPED where the enum has it (10.x opt-in, 11.x ignored)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def build_engine(onnx_path: Path, plan_path: Path, profile: BatchProfile, timing_cache: Path) -> dict[str, Any]:
    """Parse ``onnx_path`` (external data resolved beside it) and write a serialized engine to ``plan_path``."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_strongly_typed_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    opt_profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = list(tensor.shape)
        if any(d < 0 for d in dims[1:]):
            raise ValueError(f"{onnx_path.name}: input {tensor.name} has a dynamic non-batch axis {dims}; "
                             "mmmos graphs have a dynamic batch only: re-export the graph.")
        rest = tuple(dims[1:])
        opt_profile.set_shape(tensor.name, (profile.min, *rest), (profile.opt, *rest), (profile.max, *rest))
    config.add_optimization_profile(opt_profile)
    blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
    cache = config.create_timing_cache(blob)
    config.set_timing_cache(cache, ignore_mismatch=False)
    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path.name}; see the log above.")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(plan))
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return {"graph": onnx_path.name, "plan": plan_path.name, "build_s": round(time.perf_counter() - start, 2)}


def build_engines(
    bundle_dir: Path, graphs: list[str], profile: BatchProfile, log: Any = print
) -> dict[str, Any]:
    """Build one engine per graph file (names relative to ``bundle_dir``) into engines/<key>/.

    Returns the report section: ``{"status": "built" | "skipped" | "failed", ...}``. Skipped (with one
    reason line) when tensorrt or a GPU is missing.
    """
    reason = unavailable_reason()
    if reason is not None:
        log(f"TensorRT engines skipped: {reason}")
        return {"status": "skipped", "reason": reason}
    import tensorrt as trt

    capability = compute_capability()
    assert capability is not None  # unavailable_reason() checked it
    key = engine_key(trt.__version__, capability, profile)
    folder = Path(bundle_dir) / ENGINES_DIR / key
    cache = folder / "timing.cache"
    built = []
    try:
        for name in graphs:
            log(f"TensorRT: building {name} ({profile.tag}) ...")
            plan = folder / (Path(name).name.removesuffix(".onnx") + ".plan")
            built.append(build_engine(Path(bundle_dir) / name, plan, profile, cache))
    except (RuntimeError, ValueError) as err:
        log(f"TensorRT engines failed: {err}")
        return {"status": "failed", "key": key, "error": str(err), "engines": built}
    return {
        "status": "built",
        "key": key,
        "tensorrt": trt.__version__,
        "compute_capability": f"{capability[0]}.{capability[1]}",
        "profile": {"min": profile.min, "opt": profile.opt, "max": profile.max},
        "engines": built,
    }
