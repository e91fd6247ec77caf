"""Regression losses, Keras' formulas with hand-written gradients: squared and absolute error,
Huber, log-cosh and (negative) cosine similarity."""

from __future__ import annotations

import math
from dataclasses import dataclass

from wframe.backends import kinks
from wframe.losses.base import EPSILON, Reduced


@dataclass(frozen=True)
class MeanSquaredError(Reduced):
    """Mean of (pred - labels)² (Keras ``mean_squared_error``).

    Args:
      metric: a metric logged beside the loss in ``fit``/``evaluate``: ``"accuracy"``,
        ``"probability_accuracy"`` or ``None`` (default, none).
    """

    name = "mse"

    def terms(self, xp, pred, labels, scale):
        diff = pred - labels
        return diff * diff, diff * (2 * scale)


@dataclass(frozen=True)
class MeanAbsoluteError(Reduced):
    """Mean of |pred - labels| (Keras ``mean_absolute_error``); the gradient at 0 is 0.

    Args:
      metric: a metric logged beside the loss in ``fit``/``evaluate``: ``"accuracy"``,
        ``"probability_accuracy"`` or ``None`` (default, none).
    """

    name = "mae"

    def terms(self, xp, pred, labels, scale):
        diff = pred - labels
        return kinks.abs(diff), xp.sign(diff) * scale


@dataclass(frozen=True)
class Huber(Reduced):
    """Huber loss (Keras ``huber``): ``0.5 x²`` where ``|x| <= delta``, else
    ``delta * |x| - 0.5 delta²``, with ``x = pred - labels``.

    Args:
      delta: where the loss turns from quadratic to linear (> 0).
      metric: a metric logged beside the loss in ``fit``/``evaluate``: ``"accuracy"``,
        ``"probability_accuracy"`` or ``None`` (default, none).
    """

    name = "huber_loss"
    delta: float = 1.0

    def __post_init__(self):
        if not (isinstance(self.delta, (int, float)) and self.delta > 0):
            raise ValueError(f"Huber: delta must be a number > 0, got {self.delta!r}")

    def terms(self, xp, pred, labels, scale):
        diff = pred - labels
        a, d = xp.abs(diff), float(self.delta)
        terms = xp.where(a <= d, 0.5 * diff * diff, d * a - 0.5 * d * d)
        return terms, xp.clip(diff, -d, d) * scale


@dataclass(frozen=True)
class LogCosh(Reduced):
    """Mean of log(cosh(pred - labels)) (Keras ``log_cosh``), computed without overflow as
    ``x + softplus(-2x) - log 2``; its gradient is ``tanh(x)``.

    Args:
      metric: a metric logged beside the loss in ``fit``/``evaluate``: ``"accuracy"``,
        ``"probability_accuracy"`` or ``None`` (default, none).
    """

    name = "log_cosh"

    def terms(self, xp, pred, labels, scale):
        x = pred - labels
        return x + kinks.softplus(-2 * x) - math.log(2.0), xp.tanh(x) * scale


@dataclass(frozen=True)
class CosineSimilarity(Reduced):
    """Keras' ``cosine_similarity`` loss: the NEGATIVE cosine between predictions and labels
    along ``axis`` (-1: best, 0: orthogonal), each l2-normalised as Keras does
    (``x * min(1 / ||x||, 1 / 1e-7)``, so a zero vector gives 0).

    Args:
      axis: the features axis the cosine is taken over (not the batch axis).
      metric: a metric logged beside the loss in ``fit``/``evaluate``: ``"accuracy"``,
        ``"probability_accuracy"`` or ``None`` (default, none).
    """

    name = "cosine_similarity"
    axis: int = -1

    def terms(self, xp, pred, labels, scale):
        axis = self.axis
        ny = labels * _inverse_norm(xp, labels, axis)[0]
        r, unclipped = _inverse_norm(xp, pred, axis)
        npred = pred * r
        cos = xp.sum(ny * npred, axis=axis, keepdims=True)
        # d(-cos)/dpred = -r (ny - cos * npred); where the norm is clipped r is constant.
        grad = -r * (ny - cos * npred * unclipped) * scale
        return -cos, grad


def _inverse_norm(xp, x, axis):
    """``(min(1 / ||x||, 1 / EPSILON), where the norm is above EPSILON)`` along ``axis``."""
    square = xp.sum(x * x, axis=axis, keepdims=True)
    floor = EPSILON * EPSILON
    r = 1 / xp.sqrt(kinks.maximum(square, floor))
    return r, xp.astype(square > floor, x.dtype)
