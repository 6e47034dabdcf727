"""What `mmmos-score` does once its command line is parsed: `ScoreCommand` (the parsed value) and `run`.

Results go to stdout (or --output), progress and warnings to stderr. Exit codes: 0 every input scored,
1 some input failed (it has an error row), 2 usage or setup error (no bundle, unusable bundle/precision/
backend, output file exists), 130 interrupted.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from .bundle import Bundle
from .cli_options import with_model
from .errors import MMMOSRuntimeError, NoEnsembleError
from .inputs import InputItem, expand
from .outputs import Format, check_output, done_keys, item_key, make_writer, open_output
from .progress import Progress
from .settings import ScorerSettings

EXIT_OK, EXIT_FAILED_INPUTS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass(frozen=True)
class OutputOptions:
    """Where and how rows are written.

    Attributes:
        format: "table" | "jsonl" | "csv" | "challenge" (already resolved from --format / --output / the terminal).
        path: --output FILE (a folder with --ray), None for stdout.
        force: overwrite an existing --output.
        resume: append to --output only the inputs not already in it.
        shard: (I, N): score only every N-th input starting at I.
        quiet: no progress or summary on stderr.
        timeline: add each file's per-window scores and worst windows to its row (JSONL).
    """

    format: Format = "jsonl"
    path: str | None = None
    force: bool = False
    resume: bool = False
    shard: tuple[int, int] | None = None
    quiet: bool = False
    timeline: bool = False


@dataclass(frozen=True)
class ScoreCommand:
    """One parsed `mmmos-score` invocation: the inputs, the Scorer's settings, the output, and Ray's options."""

    inputs: list[str]
    settings: ScorerSettings = field(default_factory=ScorerSettings)
    model: str | None = None  # --model: a known model's name or a bundle folder, resolved when the command runs
    output: OutputOptions = field(default_factory=OutputOptions)
    ray: Any = None  # serving.ray_scoring.RayOptions when --ray (imported lazily: Ray is an extra)


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _select(items: Iterator[InputItem], out: OutputOptions, done: set[Any]) -> Iterator[InputItem]:
    """The inputs of this shard that have no row yet."""
    for k, it in enumerate(items):
        if out.shard is not None and k % out.shard[1] != out.shard[0]:
            continue
        if done and item_key(it, out.format) in done:
            continue
        yield it


def run(cmd: ScoreCommand) -> int:
    """Score `cmd.inputs` and write one row per input; returns the exit code."""
    if cmd.ray is not None:
        return _run_on_ray(cmd)
    out = cmd.output
    from .scorer import Scorer  # after option parsing: --help stays fast

    try:
        if out.path:  # before the (possibly slow) backend start: refuse to overwrite first
            check_output(out.path, force=out.force, resume=out.resume)
        settings = with_model(cmd.settings, cmd.model, _err)
        bundle = Bundle.load(settings.bundle, verify=settings.verify)
        done = done_keys(Path(out.path), out.format, bundle.model_id) if (out.resume and out.path) else set()
        scorer = Scorer.from_settings(settings, bundle=bundle, warn=_err)
    except MMMOSRuntimeError as exc:
        _err(f"mmmos-score: error: {exc}")
        return EXIT_USAGE
    try:
        if not scorer.bundle.has_ensemble:
            raise NoEnsembleError(scorer.bundle)
        stream: IO[str]
        stream, header = open_output(out.path, force=out.force, resume=out.resume) if out.path else (sys.stdout, True)
    except MMMOSRuntimeError as exc:
        scorer.close()
        _err(f"mmmos-score: error: {exc}")
        return EXIT_USAGE
    writer = make_writer(out.format, stream, header, on_error=lambda m: _err(f"error: {m}"), timeline=out.timeline)
    progress = Progress(quiet=out.quiet)
    try:
        for r in scorer.score_iter(_select(expand(cmd.inputs), out, done)):
            writer.write(r)
            progress.update(r)
    except KeyboardInterrupt:
        progress.close()
        _err("mmmos-score: interrupted; finished rows are written (use --resume to continue).")
        return EXIT_INTERRUPTED
    finally:
        scorer.close()
        if stream is not sys.stdout:
            stream.close()
    progress.close()
    return EXIT_FAILED_INPUTS if progress.failed else EXIT_OK


def _run_on_ray(cmd: ScoreCommand) -> int:
    """`--ray`: score on Ray Data into the folder --output (see runtime/serving/ray_scoring.py)."""
    from .serving.ray_scoring import score_corpus

    assert cmd.output.path is not None  # parse_args refuses --ray without --output
    try:
        opts = replace(cmd.ray, scorer=with_model(cmd.ray.scorer, cmd.model, _err))
        written, failed = score_corpus(cmd.inputs, cmd.output.path, opts, force=cmd.output.force)
    except MMMOSRuntimeError as exc:
        _err(f"mmmos-score: error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("mmmos-score: interrupted; finished rows are written (rerun the same command to continue).")
        return EXIT_INTERRUPTED
    _err(f"mmmos-score --ray: {written} rows written to {cmd.output.path}, {failed} failed.")
    return EXIT_FAILED_INPUTS if failed else EXIT_OK
