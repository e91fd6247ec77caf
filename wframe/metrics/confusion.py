"""Metrics of confusion counts: precision, recall, and the ROC curve's area (AUC) from counts
at many thresholds, all weighted sums over elements (so additive over batches)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wframe.backends import array_namespace
from wframe.metrics.base import (
    EPSILON,
    Metric,
    aligned,
    broadcast_weight,
    float_dtype,
    logit,
    scores,
)


def _auc_thresholds(xp, t, dtype):
    """Keras' AUC thresholds ``-eps, 1/(t-1), ..., (t-2)/(t-1), 1+eps``, made on the device
    (no host-to-device copy inside a compiled step)."""
    i = xp.arange(t, dtype=dtype)
    ends = xp.astype(i == t - 1, dtype) - xp.astype(i == 0, dtype)
    return i / (t - 1) + ends * EPSILON


def _confusion(metric, pred, labels, sample_weight, threshold=None):
    """``(tp, fp, positives, negatives)``: weighted counts of the elements above ``threshold``
    (1-D, of one) or above each of AUC's ``metric.num_thresholds`` when it is ``None``, and the
    labels' total weights. Elements are flattened, as Keras does (``multi_label=False``);
    integer class indices become one-hot; a label counts as positive above 0.5."""
    xp = array_namespace(pred)
    dtype = float_dtype(xp, pred)
    y = aligned(xp, metric, pred, labels, dtype, classes=True) > 0.5
    wy = xp.reshape(xp.astype(y, dtype), (-1,))
    if sample_weight is None:
        wn = 1 - wy
    else:
        w = xp.reshape(broadcast_weight(xp, metric, sample_weight, pred.shape, dtype), (-1,))
        wy, wn = w * wy, w - w * wy
    values, logits = scores(xp, metric, pred, dtype)
    if threshold is not None:
        above = values > (logit(threshold) if logits else threshold)
    else:
        if logits:  # sigmoid as Keras' AUC(from_logits=True), stable: exp of -|x| only
            e = xp.exp(-xp.abs(values))
            values = xp.where(values >= 0, 1 / (1 + e), e / (1 + e))
        values = xp.clip(values, 0.0, 1.0)  # Keras: probabilities out of range are clipped
        above = values[..., None] > _auc_thresholds(xp, metric.num_thresholds, dtype)
    above = xp.reshape(xp.astype(above, dtype), (wy.shape[0], -1))
    counts = xp.matmul(xp.stack([wy, wn]), above)  # one product for both rows
    return counts[0, :], counts[1, :], xp.sum(wy), xp.sum(wn)


@dataclass(frozen=True)
class Precision(Metric):
    """``tp / (tp + fp)`` over every element, a prediction above ``thresholds`` counting as
    positive (0 when nothing is). Class-index labels become one-hot (a micro average).

    Args:
      thresholds: one threshold on probabilities (Keras' default 0.5).
      from_logits: the predictions are logits: the threshold applies to their sigmoid, or to
        their softmax over the last axis with ``activation="softmax"`` (what :func:`get` sets
        for a softmax cross-entropy loss on logits).
      name: the key it is logged under (default ``"precision"``).
      activation: ``"sigmoid"`` (default) or ``"softmax"`` over the last axis, applied to
        logits.
    """

    thresholds: float = 0.5
    name: str = "precision"
    from_logits: bool | None = None
    activation: str = "sigmoid"

    def stats(self, pred, labels, sample_weight=None):
        xp = array_namespace(pred)
        tp, fp, _, _ = _confusion(self, pred, labels, sample_weight, self.thresholds)
        return xp.concat([tp, tp + fp])  # result: tp over the predicted positives


@dataclass(frozen=True)
class Recall(Precision):
    """``tp / (tp + fn)``: :class:`Precision`'s counts over the positives.

    Args:
      thresholds: one threshold on probabilities (Keras' default 0.5).
      name: the key it is logged under (default ``"recall"``).
      from_logits: as :class:`Precision`'s.
      activation: ``"sigmoid"`` (default) or ``"softmax"`` over the last axis, applied to
        logits.
    """

    name: str = "recall"

    def stats(self, pred, labels, sample_weight=None):
        xp = array_namespace(pred)
        tp, _, pos, _ = _confusion(self, pred, labels, sample_weight, self.thresholds)
        return xp.concat([tp, pos[None]])  # result: tp over the positives


@dataclass(frozen=True)
class AUC(Metric):
    """Area under the ROC curve from confusion counts at ``num_thresholds`` thresholds, as
    Keras' ``AUC()``: thresholds ``-eps, 1/(T-1), ..., (T-2)/(T-1), 1+eps`` on probabilities,
    the trapezoid rule (``summation_method="interpolation"``), elements flattened
    (``multi_label=False``).

    Args:
      num_thresholds: thresholds of the discretised curve (> 1); more come closer to the exact
        AUC. Statistics: ``tp`` and ``fp`` at each, the positives' and negatives' weights.
      from_logits: as :class:`Precision` (sigmoid, or softmax with ``activation="softmax"``).
      name: the key it is logged under (default ``"auc"``).
      activation: ``"sigmoid"`` (default) or ``"softmax"`` over the last axis, applied to
        logits.
    """

    num_thresholds: int = 200
    name: str = "auc"
    from_logits: bool | None = None
    activation: str = "sigmoid"

    def __post_init__(self):
        if not isinstance(self.num_thresholds, int) or self.num_thresholds < 2:
            raise ValueError(
                f"AUC: num_thresholds must be an integer > 1, got {self.num_thresholds!r}"
            )

    @property
    def size(self) -> int:
        return 2 * self.num_thresholds + 2

    def stats(self, pred, labels, sample_weight=None):
        xp = array_namespace(pred)
        tp, fp, pos, neg = _confusion(self, pred, labels, sample_weight)
        return xp.concat([tp, fp, xp.stack([pos, neg])])

    def result(self, total):
        total = np.asarray(total, dtype=np.float64)
        t = self.num_thresholds
        tp, fp, pos, neg = total[:t], total[t : 2 * t], total[-2], total[-1]
        tpr = tp / pos if pos else np.zeros_like(tp)
        fpr = fp / neg if neg else np.zeros_like(fp)
        return float(np.sum((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2))
