"""What the command lines (``sweep.run``, ``sweep.aggregate``, ``sweep.evaluate``) share: bad input as one
line and exit status 2, and help texts as written with each option's default.

Standard library only, so that ``--help`` and argument errors answer before torch, Ray or MLflow load.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from sweep.storage import SweepStorage

__all__ = ["CommandParser", "UsageError", "aggregate_command", "first_line", "format_table", "run_command"]


class UsageError(Exception):
    """Bad input, or nothing to work on: reported as one line, exit status 2, nothing created."""


def first_line(error: BaseException, limit: int = 300) -> str:
    """What a one-line message quotes of ``error``: the first line of its text, cut at ``limit``
    characters, or its type's name when it has no text."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


def format_table(rows: Sequence[Sequence[str]]) -> list[str]:
    """``rows`` of cells (the first, a header, if any) as lines of left-aligned columns, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Description and epilog as written; like argparse.ArgumentDefaultsHelpFormatter, each option's
    default after its help, but only where there is one to show (not None, False or an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        default = action.default
        # "is False", not "== False": a default of 0 is worth showing.
        if "%(default)" in help_text or default is None or default is False or default in ([], argparse.SUPPRESS):
            return help_text
        return f"{help_text} (default: %(default)s)"


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose errors raise UsageError (argparse's own print the usage and exit), and
    whose help shows the description and epilog as written and each option's default."""

    def __init__(self, prog: str, description: str, epilog: str | None = None) -> None:
        super().__init__(prog=prog, description=description, epilog=epilog, formatter_class=_HelpFormatter)

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def run_command(
    name: str, parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int], argv: list[str] | None
) -> int:
    """``body(args)``'s exit status, ``args`` parsed from ``argv`` by ``parser``; a UsageError either
    raises is printed as ``NAME: error: MESSAGE`` on stderr and is exit status 2."""
    try:
        return body(parser.parse_args(argv))
    except UsageError as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        return 2


def aggregate_command(sweep: str, storage: str, tracking_uri: str, suite: str | None = None) -> str:
    """The ``python -m sweep.aggregate ... --report`` that reads ``sweep`` from ``storage``: with
    ``--tracking-uri`` unless the store is the storage's own, which aggregate finds by itself."""
    words = [
        "python -m sweep.aggregate",
        "--sweep",
        sweep,
        *(["--suite", suite] if suite else []),
        "--storage",
        storage,
    ]
    if tracking_uri != SweepStorage(storage).embedded_store:
        words += ["--tracking-uri", tracking_uri]
    return " ".join([*words, "--report"])
