"""Losses between distributions and counts, Keras' formulas with hand-written gradients:
Kullback-Leibler divergence and Poisson."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from wframe.backends import kinks
from wframe.losses.base import EPSILON, Reduced


def _check_range(loss, labels, low: float, high: float | None, what: str):
    if labels.size and (labels.min() < low or (high is not None and labels.max() > high)):
        raise ValueError(
            f"loss '{loss.name}' expects {what}, got values in [{labels.min()}, {labels.max()}]"
        )
    return labels


@dataclass(frozen=True)
class KLDivergence(Reduced):
    """Keras' ``kl_divergence``: ``sum(y * log(y / p))`` over the last axis, with labels ``y``
    and predictions ``p`` (probabilities, e.g. a softmax output) both clipped to ``[1e-7, 1]``.

    Args:
      metric: a metric logged beside the loss in ``fit``/``evaluate``: ``"accuracy"``,
        ``"probability_accuracy"`` or ``None`` (default, none).
    """

    name = "kl_divergence"
    axis: ClassVar[int] = -1

    def check(self, pred_shape, labels):
        labels = super().check(pred_shape, labels)
        return _check_range(self, labels, 0, 1, "probabilities in [0, 1] as labels")

    def terms(self, xp, pred, labels, scale):
        y = xp.clip(labels, EPSILON, 1.0)
        p = kinks.clip(pred, EPSILON, 1.0)
        inside = xp.astype((pred > EPSILON) & (pred < 1.0), pred.dtype)
        terms = xp.sum(y * xp.log(y / p), axis=-1, keepdims=True)
        return terms, -y / p * inside * scale


@dataclass(frozen=True)
class Poisson(Reduced):
    """Keras' ``poisson``: the mean of ``p - y * log(p + 1e-7)``, for predicted rates ``p > 0``
    (e.g. a softplus or exp output) and counts ``y >= 0``.

    Args:
      metric: a metric logged beside the loss in ``fit``/``evaluate``: ``"accuracy"``,
        ``"probability_accuracy"`` or ``None`` (default, none).
    """

    name = "poisson"

    def check(self, pred_shape, labels):
        labels = super().check(pred_shape, labels)
        return _check_range(self, labels, 0, None, "counts >= 0 as labels")

    def terms(self, xp, pred, labels, scale):
        shifted = pred + EPSILON
        return pred - labels * xp.log(shifted), (1 - labels / shifted) * scale
