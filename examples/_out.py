"""Where the examples write files: only under the folder ``--out`` names.

Every example that writes something (figures, plots) takes ``--out DIR``, default
``runs/<example>/`` under the current folder (``runs/`` is git-ignored), creates it only when it
writes there, and prints each path it writes. Examples that save a model only to reload it
(``multi_input_digits.py``, ``transfer_digits.py``) use a temporary folder removed at exit.
"""

from __future__ import annotations

import argparse
from pathlib import Path

RUNS = Path("runs")


def add_out_argument(parser: argparse.ArgumentParser, example: str, *aliases: str) -> None:
    """``--out DIR`` (and ``aliases``), default ``runs/<example>``."""
    parser.add_argument(
        "--out",
        *aliases,
        type=Path,
        default=RUNS / example,
        metavar="DIR",
        help=f"folder for the files this example writes (default: {RUNS / example}); "
        "nothing is written anywhere else",
    )


def folder(path: Path) -> Path:
    """``path``, created (with its parents) if missing."""
    path.mkdir(parents=True, exist_ok=True)
    return path
