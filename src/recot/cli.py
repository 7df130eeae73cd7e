"""The ``recot`` command. Each area of the package adds its own sub-commands.

An area exposes ``add_commands(subparsers)`` in its ``commands`` module; that
function adds parsers whose ``func`` attribute takes the parsed arguments and
returns an exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from recot import __version__

COMMAND_MODULES: list[str] = ["recot.video.commands", "recot.engine.commands", "recot.pretrain.commands", "recot.train.commands"]


def report_error(command: str, message: str, code: int = 1) -> int:
    """Print ``recot COMMAND: error: MESSAGE`` to stderr and return the exit code
    (1 for bad input such as an unreadable video or model, 2 for bad usage)."""
    print(f"recot {command}: error: {message}", file=sys.stderr)
    return code


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every area's sub-commands."""
    import importlib

    parser = argparse.ArgumentParser(prog="recot", description="Video-XL-Pro long-video language models.")
    parser.add_argument("--version", action="version", version=f"recot {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``recot`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
