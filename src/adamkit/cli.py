"""The ``adamkit`` command.

Each subcommand lives in its own module, which provides ``configure(parser)``
(adds its arguments) and ``run(args) -> int`` (does the work). Modules are
imported only when their subcommand runs, so ``adamkit --help`` stays fast and
no optional dependency is needed by a subcommand that does not use it.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

from ._version import __version__

#: subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("adamkit.demo", "train a small model with every optimizer and print a comparison table"),
}


def _optional_subcommands() -> None:
    """Subcommands whose modules are present in this installation."""
    for name, module, text in (
        ("bench", "adamkit.bench.cli", "the benchmark suite: list, run, report"),
        ("speed", "adamkit.bench.speed", "step time and memory of every optimizer and path"),
        ("data", "adamkit.bench.data.cli", "prepare the data sets of the benchmark tasks"),
    ):
        try:
            present = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # its package is not there
            present = False
        if present:
            SUBCOMMANDS.setdefault(name, (module, text))


def build_parser() -> argparse.ArgumentParser:
    _optional_subcommands()
    parser = argparse.ArgumentParser(
        prog="adamkit", description="adamkit: the Adam family of optimizers, their benchmark suite and tools"
    )
    parser.add_argument("--version", action="version", version=f"adamkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
        p.set_defaults(_module=module)
        importlib.import_module(module).configure(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except BrokenPipeError:  # the reader went away (`adamkit ... | head`): stop quietly, as a Unix tool does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # (Python flushes stdout at exit, which would raise again)
        return 141  # 128 + SIGPIPE, the status a shell gives a command ended by a closed pipe


if __name__ == "__main__":
    sys.exit(main())
