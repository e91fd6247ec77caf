"""Accuracy metrics: binary (a threshold per element), categorical and sparse (arg-max), top-k,
and :class:`AutoAccuracy`, what ``"accuracy"`` means when the loss does not decide."""

from __future__ import annotations

import math
from dataclasses import dataclass

from wframe.backends import array_namespace
from wframe.backends.fusion import FUSED
from wframe.metrics.base import Metric, aligned, float_dtype, is_sparse, logit, mean_stats, scores


@dataclass(frozen=True)
class BinaryAccuracy(Metric):
    """Fraction of elements whose prediction is on the label's side of ``threshold``.

    Labels count as 1 above 0.5 (Keras compares them with ``==``: the same for 0/1 labels);
    integer class indices for several outputs count as one-hot. With ``from_logits`` the
    threshold applies to ``sigmoid(pred)`` (0.5: a logit above 0).

    Args:
      name: the key it is logged under (default ``"binary_accuracy"``).
      threshold: the probability above which a prediction counts as 1.
      from_logits: the predictions are logits; ``None`` (default) follows the compiled loss's
        ``from_logits``.
    """

    name: str = "binary_accuracy"
    threshold: float = 0.5
    from_logits: bool | None = None

    def stats(self, pred, labels, sample_weight=None):
        xp = array_namespace(pred)
        dtype = float_dtype(xp, pred)
        labels = aligned(xp, self, pred, labels, dtype, classes=True)
        values, logits = scores(xp, self, pred, dtype)
        t = logit(self.threshold) if logits else self.threshold
        hits = (values > t) == (labels > 0.5)
        count = getattr(FUSED.get(xp), "true_count", None)  # one output, unweighted (NumPy)
        out = None if count is None or sample_weight is not None else count(hits, dtype)
        return out if out is not None else mean_stats(self, hits, sample_weight, dtype)


@dataclass(frozen=True)
class CategoricalAccuracy(Metric):
    """Fraction of examples whose arg-max prediction is the label's class: one-hot labels
    (their arg-max) or class indices, told apart by their shape (``(N,)`` or ``(N, 1)`` for
    predictions ``(N, C)``). ``from_logits`` changes nothing (softmax keeps the arg-max).

    Args:
      name: the key it is logged under (default ``"categorical_accuracy"``).
      from_logits: accepted for Keras' signature; it changes nothing.
    """

    name: str = "categorical_accuracy"
    from_logits: bool | None = None

    def stats(self, pred, labels, sample_weight=None):
        return _categorical_stats(self, pred, labels, sample_weight)


def _categorical_stats(metric: Metric, pred, labels, sample_weight):
    """:meth:`CategoricalAccuracy.stats`, errors naming ``metric``."""
    xp = array_namespace(pred)
    if sample_weight is None and labels.ndim == pred.ndim - 1:
        # Class indices, unweighted (fit's common case, every step): the hits counted by one
        # sum, 6 array calls where mean_stats makes 8 (NumPy: 3); the same [sum, count] vector.
        hits = getattr(FUSED.get(xp), "class_hits", None)
        out = None if hits is None else hits(pred, labels)
        if out is not None:
            return out
        dtype = float_dtype(xp, pred)
        hits = xp.sum(xp.astype(xp.argmax(pred, axis=-1) == labels, dtype))
        return xp.stack([hits, xp.full((), float(math.prod(labels.shape)), dtype=dtype)])
    if is_sparse(pred, labels):
        classes = xp.reshape(labels, pred.shape[:-1])
    elif tuple(labels.shape) == tuple(pred.shape):
        classes = xp.argmax(labels, axis=-1)
    else:
        raise ValueError(
            f"metric '{metric.name}' expects one-hot labels of shape {tuple(pred.shape)} or "
            f"class indices of shape {tuple(pred.shape[:-1])}, got {tuple(labels.shape)}"
        )
    hits = xp.argmax(pred, axis=-1) == classes
    return mean_stats(metric, hits, sample_weight, float_dtype(xp, pred))


@dataclass(frozen=True)
class SparseCategoricalAccuracy(CategoricalAccuracy):
    """:class:`CategoricalAccuracy` under Keras' name for class-index labels.

    Args:
      name: the key it is logged under (default ``"sparse_categorical_accuracy"``).
      from_logits: accepted for Keras' signature; it changes nothing.
    """

    name: str = "sparse_categorical_accuracy"


@dataclass(frozen=True)
class AutoAccuracy(Metric):
    """``"accuracy"`` for a loss that does not decide it (Keras 3's rule, by shapes): binary
    for one output (threshold 0.5, or 0 on logits), else categorical or sparse by the labels'
    shape.

    Args:
      name: the key it is logged under (default ``"accuracy"``).
      from_logits: the predictions are logits; ``None`` (default) follows the compiled loss's
        ``from_logits``.
    """

    name: str = "accuracy"
    from_logits: bool | None = None

    def stats(self, pred, labels, sample_weight=None):
        if pred.ndim >= 2 and pred.shape[-1] > 1:
            return _categorical_stats(self, pred, labels, sample_weight)
        inner = BinaryAccuracy(self.name, from_logits=self.from_logits)
        return inner.stats(pred, labels, sample_weight)


@dataclass(frozen=True)
class TopKCategoricalAccuracy(Metric):
    """Fraction of examples whose label's class is among the ``k`` highest predictions (ties
    counted in the label's favour, as Keras' ``in_top_k``); one-hot labels or class indices,
    and soft labels by their highest entry (Keras' ``argmax(y_true)``).

    Args:
      k: how many of the highest predictions count.
      name: the key it is logged under (default ``"top_k_categorical_accuracy"``).
      from_logits: accepted for Keras' signature (the ranking is the same).
    """

    k: int = 5
    name: str = "top_k_categorical_accuracy"
    from_logits: bool | None = None

    def stats(self, pred, labels, sample_weight=None):
        xp = array_namespace(pred)
        dtype = float_dtype(xp, pred)
        labels = aligned(xp, self, pred, labels, dtype, classes=True)
        # The label's class: its highest entry (one-hot: its 1), the first of equal ones.
        first = xp.argmax(labels, axis=-1)[..., None] == xp.arange(pred.shape[-1])
        at_label = xp.sum(xp.where(first, pred, xp.zeros_like(pred)), axis=-1)
        above = xp.sum(xp.astype(pred > at_label[..., None], xp.int32), axis=-1)
        return mean_stats(self, above < self.k, sample_weight, dtype)


@dataclass(frozen=True)
class SparseTopKCategoricalAccuracy(TopKCategoricalAccuracy):
    """:class:`TopKCategoricalAccuracy` under Keras' name for class-index labels.

    Args:
      k: how many of the highest predictions count.
      name: the key it is logged under (default ``"sparse_top_k_categorical_accuracy"``).
      from_logits: accepted for Keras' signature (the ranking is the same).
    """

    name: str = "sparse_top_k_categorical_accuracy"
