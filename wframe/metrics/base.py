"""The metric contract (:class:`Metric`) and the helpers its implementations share: Keras'
sample-weight broadcasting, the weighted mean's statistics, label alignment, thresholds."""

from __future__ import annotations

import math

import numpy as np

from wframe.backends import array_namespace
from wframe.types import Array

#: Probabilities a hair outside [0, 1] still fall between AUC's end thresholds (Keras').
EPSILON = 1e-7


class Metric:
    """Base class: a named metric as additive device statistics and a host result.

    Subclasses are frozen dataclasses (hashable: compiled functions are cached by them) with a
    ``name`` field, the log key (Keras' name by default).

    Attributes:
      size: the length of the statistics vector (a class attribute, or a property of the
        options as AUC's).
    """

    name = "metric"
    size = 2

    def stats(self, pred: Array, labels: Array, sample_weight: Array | None = None) -> Array:
        """The batch's additive statistics: a 1-D vector of ``size`` on ``pred``'s backend.

        Jit-safe (no host read, no Python branch on values); in ``pred``'s float dtype.

        Args:
          pred: the predictions, shape ``(N, ...)``.
          labels: the labels of the output (the forms each metric accepts).
          sample_weight: a weight per example, ``(N,)``, broadcast over the other axes.
        """
        raise TypeError(
            f"{type(self).__name__} does not define stats(pred, labels, sample_weight); a "
            "Metric subclass returns its batch's additive statistics there"
        )

    def result(self, total: np.ndarray) -> float:
        """The metric from the sum of :meth:`stats` over batches (host)."""
        return ratio(total[0], total[1])


def ratio(a, b) -> float:
    """``a / b``, 0 where ``b`` is 0 (Keras' ``divide_no_nan``: no data, or no positive)."""
    return float(a / b) if b else 0.0


def float_dtype(xp, pred):
    """The statistics' dtype: ``pred``'s, float32 for 16-bit predictions (they count exactly
    only to 2048)."""
    return pred.dtype if getattr(pred.dtype, "itemsize", 4) >= 4 else xp.float32


def broadcast_weight(xp, metric: Metric, w: Array, shape: tuple, dtype) -> Array:
    """``sample_weight`` of shape ``(N,)``, ``(N, 1)`` or a prefix of ``shape`` (axes of 1
    allowed), broadcast to ``shape`` as Keras does."""
    w = xp.astype(w, dtype)
    if w.ndim == len(shape) + 1 and w.shape[-1] == 1:
        w = xp.reshape(w, w.shape[:-1])
    ok = w.ndim <= len(shape) and all(a in (1, b) for a, b in zip(w.shape, shape, strict=False))
    if not ok or w.ndim == 0 or w.shape[0] != shape[0]:
        raise ValueError(
            f"metric '{metric.name}' expects sample_weight of shape ({shape[0]},), one weight per "
            f"example, for values of shape {tuple(shape)}; got shape {tuple(w.shape)}"
        )
    w = xp.reshape(w, tuple(w.shape) + (1,) * (len(shape) - w.ndim))
    return xp.broadcast_to(w, tuple(shape))


def mean_stats(metric: Metric, values: Array, sample_weight: Array | None, dtype) -> Array:
    """``[sum(w * v), sum(w)]`` of per-example ``values`` (shape ``(N, ...)``), each example's
    value the mean over its other axes (Keras' ``Mean`` metric).

    Args:
      metric: the metric, named in the error for a badly shaped ``sample_weight``.
      values: the per-example values, ``(N, ...)`` (a scalar counts as one example).
      sample_weight: ``(N,)`` weights (or a prefix of ``values``' shape), or ``None``: all 1.
      dtype: the statistics' dtype (see :func:`float_dtype`).
    """
    xp = array_namespace(values)
    values = xp.astype(values, dtype)
    if values.ndim == 0:
        values = xp.reshape(values, (1,))
    n = values.shape[0]
    if sample_weight is None:
        per_example = xp.mean(xp.reshape(values, (n, -1)), axis=1) if values.ndim > 1 else values
        # full, not asarray: no host-to-device copy inside a captured (CUDA graph) step.
        return xp.stack([xp.sum(per_example), xp.full((), float(n), dtype=dtype)])
    w = broadcast_weight(xp, metric, sample_weight, values.shape, dtype)
    total = xp.sum(xp.mean(xp.reshape(values * w, (n, -1)), axis=1))
    return xp.stack([total, xp.sum(xp.mean(xp.reshape(w, (n, -1)), axis=1))])


def is_sparse(pred: Array, labels: Array) -> bool:
    """Labels are class indices: one axis fewer than the predictions, or a last axis of 1."""
    return labels.ndim == pred.ndim - 1 or (
        labels.ndim == pred.ndim and labels.shape[-1] == 1 and pred.shape[-1] > 1
    )


def aligned(xp, metric: Metric, pred: Array, labels: Array, dtype, *, classes: bool) -> Array:
    """Labels as floats of ``pred``'s shape: a column for one output; with ``classes``
    (classification metrics), integer class indices become one-hot."""
    if labels.ndim == pred.ndim - 1 and pred.shape[-1:] == (1,):
        labels = labels[..., None]
    elif classes and pred.shape[-1] > 1 and is_sparse(pred, labels) and _integral(xp, labels):
        if labels.ndim == pred.ndim:
            labels = xp.reshape(labels, labels.shape[:-1])
        labels = labels[..., None] == xp.arange(pred.shape[-1])
    if tuple(labels.shape) != tuple(pred.shape):
        raise ValueError(
            f"metric '{metric.name}' expects labels of shape {tuple(pred.shape)} like the "
            f"predictions{' (or class indices)' if classes else ''}, got {tuple(labels.shape)}"
        )
    return xp.astype(labels, dtype)


def _integral(xp, labels: Array) -> bool:
    return xp.isdtype(labels.dtype, "integral")


def logit(p: float) -> float:
    """The logit of a threshold on probabilities (host): where it lies on logits."""
    return -math.inf if p <= 0 else math.inf if p >= 1 else math.log(p / (1 - p))


def scores(xp, metric: Metric, pred: Array, dtype) -> tuple[Array, bool]:
    """Predictions ready to threshold, and whether they are still logits (``from_logits``
    with a sigmoid: a scalar threshold then goes through :func:`logit` on the host; a softmax
    is applied here). ``from_logits=None`` (not resolved) reads as probabilities."""
    pred = xp.astype(pred, dtype)
    if not metric.from_logits:
        return pred, False
    if getattr(metric, "activation", "sigmoid") == "softmax" and pred.shape[-1] > 1:
        e = xp.exp(pred - xp.max(pred, axis=-1, keepdims=True))
        return e / xp.sum(e, axis=-1, keepdims=True), False
    return pred, True
