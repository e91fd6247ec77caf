"""Where an :class:`~wframe.pruning.IterativeMagnitudePruning` run is saved and resumed from.

A run's folder holds two checkpoints (:mod:`wframe.saving.checkpoint`, each written
atomically): ``rewind.safetensors``, a model holding the rewind point (the recorded params and
layer state, the counters then, where round 0's ``fit`` stood as ``resume_at``, and round 0's
masks), written once after round 0; and ``last.safetensors``, the model as the last completed
round trained it (params, masks, counters; no optimizer state), whose metadata entry
``"wframe.lottery"`` is a JSON record: ``format``, the run's ``settings``, ``completed`` (rounds
done) and every row so far. A crash between the two files of round 0 leaves no ``last`` file:
the run starts afresh.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, NamedTuple

import numpy as np

from wframe.saving import io
from wframe.tree import tree_map
from wframe.types import TrainState

KEY = "wframe.lottery"
FORMAT = 1


class RewindPoint(NamedTuple):
    """Where rounds start from: the recorded params and layer state (host arrays), the model's
    life counters then, and ``resume_at`` (``(epoch, batches done)`` of round 0's ``fit``, or
    ``None`` at an epoch's start)."""

    params: dict
    state: dict
    steps: int
    epochs: int
    resume_at: tuple[int, int] | None


class RunFolder:
    """The two files of a run in ``directory`` (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = os.fspath(directory)
        self.rewind_path = os.path.join(self.directory, "rewind.safetensors")
        self.last_path = os.path.join(self.directory, "last.safetensors")

    def save(
        self,
        model: Any,
        point: RewindPoint,
        masks0: dict[str, np.ndarray],
        rows: list[dict],
        settings: dict,
        completed: int,
    ) -> None:
        """Write ``model`` (as the round just completed left it) with the record, and after
        round 0 (``completed == 1``) the rewind point too (first)."""
        os.makedirs(self.directory, exist_ok=True)
        if completed == 1:
            holder = copy.copy(model)  # shares the arrays; its own snapshot from here on
            move = model.backend.asarray
            arrays = (tree_map(move, point.params), tree_map(move, point.state))
            holder.commit(
                TrainState(*arrays, None, None, None), steps=point.steps, epochs=point.epochs
            )
            holder.masks = masks0 if any(not m.all() for m in masks0.values()) else None
            holder.save_checkpoint(self.rewind_path, resume_at=point.resume_at)
        doc = {"format": FORMAT, "settings": settings, "completed": completed, "rows": rows}
        model.save_checkpoint(self.last_path, extra={KEY: json.dumps(doc)})

    def load(self, model: Any, settings: dict) -> tuple | None:
        """``(rewind point, round 0's masks, rows, rounds completed)`` of the saved run, with
        ``model`` holding the last completed round; ``None`` where nothing is saved.

        Raises:
          ValueError: the run was saved with other ``settings``.
          wframe.saving.io.WeightsFileError: a file is not a saved run, or does not fit
            ``model``.
        """
        if not (os.path.exists(self.rewind_path) and os.path.exists(self.last_path)):
            return None
        doc = _parse(io.read_metadata(self.last_path).get(KEY), self.last_path)
        if doc["settings"] != settings:
            changed = {
                k: (v, settings.get(k)) for k, v in doc["settings"].items() if settings.get(k) != v
            }
            raise ValueError(
                f"IterativeMagnitudePruning: {self.directory} holds a run with other settings "
                f"(saved, now): {changed}; use the same settings or another directory"
            )
        model.load_checkpoint(self.rewind_path)
        params, state = model.backend.to_host((model.params, model.state))
        point = RewindPoint(params, state, model.steps, model.epochs, model.resume_at)
        masks0 = {
            n: np.asarray(m) != 0 for n, m in model.backend.to_host(model.masks or {}).items()
        }
        model.load_checkpoint(self.last_path)
        return point, masks0, list(doc["rows"]), int(doc["completed"])


def _parse(text: Any, path: str) -> dict:
    """The run's record in a saved round's metadata, or a WeightsFileError naming the file."""
    try:
        doc = json.loads(text)
        ok = doc["format"] == FORMAT and isinstance(doc["rows"], list)
        ok = ok and isinstance(doc["settings"], dict) and int(doc["completed"]) >= 1
    except (TypeError, ValueError, KeyError):
        ok = False
    if not ok:
        raise io.WeightsFileError(
            f"cannot resume from {path!r}: it is not a saved IterativeMagnitudePruning round "
            f"(its metadata {KEY!r} is missing or malformed); delete the folder's files to "
            "start afresh",
            path,
        )
    return doc
