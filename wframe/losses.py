"""Losses: each returns ``(value, dpred)``, the mean loss and its gradient w.r.t. the predictions.

Written once on ``xp``; numerically stable (log-sum-exp, log1p). Host-side ``check`` methods
validate labels before anything is compiled, so the jitted code stays branch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wframe.backends import array_namespace
from wframe.backends.fusion import FUSED
from wframe.types import Array


def _one_hot(labels: Array, num_classes: int, dtype) -> Array:
    xp = array_namespace(labels)
    return xp.astype(labels[:, None] == xp.arange(num_classes), dtype)


@dataclass(frozen=True)
class Loss:
    """Base class: a named loss with its gradient, label check and default metric."""

    name = "loss"
    #: metric logged next to the loss in ``fit`` / ``evaluate`` (``None``: none).
    metric: str | None = None

    def __call__(self, pred: Array, labels: Array) -> tuple[Array, Array]:
        raise TypeError(f"{type(self).__name__} does not define __call__")

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


#: Probabilities are clipped to [EPSILON, 1 - EPSILON] before the log, as Keras does.
EPSILON = 1e-7


@dataclass(frozen=True)
class SoftmaxCrossEntropy(Loss):
    """Cross-entropy with integer labels (N,) or one-hot/soft labels (N, C).

    Args:
      from_logits: the predictions are logits (default: softmax is applied here, stably); with
        ``False`` they are probabilities (a softmax output), clipped to ``[1e-7, 1 - 1e-7]``.
    """

    name = "softmax_cross_entropy"
    metric: str | None = "accuracy"
    from_logits: bool = True

    def __call__(self, logits, labels):
        xp = array_namespace(logits)
        if not self.from_logits:
            return self._from_probabilities(xp, logits, labels)
        fused = FUSED.get(xp)  # value and gradient in one row kernel (CuPy)
        out = fused.softmax_cross_entropy(logits, labels) if fused is not None else None
        if out is not None:
            return out
        n, c = logits.shape
        shifted = logits - xp.max(logits, axis=-1, keepdims=True)
        e = xp.exp(shifted)
        s = xp.sum(e, axis=-1, keepdims=True)
        if labels.ndim == 1:  # class indices: each row's labels sum to 1
            onehot = _one_hot(labels, c, logits.dtype)
            # log-sum-exp minus the label's logit, with the log taken on (n, 1) only.
            value = (xp.sum(xp.log(s)) - xp.sum(onehot * shifted)) / n
            return value, (e / s - onehot) * (1 / n)
        value = -xp.sum(labels * (shifted - xp.log(s))) / n
        # Soft labels need not sum to 1, hence the general form p * sum(y) - y.
        grad = (e / s * xp.sum(labels, axis=-1, keepdims=True) - labels) / n
        return value, grad

    def _from_probabilities(self, xp, probs, labels):
        n, c = probs.shape
        if labels.ndim == 1:
            labels = _one_hot(labels, c, probs.dtype)
        clipped = xp.clip(probs, EPSILON, 1 - EPSILON)
        inside = xp.astype((probs > EPSILON) & (probs < 1 - EPSILON), probs.dtype)
        value = -xp.sum(labels * xp.log(clipped)) / n
        return value, -labels / clipped * inside / n

    def check(self, pred_shape, labels):
        n, c = pred_shape
        if labels.ndim == 1:
            if labels.shape[0] != n:
                raise ValueError(
                    f"loss '{self.name}' got {labels.shape[0]} labels for {n} predictions"
                )
            if not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(
                    f"loss '{self.name}' expects integer class labels of shape ({n},) or one-hot "
                    f"labels of shape ({n}, {c}); got shape {labels.shape} with dtype "
                    f"{labels.dtype}"
                )
            if labels.size and (labels.min() < 0 or labels.max() >= c):
                raise ValueError(
                    f"loss '{self.name}' expects class labels in [0, {c}), got values in "
                    f"[{labels.min()}, {labels.max()}]"
                )
            return labels
        return super().check(pred_shape, labels)

    def label_dtype(self, labels, dtype):
        return "int32" if labels.ndim == 1 else dtype


@dataclass(frozen=True)
class BinaryCrossEntropy(Loss):
    """Binary cross-entropy: labels in [0, 1], the same shape as the predictions.

    Args:
      from_logits: the predictions are logits (default, computed stably); with ``False`` they
        are probabilities (a sigmoid output), clipped to ``[1e-7, 1 - 1e-7]``.
    """

    name = "binary_cross_entropy"
    metric: str | None = "accuracy"
    from_logits: bool = True

    def __post_init__(self):
        if not self.from_logits and self.metric == "accuracy":  # threshold 0.5, not 0
            object.__setattr__(self, "metric", "probability_accuracy")

    def check(self, pred_shape, labels):
        labels = super().check(pred_shape, labels)
        if labels.size and (labels.min() < 0 or labels.max() > 1):
            hint = " (labels in {-1, 1}? map them with (y + 1) / 2)" if labels.min() < 0 else ""
            raise ValueError(
                f"loss '{self.name}' expects labels in [0, 1], got values in "
                f"[{labels.min()}, {labels.max()}]{hint}"
            )
        return labels

    def __call__(self, logits, labels):
        xp = array_namespace(logits)
        if not self.from_logits:
            p = xp.clip(logits, EPSILON, 1 - EPSILON)
            inside = xp.astype((logits > EPSILON) & (logits < 1 - EPSILON), logits.dtype)
            value = -xp.sum(labels * xp.log(p) + (1 - labels) * xp.log(1 - p)) / logits.size
            grad = (p - labels) / (p * (1 - p)) * inside / logits.size
            return value, grad
        e = xp.exp(-xp.abs(logits))
        value = xp.sum(xp.maximum(logits, 0) - logits * labels + xp.log1p(e)) / logits.size
        sig = xp.where(logits >= 0, 1 / (1 + e), e / (1 + e))
        return value, (sig - labels) / logits.size


@dataclass(frozen=True)
class MeanSquaredError(Loss):
    """Mean over all elements of (pred - labels)²."""

    name = "mse"

    def __call__(self, pred, labels):
        diff = pred - labels
        xp = array_namespace(pred)
        return xp.sum(diff * diff) / pred.size, diff * (2 / pred.size)


def accuracy(pred: Array, labels: Array) -> Array:
    """Fraction of correct predictions: argmax for (N, C > 1), ``logit > 0`` for one output."""
    xp = array_namespace(pred)
    if pred.ndim == 2 and pred.shape[1] > 1:
        hits = xp.argmax(pred, axis=-1) == (
            labels if labels.ndim == 1 else xp.argmax(labels, axis=-1)
        )
    else:
        hits = (pred > 0) == (labels > 0.5)
    return xp.sum(xp.astype(hits, pred.dtype)) / hits.size  # NumPy's mean costs 2x a sum


_LOSSES = {
    "softmax_cross_entropy": SoftmaxCrossEntropy,
    "categorical_crossentropy": SoftmaxCrossEntropy,
    "sparse_categorical_crossentropy": SoftmaxCrossEntropy,
    "cross_entropy": SoftmaxCrossEntropy,
    "binary_cross_entropy": BinaryCrossEntropy,
    "binary_crossentropy": BinaryCrossEntropy,
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
}


def probability_accuracy(pred: Array, labels: Array) -> Array:
    """:func:`accuracy` for probabilities: a single output counts as 1 above 0.5."""
    if pred.ndim == 2 and pred.shape[1] > 1:
        return accuracy(pred, labels)
    xp = array_namespace(pred)
    hits = (pred > 0.5) == (labels > 0.5)
    return xp.sum(xp.astype(hits, pred.dtype)) / hits.size


METRICS = {"accuracy": accuracy, "probability_accuracy": probability_accuracy}


def get(identifier: str | Loss, **kwargs) -> Loss:
    """A loss by name (Keras names are aliases) or a :class:`Loss` instance unchanged.

    Args:
      identifier: a name (any case) or a :class:`Loss`.
      **kwargs: options of the named loss, e.g. ``from_logits=False``.
    """
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _LOSSES:
        return _LOSSES[identifier.lower()](**kwargs)
    if isinstance(identifier, str):
        raise ValueError(f"Unknown loss {identifier!r}. Expected one of {sorted(_LOSSES)}.")
    raise TypeError(f"loss must be a name or a wframe.losses.Loss, got {type(identifier).__name__}")
