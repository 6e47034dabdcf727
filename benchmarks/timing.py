"""Timing and memory primitives: warm-up then median/p90, RSS high-water mark, machine description.

No psutil: memory comes from /proc/self/status (VmHWM peak RSS, VmRSS current) on Linux and from
`resource.getrusage` (ru_maxrss) elsewhere. GPU timing uses CUDA events on the stream the
backend launches on (cuda-bindings, imported lazily); it is written for TensorRT and untested here.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Stats:
    """Seconds of repeated calls after warm-up.

    Attributes:
        median, p90, mean, min, max: over `times`.
        times: every timed call, in order.
        warmup: untimed calls made first.
    """

    median: float
    p90: float
    mean: float
    min: float
    max: float
    times: list[float] = field(default_factory=list)
    warmup: int = 0

    @classmethod
    def of(cls, times: list[float], warmup: int = 0) -> Stats:
        """Summarise a non-empty list of seconds.

        Raises:
            ValueError: `times` is empty.
        """
        if not times:
            raise ValueError("no timings to summarise; run at least one repeat.")
        return cls(median=statistics.median(times), p90=percentile(times, 90), mean=statistics.fmean(times),
                   min=min(times), max=max(times), times=list(times), warmup=warmup)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile with linear interpolation between closest ranks (numpy's default)."""
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def time_call(fn: Callable[[], Any], warmup: int = 1, repeats: int = 5,
              timer: Callable[[Callable[[], Any]], float] | None = None) -> Stats:
    """Call `fn` `warmup` times untimed, then `repeats` times timed.

    Args:
        fn: the work (must finish its device work before returning, unless `timer` handles that).
        timer: measures one call in seconds (default: wall clock with perf_counter).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")
    measure = timer or wall_time
    for _ in range(warmup):
        fn()
    return Stats.of([measure(fn) for _ in range(repeats)], warmup=warmup)


def wall_time(fn: Callable[[], Any]) -> float:
    """Seconds one call of `fn` takes on the wall clock."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def peak_rss_mb() -> float:
    """This process's RSS high-water mark in MiB.

    Linux: VmHWM from /proc/self/status, which belongs to the current address space. ru_maxrss is not
    used there because a child started by fork + exec inherits its parent's high-water mark, so a
    worker would report the parent's peak. Elsewhere ru_maxrss (KiB; bytes on macOS).
    """
    hwm = _proc_status_mb("VmHWM:")
    if hwm is not None:
        return hwm
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def _proc_status_mb(field: str) -> float | None:
    """A kB field of /proc/self/status in MiB, or None where unavailable."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def current_rss_mb() -> float | None:
    """This process's current RSS in MiB (Linux /proc), or None where unavailable."""
    return _proc_status_mb("VmRSS:")


def load_average() -> list[float] | None:
    """1/5/15-minute load averages (a busy machine makes timings slower: the report keeps this)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gb() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    except (OSError, ValueError, AttributeError):
        return None


def _gpus() -> list[str]:
    """GPU names from nvidia-smi when present (no CUDA import needed)."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [x.strip() for x in out.splitlines() if x.strip()]


def machine_info() -> dict[str, Any]:
    """The machine the figures come from: CPU, cores, memory, GPU, OS, Python and package versions."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for pkg in ("mmmos", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "torch", "tensorrt",
                "audiobox_aesthetics", "soxr", "soundfile"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "cpu": _cpu_model(), "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": round(_mem_total_gb() or 0.0, 1), "gpus": _gpus(), "platform": platform.platform(),
        "python": platform.python_version(), "versions": {k: v for k, v in versions.items() if v},
        "load_average": load_average(),
    }


class CudaEventTimer:
    """Times GPU work with CUDA events recorded on `stream` (cuda-bindings' cudart).

    Written for the TensorRT pipeline, whose stream and cudart module it reuses; untested on this
    machine (no GPU). `__call__(fn)` returns the seconds between events around `fn()`.
    """

    def __init__(self, cudart: Any, stream: Any) -> None:
        self.cudart, self.stream = cudart, stream
        self.start = self._ck(cudart.cudaEventCreate())
        self.stop = self._ck(cudart.cudaEventCreate())

    def _ck(self, ret: Any) -> Any:
        err, *rest = ret if isinstance(ret, tuple) else (ret,)
        if int(err) != 0:
            raise RuntimeError(f"CUDA call failed with error {err}; check the GPU and driver.")
        return rest[0] if len(rest) == 1 else (rest or None)

    def __call__(self, fn: Callable[[], Any]) -> float:
        """Seconds of GPU time between an event before and after `fn()` on the stream."""
        self._ck(self.cudart.cudaEventRecord(self.start, self.stream))
        fn()
        self._ck(self.cudart.cudaEventRecord(self.stop, self.stream))
        self._ck(self.cudart.cudaEventSynchronize(self.stop))
        ms = self._ck(self.cudart.cudaEventElapsedTime(self.start, self.stop))
        return float(ms) / 1000.0

    def close(self) -> None:
        """Destroy the events."""
        for ev in (self.start, self.stop):
            self.cudart.cudaEventDestroy(ev)
