"""Mean metrics: mean absolute and squared errors, their root, and any function of
per-example values (:class:`MeanMetricWrapper`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from wframe.backends import array_namespace
from wframe.metrics.base import Metric, aligned, float_dtype, mean_stats


@dataclass(frozen=True)
class MeanMetricWrapper(Metric):
    """The (weighted) mean of ``fn(y_true, y_pred)``, Keras' argument order: per-example values
    of shape ``(N,)`` (or ``(N, ...)``, averaged per example). ``fn`` is written with the
    arrays' namespace and must be jit-safe to run inside a compiled step.

    Args:
      fn: ``fn(y_true, y_pred) -> per-example values``, jit-safe.
      name: the key it is logged under (default ``"mean_metric_wrapper"``).
    """

    fn: Callable = None
    name: str = "mean_metric_wrapper"

    def __post_init__(self):
        if not callable(self.fn):
            raise TypeError(
                f"MeanMetricWrapper '{self.name}': fn must be a function fn(y_true, y_pred) of "
                f"per-example values, got {self.fn!r}"
            )

    def stats(self, pred, labels, sample_weight=None):
        xp = array_namespace(pred)
        return mean_stats(self, self.fn(labels, pred), sample_weight, float_dtype(xp, pred))


def _error(metric, pred, labels, sample_weight, power):
    xp = array_namespace(pred)
    dtype = float_dtype(xp, pred)
    diff = xp.astype(pred, dtype) - aligned(xp, metric, pred, labels, dtype, classes=False)
    values = xp.abs(diff) if power == 1 else diff * diff
    return mean_stats(metric, values, sample_weight, dtype)


@dataclass(frozen=True)
class MeanAbsoluteError(Metric):
    """Mean of ``|pred - labels|`` (labels of the predictions' shape, or ``(N,)`` for one
    output).

    Args:
      name: the key it is logged under (default ``"mean_absolute_error"``).
    """

    name: str = "mean_absolute_error"

    def stats(self, pred, labels, sample_weight=None):
        return _error(self, pred, labels, sample_weight, 1)


@dataclass(frozen=True)
class MeanSquaredError(Metric):
    """Mean of ``(pred - labels)**2``.

    Args:
      name: the key it is logged under (default ``"mean_squared_error"``).
    """

    name: str = "mean_squared_error"

    def stats(self, pred, labels, sample_weight=None):
        return _error(self, pred, labels, sample_weight, 2)


@dataclass(frozen=True)
class RootMeanSquaredError(MeanSquaredError):
    """Square root of the epoch's :class:`MeanSquaredError` (not a mean of batch roots).

    Args:
      name: the key it is logged under (default ``"root_mean_squared_error"``).
    """

    name: str = "root_mean_squared_error"

    def result(self, total):
        return math.sqrt(super().result(total))
