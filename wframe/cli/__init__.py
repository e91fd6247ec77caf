"""The command-line tools behind ``python -m wframe`` (and the ``wframe`` console script).

Each subcommand is one module of this package holding four names:

* ``HELP``: the one-line help shown in ``wframe --help``;
* the module docstring: the description shown in ``wframe <command> --help``;
* ``configure(parser)``: adds the subcommand's arguments to its ``argparse`` parser;
* ``run(args) -> int``: does the work and returns the exit status (``args.prog`` is the
  subcommand's name for messages, ``"wframe parity"``).

Adding a subcommand (``bench``, say) is therefore one new module, ``wframe/cli/bench.py``, plus
its name in :data:`COMMANDS`. Modules import heavy packages (jax, cupy) inside ``run``, so
``wframe --help`` stays fast.

Exit statuses follow argparse: 0 success, 1 a check failed (``parity``), 2 a usage error or an
input that cannot be used (``summary`` on a broken file).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys

__all__ = ["COMMANDS", "build_parser", "main"]

#: Subcommand names, in ``--help`` order; each is the module ``wframe.cli.<name>``.
COMMANDS: tuple[str, ...] = ("doctor", "parity", "summary", "bench")


def _prog() -> str:
    return "python -m wframe" if os.path.basename(sys.argv[0]) == "__main__.py" else "wframe"


def _version() -> str:
    try:
        return importlib.metadata.version("wframe")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per module named in :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog=_prog(),
        description="wframe's command-line tools: neural networks on NumPy, CuPy or JAX.",
        epilog="Run '%(prog)s COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"wframe {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"wframe.cli.{name}")
        sub = commands.add_parser(
            name,
            help=module.HELP,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure(sub)
        sub.set_defaults(run=module.run, prog=sub.prog)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand, return its exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version and usage errors: argparse's status, returned
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `wframe doctor | head`: stop quietly, as other tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
