"""The loss contract and Keras' reduction.

A loss is called as ``loss(pred, labels, sample_weight=None) -> (value, dpred)``: the scalar
loss and its exact gradient with respect to the predictions. The value is Keras' default
reduction, ``sum_over_batch_size``: the per-sample losses ``l`` (the loss reduced over the last
axis as Keras does: shape (N,), or (N, T) for a sequence's predictions (N, T, C)) weighted by
``sample_weight`` (shape (N,), expanded on the right) and summed, divided by ``l.size``. Without
weights that is the mean of ``l``. Host-side ``check`` methods validate labels before anything is
compiled, so the compiled code stays free of value-dependent branches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from wframe.backends import array_namespace
from wframe.losses.accuracy import METRICS
from wframe.types import Array

#: Probabilities are clipped to [EPSILON, 1 - EPSILON] before the log, as Keras does.
EPSILON = 1e-7


def expand_weights(xp: Any, sample_weight: Array, like: Array) -> Array:
    """``sample_weight`` in ``like``'s dtype, expanded on the right to ``like``'s rank, so that
    weights of shape (N,) (or (N, T)) scale every entry of their sample.

    Args:
      xp: the arrays' namespace.
      sample_weight: per-sample weights, (N,) or a leading part of ``like``'s shape.
      like: the per-entry loss terms (N, ...) the weights multiply.
    """
    w = sample_weight
    if w.dtype != like.dtype:
        w = xp.astype(w, like.dtype)
    if w.ndim < like.ndim:
        w = xp.reshape(w, (*w.shape, *(1,) * (like.ndim - w.ndim)))
    return w


@dataclass(frozen=True)
class Loss:
    """Base class: a named loss with its gradient, label check and default metric.

    Subclasses define ``__call__(pred, labels, sample_weight=None) -> (value, dpred)``, or
    derive from :class:`Reduced` and define only the per-sample terms.

    Args:
      metric: a metric logged beside the loss in ``fit``/``evaluate``: ``"accuracy"``,
        ``"probability_accuracy"`` or ``None`` (default, none).
    """

    name = "loss"
    #: metric logged next to the loss in ``fit`` / ``evaluate`` (``None``: none).
    metric: str | None = None
    #: the gradient comes from autodiff (a plain function): only backends with autodiff train it.
    needs_autodiff: ClassVar[bool] = False

    def __call__(
        self, pred: Array, labels: Array, sample_weight: Array | None = None
    ) -> tuple[Array, Array]:
        raise TypeError(f"{type(self).__name__} does not define __call__")

    def kernel(self, xp: Any):
        """``(pred, labels) -> (value, dpred)`` of unweighted arrays of namespace ``xp``: the
        loss itself, or a fused kernel looked up once where the loss has one (a compiled
        plan's, see :meth:`wframe.layers.Layer.plan`)."""
        return self.__call__

    def value(self, pred: Array, labels: Array, sample_weight: Array | None = None) -> Array:
        """The loss alone (what evaluation needs; a loss without a gradient still has one)."""
        if sample_weight is None:  # a user's Loss may predate the sample_weight argument
            return self(pred, labels)[0]
        return self(pred, labels, sample_weight)[0]

    def check(self, pred_shape: tuple, labels: np.ndarray) -> np.ndarray:
        """Host ``labels`` checked against predictions of ``pred_shape``, or a ``ValueError``.

        Labels of shape (N,) for predictions of shape (N, 1) are taken as a column, as Keras does.
        """
        pred_shape = tuple(pred_shape)
        if pred_shape[-1:] == (1,) and labels.shape == pred_shape[:-1]:
            labels = labels[..., None]
        if labels.shape != pred_shape:
            raise ValueError(
                f"loss '{self.name}' expects labels of shape {tuple(pred_shape)} like the "
                f"predictions, got {labels.shape}"
            )
        if not np.issubdtype(labels.dtype, np.number) and labels.dtype != np.bool_:
            raise ValueError(f"loss '{self.name}' expects numeric labels, got dtype {labels.dtype}")
        return labels

    def label_dtype(self, labels: np.ndarray, dtype: str) -> str:
        """The dtype labels take on the backend: the model dtype unless overridden."""
        return dtype

    @property
    def metric_names(self) -> tuple[str, ...]:
        """What ``fit``/``evaluate`` log after ``loss``, in order."""
        return (self.metric,) if self.metric else ()

    def metric_fn(self, name: str):
        """``(pred, labels) -> value`` of one of :attr:`metric_names`."""
        return METRICS[name]


@dataclass(frozen=True)
class Reduced(Loss):
    """A loss given by its per-sample terms, reduced as Keras' ``sum_over_batch_size``.

    Subclasses define :meth:`terms`. Elementwise losses (``axis`` ``None``: Keras takes the mean
    of their terms over the last axis) return terms of the predictions' shape; losses over a
    features axis (cross-entropy over the classes, cosine similarity) set ``axis`` and return one
    term per sample, keeping that axis with size 1.

    Args:
      metric: a metric logged beside the loss in ``fit``/``evaluate``: ``"accuracy"``,
        ``"probability_accuracy"`` or ``None`` (default, none).
    """

    #: the features axis a per-sample loss is taken over; ``None``: an elementwise loss.
    axis: ClassVar[int | None] = None

    def terms(self, xp: Any, pred: Array, labels: Array, scale: Any) -> tuple[Array, Array]:
        """``(terms, dpred)``: the per-element (or per-sample, axis kept) losses and the
        gradient of ``sum(terms * scale)`` w.r.t. ``pred``. ``scale`` is a Python float, or an
        array that broadcasts against ``pred`` (each sample's weight over the count)."""
        raise TypeError(
            f"{type(self).__name__} does not define terms(xp, pred, labels, scale); a "
            "per-term loss returns its terms and their gradient there"
        )

    def count(self, pred: Array) -> int:
        """What the weighted sum is divided by: ``l.size`` times the entries each per-sample loss
        is a mean over (so the number of entries of ``pred`` for an elementwise loss)."""
        axis = self.reduction_axis(pred)
        return max(pred.size if axis is None else pred.size // pred.shape[axis], 1)

    def reduction_axis(self, pred: Array) -> int | None:
        """The axis :meth:`terms` reduces (``None``: none)."""
        axis = self.axis
        if axis is not None and pred.ndim > 1 and axis % pred.ndim == 0:
            raise ValueError(
                f"loss '{self.name}': axis={axis} is the batch axis of predictions of shape "
                f"{tuple(pred.shape)}; give a features axis (default -1)"
            )
        return axis

    def __call__(self, pred, labels, sample_weight=None):
        xp = array_namespace(pred)
        count = self.count(pred)
        if sample_weight is None:
            terms, dpred = self.terms(xp, pred, labels, 1 / count)
            return xp.sum(terms) / count, dpred
        scale = expand_weights(xp, sample_weight, pred) / count
        terms, dpred = self.terms(xp, pred, labels, scale)
        return xp.sum(terms * scale), dpred
