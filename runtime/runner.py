"""The backend-agnostic interfaces: one graph `Runner` (Polygraphy-style lifecycle) and the `Pipeline`
that chains a bundle's encoder graphs into its ensemble graph, plus backend selection (`auto`).

Backends live in `backend_ort.py` and `backend_trt.py`; both import their heavy packages lazily, so
importing this module needs numpy only.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np

from .bundle import Bundle
from .errors import BackendUnavailableError, NoEnsembleError

BACKENDS = ("auto", "ort-cpu", "ort-cuda", "tensorrt")

# encoder name -> (wav [B, W_e] float32, lengths [B] int64)
EncoderBatch = dict[str, tuple[np.ndarray, np.ndarray]]
# (scores [B, M, 4], mean [B, 4], std [B, 4])
EnsembleOut = tuple[np.ndarray, np.ndarray, np.ndarray]


class Runner(ABC):
    """One graph, one lifecycle: `activate()` -> `infer(feeds)` ... -> `deactivate()`.

    Usable as a context manager. `last_inference_time` holds the seconds the last `infer` took.
    Subclasses implement `activate_impl`, `infer_impl` and `deactivate_impl`.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.is_active = False
        self.last_inference_time: float | None = None

    def activate(self) -> None:
        """Load the graph and allocate what inference needs (idempotent)."""
        if not self.is_active:
            self.activate_impl()
            self.is_active = True

    def deactivate(self) -> None:
        """Free everything `activate` allocated (idempotent)."""
        if self.is_active:
            self.deactivate_impl()
            self.is_active = False

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph on host arrays and return its outputs by name (host numpy arrays).

        Raises:
            RuntimeError: the runner was not activated.
        """
        if not self.is_active:
            raise RuntimeError(f"runner {self.name} must be activated before infer(); call activate().")
        t0 = time.perf_counter()
        out = self.infer_impl(feeds)
        self.last_inference_time = time.perf_counter() - t0
        return out

    @abstractmethod
    def activate_impl(self) -> None:
        """Backend-specific loading."""

    @abstractmethod
    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Backend-specific inference."""

    @abstractmethod
    def deactivate_impl(self) -> None:
        """Backend-specific release."""

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()


class Pipeline(ABC):
    """Encoder graphs -> ensemble graph for one bundle at one precision on one backend.

    Encoder outputs stay on the device between the two stages where the backend has one (ORT CUDA:
    IO binding; TensorRT: shared device buffers); they come back to the host only when asked for.
    """

    name: str = "?"

    def __init__(self, bundle: Bundle, precision: str) -> None:
        self.bundle = bundle
        self.precision = precision

    @abstractmethod
    def run(
        self, batch: EncoderBatch, *, want_features: bool, want_scores: bool = True
    ) -> tuple[dict[str, np.ndarray], EnsembleOut | None]:
        """Run every encoder graph on its windows, then (if `want_scores`) the ensemble graph.

        Returns:
            (encoder outputs by name on the host, filled only when `want_features`; ensemble outputs or None).
        """

    ensemble: Runner | None = None
    """The ensemble graph's runner (None for an encoders-only bundle); set by each backend."""

    def run_ensemble(self, features: dict[str, np.ndarray]) -> EnsembleOut:
        """Run the ensemble graph alone on host encoder outputs."""
        if self.ensemble is None:
            raise NoEnsembleError(self.bundle)
        out = self.ensemble.infer(features)
        return out["scores"], out["mean"], out["std"]

    @abstractmethod
    def close(self) -> None:
        """Release every runner."""

    def describe(self) -> str:
        """One line naming the backend and precision (for logs and benchmarks)."""
        return f"{self.name} {self.precision}"


def _try(factory: Callable[[], Pipeline], why: list[str], label: str) -> Pipeline | None:
    try:
        return factory()
    except (BackendUnavailableError, RuntimeError, OSError) as exc:
        # A GPU backend that fails to start (CUDA error, driver, engine) is a fallback, not a crash.
        why.append(f"{label}: {' '.join(str(exc).split())}")
        return None


def create_pipeline(
    bundle: Bundle,
    backend: str = "auto",
    precision: str = "fp32",
    threads: int = 0,
    batch_size: int = 8,
    warn: Callable[[str], None] | None = None,
) -> Pipeline:
    """Build the pipeline for `backend`, falling back as DESIGN.md says.

    `auto` tries TensorRT (GPU + tensorrt importable; engines built if missing), then ORT CUDA, then
    ORT CPU. An explicit `tensorrt` or `ort-cuda` that cannot run falls back too, with one line to
    `warn` saying why. `ort-cpu` never falls back.

    Raises:
        ValueError: unknown backend name.
        BackendUnavailableError: not even ORT CPU can run (onnxruntime not installed).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
    say = warn or (lambda _msg: None)
    from . import backend_ort

    why: list[str] = []
    order = {"auto": ["tensorrt", "ort-cuda", "ort-cpu"], "tensorrt": ["tensorrt", "ort-cuda", "ort-cpu"],
             "ort-cuda": ["ort-cuda", "ort-cpu"], "ort-cpu": ["ort-cpu"]}[backend]
    for i, name in enumerate(order):
        pipe: Pipeline | None
        if name == "tensorrt":
            from . import backend_trt

            pipe = _try(lambda: backend_trt.TrtPipeline(bundle, precision, batch_size=batch_size, log=say),
                        why, "tensorrt")
        elif name == "ort-cuda":
            pipe = _try(lambda: backend_ort.OrtPipeline(bundle, precision, device="cuda", threads=threads),
                        why, "ort-cuda")
        else:
            pipe = backend_ort.OrtPipeline(bundle, precision, device="cpu", threads=threads)
        if pipe is not None and name == "ort-cuda":
            # Written against onnxruntime-gpu's documented API, but no CI machine has a GPU: be honest.
            say("note: the ort-cuda backend (IO binding) is untested by mmmos's CPU-only test suite; "
                "spot-check a few files against --backend ort-cpu")
        if pipe is not None:
            # Falling back from what the user named explicitly deserves a line; auto's silent search does not.
            # A bundle that ships engines under auto is a TensorRT deployment: say why it was not used.
            if i > 0 and (backend != "auto" or bundle.engines_dir().is_dir()):
                say(f"warning: backend {order[0]} unavailable ({why[0]}); using {name}")
            return pipe
    raise BackendUnavailableError("no backend could run: " + "; ".join(why))  # pragma: no cover
