"""Losses: ``loss(pred, labels, sample_weight=None) -> (value, dpred)``, the loss as Keras
reduces it (``sum_over_batch_size``) and its gradient w.r.t. the predictions.

Written once on ``xp``; numerically stable (log-sum-exp, log1p). Host-side ``check`` methods
validate labels before anything is compiled, so the compiled code stays branch-free. Names
follow Keras (``get("huber")``, ``get("binary_crossentropy")``) with Keras' meaning; a plain
function ``fn(y_true, y_pred)`` is a loss on backends with autodiff (:class:`CallableLoss`).
"""

from wframe.losses.accuracy import METRICS, accuracy, probability_accuracy
from wframe.losses.base import EPSILON, Loss, Reduced, expand_weights
from wframe.losses.callable import CallableLoss
from wframe.losses.crossentropy import (
    BinaryCrossEntropy,
    BinaryCrossentropy,
    CategoricalCrossentropy,
    SoftmaxCrossEntropy,
    SparseCategoricalCrossentropy,
)
from wframe.losses.hinge import Hinge, SquaredHinge
from wframe.losses.outputs import Outputs
from wframe.losses.probabilistic import KLDivergence, Poisson
from wframe.losses.registry import get
from wframe.losses.regression import (
    CosineSimilarity,
    Huber,
    LogCosh,
    MeanAbsoluteError,
    MeanSquaredError,
)

__all__ = [
    "EPSILON",
    "METRICS",
    "BinaryCrossEntropy",
    "BinaryCrossentropy",
    "CallableLoss",
    "CategoricalCrossentropy",
    "CosineSimilarity",
    "Hinge",
    "Huber",
    "KLDivergence",
    "LogCosh",
    "Loss",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "Outputs",
    "Poisson",
    "Reduced",
    "SoftmaxCrossEntropy",
    "SparseCategoricalCrossentropy",
    "SquaredHinge",
    "accuracy",
    "expand_weights",
    "get",
    "probability_accuracy",
]
