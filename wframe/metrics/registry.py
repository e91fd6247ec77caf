"""Metrics by name, as Keras' ``compile(metrics=[...])`` takes them, and the loss's say in them:
which accuracy ``"accuracy"`` means, whether predictions are logits, what is logged by default."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from wframe.losses import BinaryCrossEntropy, SoftmaxCrossEntropy
from wframe.metrics.accuracy import (
    AutoAccuracy,
    BinaryAccuracy,
    CategoricalAccuracy,
    SparseCategoricalAccuracy,
    SparseTopKCategoricalAccuracy,
    TopKCategoricalAccuracy,
)
from wframe.metrics.base import Metric
from wframe.metrics.confusion import AUC, Precision, Recall
from wframe.metrics.regression import (
    MeanAbsoluteError,
    MeanMetricWrapper,
    MeanSquaredError,
    RootMeanSquaredError,
)

_ACCURACY = ("accuracy", "acc")
_CLASSES = (
    BinaryAccuracy,
    CategoricalAccuracy,
    SparseCategoricalAccuracy,
    TopKCategoricalAccuracy,
    SparseTopKCategoricalAccuracy,
    Precision,
    Recall,
    AUC,
    MeanAbsoluteError,
    MeanSquaredError,
    RootMeanSquaredError,
)
#: Keras' metric names and the class of each (class names, any case, are accepted too).
NAMES: dict[str, type] = {
    **{cls.name: cls for cls in _CLASSES},
    "mae": MeanAbsoluteError,
    "mse": MeanSquaredError,
    "rmse": RootMeanSquaredError,
}
_LOOKUP = {**NAMES, **{cls.__name__.lower(): cls for cls in _CLASSES}}
#: The built-in metric classes by class name: the ones a model file stores
#: (:mod:`wframe.saving.compile_config`).
CLASSES: dict[str, type] = {cls.__name__: cls for cls in (*_CLASSES, AutoAccuracy)}


def _from_logits(loss) -> bool:
    """Whether ``loss`` takes logits; Keras' default (probabilities) for one that does not say."""
    return bool(getattr(loss, "from_logits", False))


def resolve(metric: Metric, loss=None) -> Metric:
    """``metric`` with ``from_logits=None`` ("follow the loss") filled from ``loss``'s
    ``from_logits`` (probabilities when it has none); a softmax cross-entropy also sets
    precision's, recall's and AUC's ``activation`` to ``"softmax"``. Others are unchanged.

    Args:
      metric: a :class:`Metric` instance.
      loss: the model's loss object, or ``None`` (then ``from_logits`` becomes False).
    """
    if getattr(metric, "from_logits", False) is not None:
        return metric
    changes = {"from_logits": _from_logits(loss)}
    if hasattr(metric, "activation") and isinstance(loss, SoftmaxCrossEntropy):
        changes["activation"] = "softmax"
    return replace(metric, **changes)


def _accuracy(name: str, loss) -> Metric:
    """``"accuracy"`` as Keras chooses it from the loss, named ``name``."""
    if isinstance(loss, BinaryCrossEntropy):
        return BinaryAccuracy(name, from_logits=_from_logits(loss))
    if isinstance(loss, SoftmaxCrossEntropy):
        return CategoricalAccuracy(name, from_logits=_from_logits(loss))
    return AutoAccuracy(name, from_logits=_from_logits(loss))


def get(identifier: str | Metric | Callable, loss=None) -> Metric:
    """A metric from what Keras' ``compile(metrics=[...])`` accepts, keyed as Keras keys it.

    Args:
      identifier: a name, any case, whose log key is the string as written (Keras 3):
        ``"accuracy"``/``"acc"`` (binary accuracy for a binary cross-entropy, categorical or
        sparse by the labels' shape for a softmax cross-entropy, by the shapes otherwise),
        ``"binary_accuracy"``, ``"categorical_accuracy"``, ``"sparse_categorical_accuracy"``,
        ``"top_k_categorical_accuracy"``, ``"sparse_top_k_categorical_accuracy"``,
        ``"precision"``, ``"recall"``, ``"auc"``, ``"mae"``, ``"mse"``, ``"rmse"``, the long
        names of the last three, Keras' class names; a :class:`Metric` (its
        ``from_logits=None`` filled from ``loss``); or a function ``fn(y_true, y_pred)`` of
        per-example values (a :class:`MeanMetricWrapper` named ``fn.__name__``).
      loss: the loss of the output the metric watches (``None``: none known).

    Raises:
      ValueError: an unknown name (the message lists the known ones).
      TypeError: neither a name, a :class:`Metric` nor a function.
    """
    if isinstance(identifier, Metric):
        return resolve(identifier, loss)
    if isinstance(identifier, str):
        key = identifier.lower()
        if key in _ACCURACY:
            return _accuracy(identifier, loss)
        if key not in _LOOKUP:
            raise ValueError(
                f"Unknown metric {identifier!r}. Expected one of "
                f"{sorted({*_ACCURACY, *NAMES})}, a wframe.metrics.Metric or a function "
                "fn(y_true, y_pred)."
            )
        return resolve(_LOOKUP[key](name=identifier), loss)
    if callable(identifier):
        return MeanMetricWrapper(identifier, getattr(identifier, "__name__", "metric"))
    raise TypeError(
        "a metric must be a name, a wframe.metrics.Metric or a function fn(y_true, y_pred), "
        f"got {type(identifier).__name__}"
    )


def default_for(loss) -> tuple[Metric, ...]:
    """What ``fit``/``evaluate`` log after the loss when no ``metrics=`` is given: ``accuracy``,
    named so whatever ``from_logits`` says, for a classification loss (a cross-entropy, or a
    loss whose ``metric`` attribute asks for accuracy); nothing for the others.

    Args:
      loss: the model's loss object; its type and ``from_logits`` pick the accuracy kind.
    """
    default = "accuracy" if isinstance(loss, (BinaryCrossEntropy, SoftmaxCrossEntropy)) else None
    if getattr(loss, "metric", default) in ("accuracy", "probability_accuracy"):
        return (_accuracy("accuracy", loss),)
    return ()
