"""`mmmos-score`: score files, folders, manifests and stdin lists with a bundle's whole ensemble.

`parse_args` turns the command line into a `ScoreCommand` (nothing runs); `score_command.run` runs it.
Exit codes: 0 all scored, 1 some input failed (error rows), 2 usage or setup error, 130 interrupted.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .cli_options import (
    DEFAULTS,
    BackendOption,
    BatchSizeOption,
    BundleOption,
    CoverageOption,
    ForcePrecisionOption,
    ModelOption,
    PrecisionOption,
    ThreadsOption,
    settings_from_options,
)
from .outputs import Format, format_for
from .score_command import OutputOptions, ScoreCommand, run
from .typer_parse import CommandLineError, parse_command, version_option

RAY = "Ray (corpus scoring)"
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    """Parse `--shard I/N`."""
    if text is None:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise CommandLineError(f"--shard wants I/N (e.g. 0/4), got {text!r}.") from None
    if not 0 <= i < n:
        raise CommandLineError(f"--shard {text}: I must be in 0..N-1.")
    return i, n


def _output_options(fmt: Format | None, output: str | None, force: bool, resume: bool, shard: str | None,
                    quiet: bool, ray: bool, timeline: bool) -> OutputOptions:
    if resume and force:
        raise CommandLineError("--resume and --force contradict each other; pick one.")
    if ray:
        if not output:
            raise CommandLineError("--ray needs --output DIR (a folder for the part-*.jsonl files).")
        if fmt not in (None, "jsonl"):
            raise CommandLineError("--ray writes jsonl part files; drop --format or use --format jsonl.")
        if shard:
            raise CommandLineError("--ray shards the work itself; drop --shard.")
        return OutputOptions(format="jsonl", path=output, force=force, resume=resume, quiet=quiet, timeline=timeline)
    if resume and not output:
        raise CommandLineError("--resume needs --output FILE.")
    name = fmt or format_for(output, sys.stdout.isatty())
    if resume and name == "table":
        raise CommandLineError("--resume does not work with --format table; use jsonl, csv or challenge.")
    if timeline and name != "jsonl":
        raise CommandLineError(f"--timeline adds a list to each JSONL row; use --format jsonl (not {name}).")
    return OutputOptions(format=name, path=output, force=force, resume=resume, shard=_parse_shard(shard), quiet=quiet,
                         timeline=timeline)


@app.command(
    help="Score audio quality (PQ, PC, CE, CU on 0-10) with an mmmos bundle. INPUT: audio files, folders "
    "(recursive), .jsonl manifests (path, start_time, end_time), .csv lists (data_path or path column), "
    "or - for paths on stdin. Exit code 0: all scored, 1: some failed (error rows), 2: usage/setup error."
)
def score(
    ctx: typer.Context,
    inputs: Annotated[list[str] | None, typer.Argument(metavar="INPUT", show_default=False)] = None,
    bundle: BundleOption = None,
    model: ModelOption = None,
    backend: BackendOption = DEFAULTS.backend,
    precision: PrecisionOption = DEFAULTS.precision,
    force_precision: ForcePrecisionOption = False,
    threads: ThreadsOption = DEFAULTS.threads,
    batch_size: BatchSizeOption = DEFAULTS.batch_size,
    coverage: CoverageOption = DEFAULTS.coverage,
    fmt: Annotated[Format | None, typer.Option(
        "--format", "-f", help="table on a terminal, jsonl otherwise (or from --output's extension).")] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write results to FILE.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --output if it exists.")] = False,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Append to --output only the inputs not already in it.")] = False,
    shard: Annotated[str | None, typer.Option(
        help="Score only shard I of N (I/N, 0-based; every N-th input): SLURM arrays, one process per GPU.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary on stderr.")] = False,
    timeline: Annotated[bool, typer.Option(
        "--timeline", help="Add each file's per-window scores (timeline) and worst window per axis (JSONL).")] = False,
    ray: Annotated[bool, typer.Option(
        "--ray", help="Score on Ray Data (extra [ray]): --output is then a folder of part-*.jsonl files, and "
        "rerunning the same command scores only the inputs without a row (resume after a crash or kill).",
        rich_help_panel=RAY)] = False,
    ray_address: Annotated[str | None, typer.Option(
        help="Ray cluster to join (default: $RAY_ADDRESS, else start a local instance).", rich_help_panel=RAY)] = None,
    actors: Annotated[int, typer.Option(min=1, help="Scoring actors (one Scorer each).", rich_help_panel=RAY)] = 1,
    gpus_per_actor: Annotated[float, typer.Option(
        min=0, help="GPUs per actor (0 on CPU-only clusters).", rich_help_panel=RAY)] = 0.0,
    cpus_per_actor: Annotated[float, typer.Option(
        min=0.01, help="CPUs per actor (actors' CPUs + 0.5 per decode task must fit the cluster).",
        rich_help_panel=RAY)] = 1.0,
    files_per_batch: Annotated[int, typer.Option(
        min=1, help="Files per Ray batch (decode task and actor call).", rich_help_panel=RAY)] = 8,
    shard_rows: Annotated[int, typer.Option(min=1, help="Rows per part file.", rich_help_panel=RAY)] = 10000,
    ray_cpus: Annotated[int | None, typer.Option(
        min=1, help="CPUs of a local Ray instance (default: all).", rich_help_panel=RAY)] = None,
    version: Annotated[bool, version_option("mmmos-score")] = False,
) -> None:
    """Parse the command line into a ScoreCommand, handed to `parse_args` through the context (run by `main`)."""
    if not inputs:
        raise CommandLineError("give at least one INPUT (file, folder, .jsonl, .csv, or - for paths on stdin).")
    if bundle is not None and model is not None:
        raise CommandLineError("--bundle and --model both name the model; pass one of them.")
    settings = settings_from_options(bundle, backend, precision, force_precision, threads, batch_size, coverage)
    out = _output_options(fmt, output, force, resume, shard, quiet, ray, timeline)
    ray_opts = None
    if ray:
        from .serving.ray_scoring import RayOptions

        # Several actors share a machine's cores: one ORT thread each unless asked otherwise.
        ray_opts = RayOptions(scorer=settings.with_changes(threads=threads or 1), files_per_batch=files_per_batch,
                              actors=actors, gpus_per_actor=gpus_per_actor, cpus_per_actor=cpus_per_actor,
                              shard_rows=shard_rows, address=ray_address, num_cpus=ray_cpus)
    ctx.obj.append(ScoreCommand(inputs=list(inputs), settings=settings, model=model, output=out, ray=ray_opts))


def parse_args(argv: list[str] | None = None) -> ScoreCommand:
    """Parse `mmmos-score`'s arguments (argparse-like: --help, --version and usage errors exit).

    Raises:
        SystemExit: after --help or --version (0), or a usage error (2, one line on stderr).
    """
    parsed: list[ScoreCommand] = []
    args = list(sys.argv[1:] if argv is None else argv)
    return parse_command(app, args, "mmmos-score", parsed, lambda: parsed[0] if parsed else None)


def main(argv: list[str] | None = None) -> None:
    """Console entry point (`mmmos-score`)."""
    raise SystemExit(run(parse_args(argv)))


if __name__ == "__main__":
    main()
