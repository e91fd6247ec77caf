"""Metrics: Keras' names and meanings, computed on the device as additive statistics.

A :class:`Metric` comes in two halves, so that an epoch's metric is exact and costs no host
read per step:

* ``stats(pred, labels, sample_weight=None)`` runs on the arrays' backend, inside the compiled
  step (jit-safe: no host read, no Python branch on values). It returns a 1-D vector of
  ``size`` **additive** sufficient statistics of the batch: a mean's ``[sum(w * v), sum(w)]``,
  precision's ``[tp, tp + fp]``, AUC's confusion counts at each threshold.
* ``result(total)`` runs on the host on the **sum** of those vectors over any number of batches.

Every statistic is a sum over examples, so the sum over an epoch's batches is the statistic of
the whole epoch: ``result`` gives exactly the metric of all the data (a mean of per-batch
precisions or AUCs would not), whatever the batch size, a ragged last batch included, and the
vectors can stay on the device, added there, until a log is read. Statistics are in the
predictions' float dtype (float32 for 16-bit ones); float32 counts are exact up to 2**24, so
long accumulations are best added in float64.

``sample_weight`` follows Keras: a weight per example, shape ``(N,)`` (or ``(N, 1)``),
broadcast over the other axes; a weighted mean is ``sum(w * v) / sum(w)``, an example's value
being the mean over its non-batch axes. Metrics are frozen dataclasses (hashable: they key
compile caches); :func:`get` builds one from what Keras' ``compile(metrics=...)`` accepts, and
:func:`default_for` says what is logged when nothing is asked.
"""

from wframe.metrics.accuracy import (
    AutoAccuracy,
    BinaryAccuracy,
    CategoricalAccuracy,
    SparseCategoricalAccuracy,
    SparseTopKCategoricalAccuracy,
    TopKCategoricalAccuracy,
)
from wframe.metrics.base import Metric, mean_stats
from wframe.metrics.confusion import AUC, Precision, Recall
from wframe.metrics.registry import NAMES, default_for, get, resolve
from wframe.metrics.regression import (
    MeanAbsoluteError,
    MeanMetricWrapper,
    MeanSquaredError,
    RootMeanSquaredError,
)

__all__ = [
    "AUC",
    "NAMES",
    "AutoAccuracy",
    "BinaryAccuracy",
    "CategoricalAccuracy",
    "MeanAbsoluteError",
    "MeanMetricWrapper",
    "MeanSquaredError",
    "Metric",
    "Precision",
    "Recall",
    "RootMeanSquaredError",
    "SparseCategoricalAccuracy",
    "SparseTopKCategoricalAccuracy",
    "TopKCategoricalAccuracy",
    "default_for",
    "get",
    "mean_stats",
    "resolve",
]
