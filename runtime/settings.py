"""`ScorerSettings`: how to build a `Scorer`, as one picklable value (shared by mmmos-serve and Ray actors)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass
class ScorerSettings:
    """The `Scorer` constructor's settings that a server or a Ray actor carries.

    Attributes:
        bundle: bundle folder (None: $MMMOS_BUNDLE, else the default cache folder).
        backend: "auto" | "ort-cpu" | "ort-cuda" | "tensorrt".
        precision: graph precision ("fp32" | "fp16" | "int8").
        force_precision: allow a precision whose export-time check did not pass.
        threads: ONNX Runtime intra-op threads (0 = cores).
        batch_size: 10 s windows per graph call.
    """

    bundle: str | None = None
    backend: str = "auto"
    precision: str = "fp32"
    force_precision: bool = False
    threads: int = 0
    batch_size: int = 8

    def scorer_settings(self, **changes: Any) -> ScorerSettings:
        """Just these settings (a subclass's extra options dropped), with `changes` applied."""
        values = {f.name: getattr(self, f.name) for f in fields(ScorerSettings)}
        return ScorerSettings(**{**values, **changes})

    def build(self, scorer_class: type | None = None, **kwargs: Any) -> Any:
        """A `Scorer` (or `scorer_class`, a subclass) with these settings; `kwargs` go to its constructor."""
        if scorer_class is None:
            from .scorer import Scorer  # lazily: keeps `--help` of the commands that carry settings light

            scorer_class = Scorer
        return scorer_class(self.bundle, backend=self.backend, precision=self.precision, threads=self.threads,
                            batch_size=self.batch_size, force_precision=self.force_precision, **kwargs)
