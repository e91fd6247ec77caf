"""The accuracy metrics a loss logs by default (``Loss.metric``)."""

from __future__ import annotations

from wframe.backends import array_namespace
from wframe.types import Array


def accuracy(pred: Array, labels: Array) -> Array:
    """Fraction of correct predictions: argmax for (N, C > 1), ``logit > 0`` for one output.

    Args:
      pred: the model's outputs: scores (N, ..., C) or one logit per example (N,) / (N, 1).
      labels: class ids (N, ...) or one-hot rows shaped like ``pred``; with one output, 0/1
        labels shaped like ``pred`` (counted as 1 above 0.5).

    Returns:
      A scalar of ``pred``'s dtype in [0, 1].
    """
    xp = array_namespace(pred)
    if pred.ndim >= 2 and pred.shape[-1] > 1:
        hits = xp.argmax(pred, axis=-1) == (
            labels if labels.ndim == pred.ndim - 1 else xp.argmax(labels, axis=-1)
        )
    else:
        hits = (pred > 0) == (labels > 0.5)
    return xp.sum(xp.astype(hits, pred.dtype)) / hits.size  # NumPy's mean costs 2x a sum


def probability_accuracy(pred: Array, labels: Array) -> Array:
    """:func:`accuracy` for probabilities: a single output counts as 1 above 0.5.

    Args:
      pred, labels: as for :func:`accuracy`, with ``pred`` probabilities (after a sigmoid).
    """
    if pred.ndim >= 2 and pred.shape[-1] > 1:
        return accuracy(pred, labels)
    xp = array_namespace(pred)
    hits = (pred > 0.5) == (labels > 0.5)
    return xp.sum(xp.astype(hits, pred.dtype)) / hits.size


METRICS = {"accuracy": accuracy, "probability_accuracy": probability_accuracy}
