"""Say what a wframe file is and print what it holds.

The first line names the kind of file (its metadata's ``kind``): ``weights`` (``save_weights``:
arrays only), ``model`` (``save_model``: architecture, arrays, optimizer state, counters) or
``checkpoint`` (``save_checkpoint``, ``ModelCheckpoint``, ``BackupAndRestore``: a model file plus
where an interrupted ``fit`` goes on), with the optimizer and counters where the file has them;
files of other tools are ``safetensors``. A file with an architecture is rebuilt (on the backend
WFRAME_BACKEND names, default numpy) and its summary table printed; a file without one gets a
table of its tensors (name, dtype, shape), read from the header alone.

Exit status: 0 printed; 2 the file cannot be read or is not a valid safetensors file.
"""

from __future__ import annotations

import argparse
import math
import sys

from wframe.saving import load_model
from wframe.saving.io import WeightsFileError, read_header

HELP = "say which kind of wframe file PATH is and print what it holds (exit 2 if unreadable)"

KINDS = {
    "weights": "params, layer state and pruning masks (model.save_weights); read by "
    "model.load_weights",
    "model": "architecture, weights, optimizer state and counters (wf.save_model); read by "
    "wf.load_model",
    "checkpoint": "a model file plus where an interrupted fit goes on (save_checkpoint, "
    "ModelCheckpoint, BackupAndRestore); read by model.load_checkpoint",
}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="a .safetensors file (or a shards' index)")


def run(args: argparse.Namespace) -> int:
    try:
        header = read_header(args.path)
        print(describe(header.metadata))
        if "config" in header.metadata:
            load_model(args.path).summary()
        else:
            _tensors(header)
    except (WeightsFileError, OSError) as e:
        # The messages name the path and the problems; a traceback would add nothing.
        message = str(e) if isinstance(e, WeightsFileError) else f"{args.path}: {e.strerror or e}"
        print(f"{args.prog}: error: {message}", file=sys.stderr)
        return 2
    return 0


def describe(metadata: dict[str, str]) -> str:
    """One line: the file's kind, what that holds, and its optimizer and counters if any."""
    if metadata.get("format", "").startswith("wframe"):
        kind = metadata.get("kind") or (
            "checkpoint" if metadata.get("format") == "wframe.checkpoint" else "weights"
        )
        line = f"kind: {kind} ({KINDS.get(kind, 'unknown to this wframe')})"
    else:
        line = "kind: safetensors (a file of another tool: model.load_weights, wf.transfer)"
    if metadata.get("opt_state") == "present":
        line += f"\noptimizer: {metadata.get('optimizer') or 'given as an object'} (state kept)"
    if "steps" in metadata:
        line += f"\ncounters: epochs {metadata.get('epochs')}, steps {metadata.get('steps')}"
    if "resume_epoch" in metadata:
        line += (
            f"\nresumes at: epoch {metadata.get('resume_epoch')}, "
            f"batch {metadata.get('resume_batch')}"
        )
    return line


def _tensors(header) -> None:
    rows = [(name, e[0].name, str(e[1])) for name, e in header.layout.items()]
    widths = [max(len(r[i]) for r in [("tensor", "dtype", "shape"), *rows]) for i in range(3)]
    for row in [("tensor", "dtype", "shape"), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    values = sum(math.prod(e[1]) for e in header.layout.values())
    print(f"{len(rows)} tensors, {values:,} values; no architecture: build the model in code")
