"""Run the cross-backend benchmark suite (:mod:`wframe.bench`): every workload as a train step
and a fit epoch, on each available backend, against plain NumPy/JAX references and PyTorch and
Keras 3 when installed; rows interleaved in rounds, medians, JSON + Markdown + PNG in --out.

Exit status: 0 done; 1 a target missed by more than the noise (with --check); 2 bad arguments.
"""

from __future__ import annotations

import argparse

from wframe import bench
from wframe.bench import add_arguments

HELP = "run the cross-backend benchmark suite (python -m wframe.bench)"


def configure(parser: argparse.ArgumentParser) -> None:

    add_arguments(parser)


def run(args: argparse.Namespace) -> int:

    return bench.run(args)
