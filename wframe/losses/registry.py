"""Losses by name: wframe's names, Keras' names and Keras' class names (any case)."""

from __future__ import annotations

from typing import Any

from wframe.losses import crossentropy, hinge, probabilistic, regression
from wframe.losses.base import Loss
from wframe.losses.callable import CallableLoss

# Keras' names take Keras' meaning (probabilities for the cross-entropies); wframe's own names
# (softmax_cross_entropy, cross_entropy, binary_cross_entropy) take logits.
_LOSSES: dict[str, type[Loss]] = {
    "softmax_cross_entropy": crossentropy.SoftmaxCrossEntropy,
    "cross_entropy": crossentropy.SoftmaxCrossEntropy,
    "categorical_crossentropy": crossentropy.CategoricalCrossentropy,
    "categoricalcrossentropy": crossentropy.CategoricalCrossentropy,
    "sparse_categorical_crossentropy": crossentropy.SparseCategoricalCrossentropy,
    "sparsecategoricalcrossentropy": crossentropy.SparseCategoricalCrossentropy,
    "binary_cross_entropy": crossentropy.BinaryCrossEntropy,
    "binary_crossentropy": crossentropy.BinaryCrossentropy,
    "binarycrossentropy": crossentropy.BinaryCrossentropy,
    "mse": regression.MeanSquaredError,
    "mean_squared_error": regression.MeanSquaredError,
    "meansquarederror": regression.MeanSquaredError,
    "mae": regression.MeanAbsoluteError,
    "mean_absolute_error": regression.MeanAbsoluteError,
    "meanabsoluteerror": regression.MeanAbsoluteError,
    "huber": regression.Huber,
    "huber_loss": regression.Huber,
    "log_cosh": regression.LogCosh,
    "logcosh": regression.LogCosh,
    "cosine_similarity": regression.CosineSimilarity,
    "cosinesimilarity": regression.CosineSimilarity,
    "kl_divergence": probabilistic.KLDivergence,
    "kld": probabilistic.KLDivergence,
    "kullback_leibler_divergence": probabilistic.KLDivergence,
    "kldivergence": probabilistic.KLDivergence,
    "poisson": probabilistic.Poisson,
    "hinge": hinge.Hinge,
    "squared_hinge": hinge.SquaredHinge,
    "squaredhinge": hinge.SquaredHinge,
}
#: The built-in loss classes by class name: the ones a model file stores
#: (:mod:`wframe.saving.compile_config`).
CLASSES: dict[str, type[Loss]] = {cls.__name__: cls for cls in _LOSSES.values()}


def get(identifier: Any, **kwargs: Any) -> Loss:
    """A loss by name, a :class:`Loss` instance unchanged, a :class:`Loss` class instantiated,
    or a plain function ``fn(y_true, y_pred)`` wrapped as a :class:`CallableLoss`.

    Keras' names mean what they mean in Keras: ``"binary_crossentropy"``,
    ``"categorical_crossentropy"`` and ``"sparse_categorical_crossentropy"`` take
    probabilities unless ``from_logits=True``; wframe's ``"softmax_cross_entropy"``
    (``"cross_entropy"``) and ``"binary_cross_entropy"`` take logits unless
    ``from_logits=False``.

    Args:
      identifier: a name (any case), a :class:`Loss` (instance or class) or a function.
      **kwargs: options of the named loss, e.g. ``from_logits=True`` or ``delta=0.5``.
    """
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier(**kwargs)
    if isinstance(identifier, str):
        if identifier.lower() not in _LOSSES:
            raise ValueError(f"Unknown loss {identifier!r}. Expected one of {sorted(_LOSSES)}.")
        return _LOSSES[identifier.lower()](**kwargs)
    if callable(identifier) and not isinstance(identifier, type):
        return CallableLoss(identifier, **kwargs)
    raise TypeError(
        f"loss must be a name or a wframe.losses.Loss, got {type(identifier).__name__}; a "
        "function fn(y_true, y_pred) is accepted too"
    )
