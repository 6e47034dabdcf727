"""The command-line options of a `ScorerSettings`, defined once for `mmmos-score` and `mmmos-serve`.

Choices come from the `Literal` types in `names.py`; defaults from `ScorerSettings` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from .names import Backend, PrecisionChoice
from .settings import ScorerSettings

DEFAULTS = ScorerSettings()
"""Default values of the options (those of `ScorerSettings`)."""

BundleOption = Annotated[Path | None, typer.Option(
    "--bundle", "-b", help="Bundle folder (default: $MMMOS_BUNDLE, else the user cache folder).")]
ModelOption = Annotated[str | None, typer.Option(
    "--model", "-m", help="A public model by name (audiobox: Meta's Audiobox Aesthetics, fetched and exported once "
    "into the cache; needs mmmos[export] the first time), or a bundle folder.")]
BackendOption = Annotated[Backend, typer.Option(
    help="Where the graphs run: auto = TensorRT -> ONNX Runtime CUDA -> CPU; falls back with one line.")]
PrecisionOption = Annotated[PrecisionChoice, typer.Option(
    help="Graph precision (the bundle's report must pass it); auto = fp16 on a GPU when it passed, else fp32.")]
ForcePrecisionOption = Annotated[bool, typer.Option(
    "--force-precision", help="Use --precision even if its check did not pass (warns).")]
ThreadsOption = Annotated[int, typer.Option(min=0, help="ONNX Runtime intra-op threads (0 = cores).")]
BatchSizeOption = Annotated[int, typer.Option(min=1, help="Windows per graph call (bounds memory).")]
CoverageOption = Annotated[float, typer.Option(
    min=0.01, max=0.99, help="Nominal coverage of the score intervals rows carry (bundles calibrated with --targets).")]


def settings_from_options(bundle: Path | None, backend: Backend, precision: PrecisionChoice, force_precision: bool,
                          threads: int, batch_size: int, coverage: float) -> ScorerSettings:
    """The settings the shared options describe."""
    return ScorerSettings(bundle=str(bundle) if bundle else None, backend=backend, precision=precision,
                          force_precision=force_precision, threads=threads, batch_size=batch_size, coverage=coverage)


def with_model(settings: ScorerSettings, model: str | None, log: Callable[[str], None]) -> ScorerSettings:
    """The settings with `--model` resolved into a bundle folder (fetched and exported on first use).

    Raises:
        BundleNotFoundError, BackendUnavailableError: see `model_registry.resolve_model`.
    """
    if model is None:
        return settings
    from .model_registry import resolve_model

    return settings.with_changes(bundle=str(resolve_model(model, log)))

