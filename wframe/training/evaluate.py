"""Batched evaluation of a model on arrays already checked and on its backend."""

from __future__ import annotations

from typing import Any

from wframe import data
from wframe.types import Array, TrainState


def evaluate(
    model: Any,
    x: Array,
    y: Array,
    loss: Any,
    batch_size: int,
    arrays: TrainState | None = None,
    strategy: Any = None,
) -> dict[str, float]:
    """Mean loss (and the loss's metric) of ``model`` on ``(x, y)``, in inference mode, in
    batches of ``batch_size``; with the params and state of ``arrays`` (default: the model's
    own, read once) or split over a :mod:`wframe.distributed` ``strategy``'s devices."""
    arrays = model.train_state if arrays is None else arrays
    if strategy is not None:
        return strategy.evaluate(model, x, y, loss, batch_size, arrays.params, arrays.state)
    step = model.trainer.eval_fn(loss, loss.metric_names)
    n = data.rows(x)
    totals = None
    for i in range(0, n, batch_size):
        rows = slice(i, i + batch_size)
        logs = step(arrays.params, arrays.state, data.take(x, rows), data.take(y, rows))
        part = {k: v * min(batch_size, n - i) for k, v in logs.items()}
        totals = part if totals is None else {k: totals[k] + part[k] for k in part}
    names = ("loss", *loss.metric_names)  # JAX returns sorted keys
    return {k: float(totals[k]) / n for k in names} if totals else {}
