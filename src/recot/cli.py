"""The ``recot`` command. Each area of the package adds its own sub-commands.

An area exposes ``add_commands(subparsers)`` in its ``commands`` module; that
function adds parsers whose ``func`` attribute takes the parsed arguments and
returns an exit code. Command modules import only ``argparse`` and the standard
library at module level: torch, transformers and PyAV are imported inside the
command functions, so ``recot --help`` and ``recot --version`` stay fast.

Exit codes, the same for every command:

* 0: done;
* 1: bad input: a file or folder named on the command line (video, image, model,
  rows file, config, data folder, output folder) is missing, unreadable, invalid
  or in the way, or processing it failed;
* 2: bad usage: the flags themselves are wrong: a value out of range, flags that
  conflict, a missing argument, a device this machine does not have (checked
  before any model is loaded; the message names the flag);
* 130: interrupted (Ctrl-C); 141: standard output was closed early (as for any
  tool stopped by SIGPIPE, e.g. ``recot cache ls --json | head -1``).

Errors are one line, ``recot COMMAND: error: ...`` (:func:`report_error`);
Python warnings raised while a command runs are printed as ``recot COMMAND:
warning: ...``.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence

from recot import __version__

COMMAND_MODULES: list[str] = [
    "recot.data.commands",
    "recot.video.commands",
    "recot.engine.commands",
    "recot.pretrain.commands",
    "recot.train.commands",
    "recot.eval.commands",
    "recot.serve.commands",
]

EXIT_INPUT = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


class UsageError(ValueError):
    """A wrong command line (exit code 2); the message names the flag."""


def report_error(command: str, message: str, code: int = EXIT_INPUT) -> int:
    """Print ``recot COMMAND: error: MESSAGE`` to stderr and return the exit code
    (1 for bad input such as an unreadable video or model, 2 for bad usage)."""
    print(f"recot {command}: error: {message}", file=sys.stderr)
    return code


# ----- flag value types: argparse reports their errors as "argument --flag: ..." with exit code 2 ------------------
def _number(kind: type, text: str) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None


def at_least(minimum: int | float, kind: type = int) -> Callable[[str], int | float]:
    """An argparse ``type`` for numbers ``>= minimum`` (``kind`` int or float)."""

    def parse(text: str) -> int | float:
        value = _number(kind, text)
        if not value >= minimum:  # also rejects NaN
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def between(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type`` for integers in ``[low, high]``."""

    def parse(text: str) -> int:
        value = _number(int, text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def positive(text: str) -> float:
    """An argparse ``type`` for floats ``> 0``."""
    value = _number(float, text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def fraction(text: str) -> float:
    """An argparse ``type`` for floats in ``(0, 1]``."""
    value = _number(float, text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def visual_token_limit(text: str) -> int | str:
    """An argparse ``type`` for ``--max-visual-tokens``: an integer ``>= 1``, or ``all`` (no cap past the context)."""
    from recot.model.selector import parse_visual_token_limit

    try:
        return parse_visual_token_limit(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def check_time_range(start: float | None, end: float | None) -> None:
    """Raise :class:`UsageError` unless ``--end`` comes after ``--start``."""
    if start is not None and end is not None and end <= start:
        raise UsageError(f"--end must be after --start, got --start {start:g} --end {end:g}")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written (short paragraphs), wider option column."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


# ----- parser and entry point ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every area's sub-commands."""
    import importlib

    parser = argparse.ArgumentParser(
        prog="recot", description="Video-XL-Pro long-video language models.", formatter_class=HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"recot {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(subparsers)
    for sub in _subparsers(parser):
        # Each command's name ("video frames", "cache ls") for its error and warning lines; set on every level so
        # the innermost parser that ran wins.
        sub.set_defaults(command_name=sub.prog.removeprefix(parser.prog + " "))
        for action in sub._actions:  # every option with a default says it, where its help does not already
            shown = action.default in (None, False, argparse.SUPPRESS) or "default" in (action.help or "default")
            if action.option_strings and not shown:
                action.help += " (default: %(default)s)"
    return parser


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                yield sub
                yield from _subparsers(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``recot`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error that argparse has printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    command = args.command_name
    with warnings.catch_warnings():
        warnings.showwarning = _warning_printer(command)
        try:
            code = int(args.func(args) or 0)
            sys.stdout.flush()  # a closed pipe shows up here when the output was buffered
        except BrokenPipeError:
            # The reader went away (``| head``): stop quietly. Point stdout at devnull so that the interpreter's final
            # flush does not fail a second time (the recipe of Python's documentation, "Note on SIGPIPE").
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_BROKEN_PIPE
        except KeyboardInterrupt:
            print(f"\nrecot {command}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
    return code


def _warning_printer(command: str) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints ``recot COMMAND: warning: MESSAGE`` (no source path and line)."""

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file=None, line=None) -> None:
        from tqdm import tqdm  # writes above any progress bar that is running

        tqdm.write(f"recot {command}: warning: {message}", file=sys.stderr)

    return show


if __name__ == "__main__":
    sys.exit(main())
