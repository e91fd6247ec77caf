"""Batched evaluation of a model on arrays already checked and on its backend, or on an
iterable of such batches."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from wframe import data_rows
from wframe.training.logs import Layout, results
from wframe.training.tracker import Tracker
from wframe.types import Array, TrainState, Weighted


def evaluate(
    model: Any,
    x: Array,
    y: Array,
    loss: Any,
    batch_size: int,
    arrays: TrainState | None = None,
    strategy: Any = None,
    tracker: Tracker | None = None,
) -> dict[str, float]:
    """Mean loss and ``tracker``'s values (default: the model's compiled metrics) of ``model``
    on ``(x, y)`` (``y`` possibly :class:`~wframe.types.Weighted`), in inference mode, in
    batches of ``batch_size``; with the params and state of ``arrays`` (default: the model's
    own, read once) or split over a :mod:`wframe.distributed` ``strategy``'s devices.

    Args:
      model: a built model.
      x, y: the inputs and labels, checked and on the model's backend
        (``model.prepare_inputs`` and ``prepare_labels``); ``y`` may carry sample weights.
      loss: the loss to report (the compiled one, or ``evaluate``'s ``loss=``), resolved.
      batch_size: rows per batch; the last batch may be smaller.
      arrays: the :class:`~wframe.types.TrainState` to evaluate (``fit``'s validation passes
        the one it trains), or ``None``: the model's.
      strategy: a :mod:`wframe.distributed` strategy, or ``None`` for one device.
      tracker: the entries logged after the loss, or ``None``: ``model.tracker(loss)``.

    Raises:
      ValueError: ``x`` has no rows (the mean of no examples is no number).
    """
    data_rows.require_examples(x, "evaluate: x", "pass at least one example")
    arrays = model.train_state if arrays is None else arrays
    if strategy is not None:
        return strategy.evaluate(model, x, y, loss, batch_size, arrays.params, arrays.state)
    return evaluate_batches(model, array_batches(x, y, batch_size), loss, arrays, tracker)


def array_batches(x: Any, y: Any, batch_size: int) -> Iterable[tuple[Any, Any]]:
    """``(x, y)`` in batches of ``batch_size`` rows (the last one partial), lazily."""
    n = data_rows.rows(x)
    return (
        (data_rows.take(x, slice(i, i + batch_size)), _take_labels(y, slice(i, i + batch_size)))
        for i in range(0, n, batch_size)
    )


def _take_labels(y: Any, rows: slice) -> Any:
    if isinstance(y, Weighted):
        return Weighted(data_rows.take(y.labels, rows), data_rows.take(y.weights, rows))
    return data_rows.take(y, rows)


def evaluate_batches(
    model: Any,
    batches: Iterable[tuple[Any, Any]],
    loss: Any,
    arrays: TrainState | None = None,
    tracker: Tracker | None = None,
) -> dict[str, float]:
    """The logs of :func:`evaluate` over ``batches`` of ``(x, y)`` already on the backend:
    the loss (and each output's) as the mean of the batches' weighted by their size, each
    metric from its statistics summed over them.

    Args:
      model, loss, arrays, tracker: as for :func:`evaluate`.
      batches: an iterable of ``(x, y)`` batches, each on the model's backend.

    Raises:
      ValueError: the batches hold no example (an empty iterable, or batches of 0 rows).
    """
    layout, totals, count = evaluate_sums(model, batches, loss, arrays, tracker)
    if not count:
        raise ValueError(
            "no examples to evaluate: the batches given (evaluate's x, or fit's "
            "validation_data) hold 0 rows; pass at least one example"
        )
    return results(layout, totals, count)


def evaluate_sums(
    model: Any,
    batches: Iterable[tuple[Any, Any]],
    loss: Any,
    arrays: TrainState | None = None,
    tracker: Tracker | None = None,
) -> tuple[Layout, list, int]:
    """``(layout, sums, count)`` behind :func:`evaluate_batches`, on the host: each mean
    summed weighted by the batch size, each metric's statistics summed; all additive, so
    processes that evaluate parts of the data add theirs (``NcclDataParallel``)."""
    arrays = model.train_state if arrays is None else arrays
    tracker = model.tracker(loss) if tracker is None else tracker
    step = model.trainer.eval_fn(loss, tracker)
    layout = Layout(("loss", *tracker.names), tracker.metrics)
    raw = [name in layout.metrics for name in layout.names]
    totals, count = None, 0
    with model.backend.host_threads(model.count_params() * 256):  # ~ an evaluation batch
        for x, y in batches:
            logs = step(arrays.params, arrays.state, x, y)
            size = data_rows.rows(x)
            part = [
                logs[k] if r else logs[k] * size for k, r in zip(layout.names, raw, strict=True)
            ]
            totals = part if totals is None else [a + b for a, b in zip(totals, part, strict=True)]
            count += size
    if totals is None:
        return layout, [np.zeros(max(n, 1)) for n in layout.sizes()], 0
    return layout, [np.asarray(t, np.float64) for t in model.backend.to_host(totals)], count
