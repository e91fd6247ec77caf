"""``python -m wframe.bench``: run the benchmark suite (``--help`` lists the options)."""

from __future__ import annotations

import sys

from wframe.bench import main

if __name__ == "__main__":
    sys.exit(main())
