"""`mmmos-report`: an HTML report of score rows, and `--filter` curation lists.

`parse_args` turns the command line into a `ReportCommand` (nothing runs, but the filter expression and the
`--group-by` rule are already parsed, so a bad one stops here); `command.run` runs it.
Exit codes: 0 done, 1 done but some input lines were not rows, 2 usage or input error, 130 interrupted.
"""

from __future__ import annotations

import shlex
import sys
from typing import Annotated

import typer

from ..typer_parse import CommandLineError, parse_command, version_option
from .audio_links import DEFAULT_EMBED_LIMIT_MB
from .command import ListFormat, ReportCommand, run
from .filter_expr import parse_filter
from .grouping import parse_group_by

CURATION = "Curation"
AUDIO = "Audio players"
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command(
    help="Make a self-contained HTML report (histograms, per-group table, top/bottom clips with players, "
    "timelines, models) of mmmos-score rows, and/or curate them with --filter. SCORES: mmmos-score output "
    "(.jsonl, or .csv / challenge .txt), a --ray output folder (part-*.jsonl), or - for JSONL on stdin. "
    "Exit code 0: done, 1: some input lines were not rows (skipped), 2: usage or input error."
)
def report(
    ctx: typer.Context,
    inputs: Annotated[list[str] | None, typer.Argument(metavar="SCORES", show_default=False)] = None,
    output: Annotated[str | None, typer.Option(
        "--output", "-o", help="Write the HTML report to FILE (e.g. report.html).")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Overwrite --output, --accepted and --rejected if they exist.")] = False,
    group_by: Annotated[str, typer.Option(
        help="Groups of the table: auto (a system_id/system field, else the AudioMOS 2025 Track 2 system id in "
        "audiomos2025-track2-<sys>-<utt> names, else the parent folder), parent, none, a row field "
        "(system_id, model.name) or a regex over the path (re:PATTERN; its first group names the group).")] = "auto",
    top: Annotated[int, typer.Option(min=1, help="Clips in each top and bottom list per axis.")] = 5,
    timelines: Annotated[int, typer.Option(
        min=0, help="Most long files whose per-window timeline is drawn (rows from mmmos-score --timeline).")] = 20,
    bins: Annotated[int, typer.Option(min=2, max=200, help="Histogram bins over 0-10.")] = 20,
    title: Annotated[str | None, typer.Option(help="Page title (default: from the inputs' names).")] = None,
    embed_audio: Annotated[bool, typer.Option(
        "--embed-audio", help="Embed the listed clips in the page (base64) instead of linking them.",
        rich_help_panel=AUDIO)] = False,
    embed_limit_mb: Annotated[float, typer.Option(
        min=0, help="Most MB of audio to embed; clips past it are linked (with a warning).",
        rich_help_panel=AUDIO)] = DEFAULT_EMBED_LIMIT_MB,
    audio_root: Annotated[str | None, typer.Option(
        help="Folder the rows' relative paths are relative to (default: the current folder, else the scores "
        "file's folder).", rich_help_panel=AUDIO)] = None,
    filter_: Annotated[str | None, typer.Option(
        "--filter", help="Keep rows matching EXPR, e.g. \"PQ>=6 and CE>=5\" (comparisons of fields with numbers "
        "or strings, and/or/not, parentheses; error rows are always rejected). Without --accepted, --rejected "
        "or -o the accepted paths go to stdout.", rich_help_panel=CURATION)] = None,
    accepted: Annotated[str | None, typer.Option(
        help="Write the accepted rows' paths to FILE, one per line (- for stdout).", rich_help_panel=CURATION)] = None,
    rejected: Annotated[str | None, typer.Option(
        help="Write the rejected rows' paths (failed inputs too) to FILE (- for stdout).",
        rich_help_panel=CURATION)] = None,
    list_format: Annotated[ListFormat, typer.Option(
        help="--accepted/--rejected lines: paths, or the whole rows as JSONL (keeps start_time/end_time); "
        "auto: jsonl for a .jsonl file name, else paths.", rich_help_panel=CURATION)] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary or warnings on stderr.")] = False,
    version: Annotated[bool, version_option("mmmos-report")] = False,
) -> None:
    """Parse the command line into a ReportCommand, handed to `parse_args` through the context (run by `main`)."""
    if not inputs:
        raise CommandLineError("give at least one SCORES input (mmmos-score JSONL, a --ray folder, or - for stdin).")
    if output is None and filter_ is None:
        raise CommandLineError("nothing to do: give -o report.html for a report and/or --filter EXPR to curate.")
    if (accepted or rejected) and filter_ is None:
        raise CommandLineError("--accepted/--rejected need --filter EXPR (which rows to accept).")
    if embed_audio and output is None:
        raise CommandLineError("--embed-audio is about the report; give -o report.html too.")
    targets = [t for t in (output, accepted, rejected) if t]
    if len(set(targets)) < len(targets):
        raise CommandLineError("-o, --accepted and --rejected must be different files (only one may be - for stdout).")
    if output == "-":
        raise CommandLineError("-o wants a file name for the page (e.g. report.html), not -.")
    flt = parse_filter(filter_) if filter_ is not None else None
    ctx.obj["command"] = ReportCommand(
        inputs=list(inputs), output=output, force=force, grouper=parse_group_by(group_by), top=top,
        timelines=timelines, bins=bins, embed_audio=embed_audio, embed_limit_mb=embed_limit_mb,
        audio_root=audio_root, title=title, filter=flt, accepted=accepted, rejected=rejected,
        list_format=list_format, quiet=quiet, command=ctx.obj["line"])


def parse_args(argv: list[str] | None = None) -> ReportCommand:
    """Parse `mmmos-report`'s arguments (argparse-like: --help, --version and usage errors exit).

    Raises:
        SystemExit: after --help or --version (0), or a usage error, a bad --filter or --group-by (2, one
            line on stderr).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    parsed: dict[str, object] = {"line": shlex.join(["mmmos-report", *args])}

    def command() -> ReportCommand | None:
        cmd = parsed.get("command")
        return cmd if isinstance(cmd, ReportCommand) else None

    return parse_command(app, args, "mmmos-report", parsed, command)


def main(argv: list[str] | None = None) -> None:
    """Console entry point (`mmmos-report`)."""
    raise SystemExit(run(parse_args(argv)))


if __name__ == "__main__":
    main()
