"""``python -m wframe``: the command-line tools (``python -m wframe --help`` lists them)."""

from __future__ import annotations

import sys

from wframe.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
