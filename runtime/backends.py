"""Backend selection: the `Pipeline` a `ScorerSettings` asks for, falling back as DESIGN.md says.

`auto` tries TensorRT (GPU + tensorrt importable; engines built if missing), then ONNX Runtime CUDA, then
ONNX Runtime CPU. An explicit `tensorrt` or `ort-cuda` that cannot run (package, GPU, driver, a graph the
precision needs on that backend) falls back too, with one line saying why. `ort-cpu` never falls back.
The precision is resolved per backend tried (`auto` means fp16 on a GPU when it passed, fp32 on the CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .bundle import Bundle
from .errors import BackendUnavailableError, PrecisionError
from .names import BACKENDS, Backend, Precision, graph_key
from .runner import Pipeline
from .settings import ScorerSettings

FALLBACKS: dict[Backend, tuple[Backend, ...]] = {
    "auto": ("tensorrt", "ort-cuda", "ort-cpu"),
    "tensorrt": ("tensorrt", "ort-cuda", "ort-cpu"),
    "ort-cuda": ("ort-cuda", "ort-cpu"),
    "ort-cpu": ("ort-cpu",),
}

UNTESTED = ("note: the {name} backend is written against its documented API but has not run on a GPU in mmmos's "
            "tests yet (no GPU where it was built); spot-check a few files against --backend ort-cpu")


@dataclass(frozen=True)
class Started:
    """A running pipeline with the backend and precision it resolved to."""

    pipeline: Pipeline
    backend: Backend
    precision: Precision


def _build(bundle: Bundle, backend: Backend, precision: Precision, settings: ScorerSettings,
           say: Callable[[str], None]) -> Pipeline:
    key = graph_key(precision, backend)
    if backend == "tensorrt":
        from .backend_trt import TrtPipeline

        return TrtPipeline(bundle, key, batch_size=settings.batch_size, log=say)
    from .backend_ort import OrtPipeline

    return OrtPipeline(bundle, key, device="cuda" if backend == "ort-cuda" else "cpu", threads=settings.threads)


def start_pipeline(bundle: Bundle, settings: ScorerSettings, warn: Callable[[str], None] | None = None) -> Started:
    """Start the pipeline for `settings.backend` and `settings.precision`, falling back where it must.

    Raises:
        ValueError: unknown backend name.
        PrecisionError: the precision is not in the bundle or did not pass (and is not forced) on ORT CPU.
        BackendUnavailableError: not even ORT CPU can run (onnxruntime not installed).
    """
    if settings.backend not in BACKENDS:
        raise ValueError(f"unknown backend {settings.backend!r}; choose one of {', '.join(BACKENDS)}.")
    say = warn or (lambda _msg: None)
    order = FALLBACKS[settings.backend]
    why: list[str] = []
    for i, backend in enumerate(order):
        last = i == len(order) - 1
        try:
            precision, note = bundle.choose_precision(settings.precision, backend, settings.force_precision)
            pipeline = _build(bundle, backend, precision, settings, say)
        except (BackendUnavailableError, PrecisionError, RuntimeError, OSError) as exc:
            if last:
                raise
            # A GPU backend that cannot start (package, driver, engine, a graph it needs) is a fallback, not a crash.
            why.append(f"{backend}: {' '.join(str(exc).split())}")
            continue
        if note:
            say(note)
        if backend != "ort-cpu":
            say(UNTESTED.format(name=backend))
        # Falling back from what the user named explicitly deserves a line; auto's silent search does not.
        # A bundle that ships engines under auto is a TensorRT deployment: say why it was not used.
        if i > 0 and (settings.backend != "auto" or bundle.engines_dir().is_dir()):
            say(f"warning: backend {order[0]} unavailable ({why[0]}); using {backend}")
        return Started(pipeline, backend, precision)
    raise BackendUnavailableError("no backend could run: " + "; ".join(why))  # pragma: no cover - ort-cpu raises
