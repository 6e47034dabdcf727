"""`mmmos-score`: score files, folders, manifests and stdin lists with a bundle's whole ensemble.

Results go to stdout (or --output), progress and warnings to stderr. Exit codes: 0 every input
scored, 1 some input failed (it has an error row), 2 usage or setup error (bad option, no bundle,
unusable bundle/precision/backend, output file exists).
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from .errors import MMMOSRuntimeError, NoEnsembleError
from .inputs import expand
from .outputs import FORMATS, check_output, done_keys, format_for, item_key, make_writer, open_output
from .progress import Progress

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False)


class Backend(StrEnum):
    """--backend choices."""

    auto = "auto"
    ort_cpu = "ort-cpu"
    ort_cuda = "ort-cuda"
    tensorrt = "tensorrt"


class Precision(StrEnum):
    """--precision choices."""

    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


class Format(StrEnum):
    """--format choices."""

    table = "table"
    jsonl = "jsonl"
    csv = "csv"
    challenge = "challenge"


assert tuple(f.value for f in Format) == FORMATS


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _usage(msg: str) -> typer.Exit:
    _err(f"mmmos-score: error: {msg}")
    return typer.Exit(2)


def _version(value: bool) -> None:
    if value:
        from mmmos import __version__

        print(f"mmmos-score {__version__}")
        raise typer.Exit(0)


def _parse_shard(text: str) -> tuple[int, int]:
    """Parse `--shard I/N`."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise _usage(f"--shard wants I/N (e.g. 0/4), got {text!r}.") from None
    if not 0 <= i < n:
        raise _usage(f"--shard {text}: I must be in 0..N-1.")
    return i, n


@app.command(
    help="Score audio quality (PQ, PC, CE, CU on 0-10) with an mmmos bundle. INPUT: audio files, folders "
    "(recursive), .jsonl manifests (path, start_time, end_time), .csv lists (data_path or path column), "
    "or - for paths on stdin. Exit code 0: all scored, 1: some failed (error rows), 2: usage/setup error."
)
def score(
    inputs: Annotated[list[str] | None, typer.Argument(metavar="INPUT", show_default=False)] = None,
    bundle: Annotated[Path | None, typer.Option(
        "--bundle", "-b", help="Bundle folder (default: $MMMOS_BUNDLE, else the user cache folder).")] = None,
    backend: Annotated[Backend, typer.Option(help="Inference backend; falls back with one line.")] = Backend.auto,
    precision: Annotated[Precision, typer.Option(help="Graph precision (the bundle's report must pass it).")] = (
        Precision.fp32),
    force_precision: Annotated[bool, typer.Option(
        "--force-precision", help="Use --precision even if its export-time check did not pass.")] = False,
    threads: Annotated[int, typer.Option(min=0, help="ONNX Runtime intra-op threads (0 = cores).")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="10 s windows per graph call (bounds memory).")] = 8,
    fmt: Annotated[Format | None, typer.Option(
        "--format", "-f", help="table on a terminal, jsonl otherwise (or from --output's extension).")] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write results to FILE.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --output if it exists.")] = False,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Append to --output only the inputs not already in it.")] = False,
    shard: Annotated[str | None, typer.Option(
        help="Score only shard I of N (I/N, 0-based; every N-th input) for SLURM arrays or one process per GPU."
    )] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary on stderr.")] = False,
    ray: Annotated[bool, typer.Option(
        "--ray", help="Score on Ray Data (extra [ray]): --output is then a folder of part-*.jsonl files, and "
        "rerunning the same command scores only the inputs without a row (resume after a crash or kill).",
        rich_help_panel="Ray (corpus scoring)")] = False,
    ray_address: Annotated[str | None, typer.Option(
        help="Ray cluster to join (default: $RAY_ADDRESS, else start a local instance).",
        rich_help_panel="Ray (corpus scoring)")] = None,
    actors: Annotated[int, typer.Option(min=1, help="Scoring actors (one Scorer each).",
                                        rich_help_panel="Ray (corpus scoring)")] = 1,
    gpus_per_actor: Annotated[float, typer.Option(min=0, help="GPUs per actor (0 on CPU-only clusters).",
                                                  rich_help_panel="Ray (corpus scoring)")] = 0.0,
    cpus_per_actor: Annotated[float, typer.Option(
        min=0.01, help="CPUs per actor (actors' CPUs + 0.5 per decode task must fit the cluster).",
        rich_help_panel="Ray (corpus scoring)")] = 1.0,
    files_per_batch: Annotated[int, typer.Option(min=1, help="Files per Ray batch (decode task and actor call).",
                                                 rich_help_panel="Ray (corpus scoring)")] = 8,
    shard_rows: Annotated[int, typer.Option(min=1, help="Rows per part file.",
                                            rich_help_panel="Ray (corpus scoring)")] = 10000,
    ray_cpus: Annotated[int | None, typer.Option(min=1, help="CPUs of a local Ray instance (default: all).",
                                                 rich_help_panel="Ray (corpus scoring)")] = None,
    version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=lambda v: _version(v), help="Print the mmmos version and exit.")] = False,
) -> None:
    """Score INPUTs and write one row per input."""
    if not inputs:
        raise _usage("give at least one INPUT (file, folder, .jsonl, .csv, or - for paths on stdin).")
    if resume and not output:
        raise _usage("--resume needs --output FILE.")
    if resume and force:
        raise _usage("--resume and --force contradict each other; pick one.")
    if ray:
        _score_on_ray(inputs, output, fmt, resume=resume, force=force, shard=shard, opts=dict(
            bundle=str(bundle) if bundle else None, backend=backend.value, precision=precision.value,
            force_precision=force_precision, threads=threads or 1, batch_size=batch_size,
            files_per_batch=files_per_batch, actors=actors, gpus_per_actor=gpus_per_actor,
            cpus_per_actor=cpus_per_actor, shard_rows=shard_rows, address=ray_address, num_cpus=ray_cpus))
    part = _parse_shard(shard) if shard else None
    name = (fmt.value if fmt else None) or format_for(output, sys.stdout.isatty())
    if resume and name == "table":
        raise _usage("--resume does not work with --format table; use jsonl, csv or challenge.")

    from .scorer import Scorer  # after option parsing: --help stays fast

    try:
        if output:  # before the (possibly slow) backend start: refuse to overwrite first
            check_output(output, force=force, resume=resume)
        done = done_keys(Path(output), name) if (resume and output) else set()
        scorer = Scorer(bundle, backend=backend.value, precision=precision.value, threads=threads,
                        batch_size=batch_size, force_precision=force_precision, warn=_err)
        if not scorer.bundle.has_ensemble:
            raise NoEnsembleError(scorer.bundle)
        stream, header = open_output(output, force=force, resume=resume) if output else (sys.stdout, True)
    except MMMOSRuntimeError as exc:
        raise _usage(str(exc)) from None

    items: Any = expand(inputs)
    if part is not None:
        items = (it for k, it in enumerate(items) if k % part[1] == part[0])
    if done:
        items = (it for it in items if item_key(it, name) not in done)
    writer = make_writer(name, stream, header, on_error=lambda m: _err(f"error: {m}"))
    progress = Progress(quiet=quiet)
    try:
        for r in scorer.score_iter(items):
            writer.write(r)
            progress.update(r)
    except KeyboardInterrupt:
        progress.close()
        _err("mmmos-score: interrupted; finished rows are written (use --resume to continue).")
        raise typer.Exit(130) from None
    finally:
        scorer.close()
        if stream is not sys.stdout:
            stream.close()
    progress.close()
    raise typer.Exit(1 if progress.failed else 0)


def _score_on_ray(inputs: list[str], output: str | None, fmt: Format | None, *, resume: bool, force: bool,
                  shard: str | None, opts: dict[str, Any]) -> None:
    """`--ray`: score on Ray Data into the folder --output (see runtime/serving/ray_scoring.py); always exits."""
    if not output:
        raise _usage("--ray needs --output DIR (a folder for the part-*.jsonl files).")
    if fmt not in (None, Format.jsonl):
        raise _usage("--ray writes jsonl part files; drop --format or use --format jsonl.")
    if shard:
        raise _usage("--ray shards the work itself; drop --shard.")
    if resume and force:
        raise _usage("--resume and --force contradict each other; pick one.")
    from .serving.ray_scoring import RayOptions, score_corpus

    try:
        written, failed = score_corpus(inputs, output, RayOptions(**opts), force=force)
    except MMMOSRuntimeError as exc:
        raise _usage(str(exc)) from None
    except KeyboardInterrupt:
        _err("mmmos-score: interrupted; finished rows are written (rerun the same command to continue).")
        raise typer.Exit(130) from None
    _err(f"mmmos-score --ray: {written} rows written to {output}, {failed} failed.")
    raise typer.Exit(1 if failed else 0)


def main(argv: list[str] | None = None) -> None:
    """Console entry point (`mmmos-score`)."""
    app(args=argv, prog_name="mmmos-score")


if __name__ == "__main__":
    main()
