"""Print the summary table (layers, output shapes, parameter counts) of a model file written by
wframe.save_model (or model.save_weights of a model whose layers a file can describe).

The model is rebuilt from the file alone, on the backend WFRAME_BACKEND names (default numpy).

Exit status: 0 printed; 2 the file cannot be read, is not a safetensors file, or holds weights
only (no model config: build the model in code and call model.load_weights instead).
"""

from __future__ import annotations

import argparse
import sys

from wframe.saving import load_model
from wframe.saving.io import WeightsFileError

HELP = "print the summary table of a saved model file (exit 2 if it cannot be read)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="a .safetensors file written by save_model")


def run(args: argparse.Namespace) -> int:

    try:
        model = load_model(args.path)
    except (WeightsFileError, OSError) as e:
        # The messages name the path and the problems; a traceback would add nothing.
        message = str(e) if isinstance(e, WeightsFileError) else f"{args.path}: {e.strerror or e}"
        print(f"{args.prog}: error: {message}", file=sys.stderr)
        return 2
    model.summary()
    return 0
