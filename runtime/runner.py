"""The backend-agnostic interfaces: one graph `Runner` (Polygraphy-style lifecycle) and the `Pipeline`
that chains a bundle's encoder graphs into its ensemble graph.

Backends (`backend_ort.py`, `backend_trt.py`) implement these; `backends.py` picks one (`auto`). Importing
this module needs numpy only.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

import numpy as np

from .bundle import Bundle
from .errors import NoEnsembleError
from .names import GraphKey

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
    """Encoder graphs -> ensemble graph for one bundle, one graph key (precision) and one backend.

    Encoder outputs stay on the device between the two stages where the backend has one (ORT CUDA:
    IO binding; TensorRT: shared device buffers); they come back to the host only when asked for.
    """

    name: str = "?"

    def __init__(self, bundle: Bundle, graphs: GraphKey) -> None:
        self.bundle = bundle
        self.graphs = graphs

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
        """One line naming the backend and the graphs it runs (for logs and benchmarks)."""
        return f"{self.name} {self.graphs}"
