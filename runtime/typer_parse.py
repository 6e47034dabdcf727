"""Argparse-like parsing on typer, once for every console command (`mmmos-score`, `mmmos-report`).

A command's typer function only builds its command object and hands it out through the context; these
helpers turn typer's habit of exiting after every command into "return the object, or exit with a usage
line", so `parse_args()` and `run()` stay apart and each can be tested.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from .errors import MMMOSRuntimeError

EXIT_USAGE = 2
"""Exit code of a usage or input error (argparse's)."""

T = TypeVar("T")


class CommandLineError(Exception):
    """A command line that parses but asks for something contradictory (exit code 2)."""


def version_option(prog: str) -> Any:
    """The `--version` option of `prog` (for `Annotated[bool, version_option(prog)] = False`): print
    `prog <version>` and exit 0."""

    def show(value: bool) -> None:
        if value:
            from mmmos import __version__

            print(f"{prog} {__version__}")
            raise typer.Exit(0)

    return typer.Option("--version", is_eager=True, callback=show, help="Print the mmmos version and exit.")


def parse_command(app: typer.Typer, args: list[str], prog: str, obj: Any, parsed: Callable[[], T | None]) -> T:
    """Run `app` on `args` and return the command object it built (`parsed()` reads it out of `obj`).

    Raises:
        SystemExit: after --help or --version (0), a bad option (2, typer's message), or a `CommandLineError`
            or `MMMOSRuntimeError` while building the command (2, one line `prog: error: ...` on stderr).
    """
    try:
        app(args=args, prog_name=prog, obj=obj)
    except (CommandLineError, MMMOSRuntimeError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USAGE) from None
    except SystemExit as exc:  # typer exits after every command: 0 after parsing (or --help), 2 on a bad option
        command = parsed()
        if command is not None and exc.code in (0, None):
            return command
        raise
    raise SystemExit(EXIT_USAGE)  # pragma: no cover - typer always exits
