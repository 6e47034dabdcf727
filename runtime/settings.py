"""`ScorerSettings`: how to build a `Scorer`, as one picklable value.

The CLIs parse into it, `mmmos-serve` and Ray actors hold one, and `Scorer.from_settings` builds from it:
the Scorer's settings are listed here and in `Scorer.__init__`'s keyword arguments, nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .names import Backend, PrecisionChoice

if TYPE_CHECKING:
    from .scorer import Scorer


@dataclass(frozen=True)
class ScorerSettings:
    """The settings of a `Scorer`.

    Attributes:
        bundle: bundle folder (None: $MMMOS_BUNDLE, else the default cache folder).
        backend: where the graphs run (see `names.Backend`).
        precision: graph precision, or "auto" (see `names.PrecisionChoice`).
        force_precision: allow a precision whose check did not pass (warns).
        threads: ONNX Runtime intra-op threads (0 = cores).
        batch_size: windows per graph call (bounds model memory).
        verify: check the bundle files' sha256 on load.
        coverage: nominal coverage of the score intervals rows carry when the bundle has calibrated them.
    """

    bundle: str | None = None
    backend: Backend = "auto"
    precision: PrecisionChoice = "auto"
    force_precision: bool = False
    threads: int = 0
    batch_size: int = 8
    verify: bool = True
    coverage: float = 0.9

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        if not 0.0 < self.coverage < 1.0:
            raise ValueError(f"coverage must be between 0 and 1 (e.g. 0.9), got {self.coverage}")

    def with_changes(self, **changes: Any) -> ScorerSettings:
        """A copy with `changes` applied."""
        return replace(self, **changes)

    def build(self, scorer_class: type[Scorer] | None = None, **kwargs: Any) -> Scorer:
        """A `Scorer` (or `scorer_class`, a subclass) with these settings; `kwargs` go to `from_settings`."""
        if scorer_class is None:
            from .scorer import Scorer  # lazily: keeps `--help` of the commands that carry settings light

            scorer_class = Scorer
        return scorer_class.from_settings(self, **kwargs)
