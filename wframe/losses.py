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

    @property
    def metric_names(self) -> tuple[str, ...]:
        """What ``fit``/``evaluate`` log after ``loss``, in order."""
        return (self.metric,) if self.metric else ()

    def metric_fn(self, name: str):
        """``(pred, labels) -> value`` of one of :attr:`metric_names`."""
        return METRICS[name]


#: Probabilities are clipped to [EPSILON, 1 - EPSILON] before the log, as Keras does.
EPSILON = 1e-7


def _as_float(labels: np.ndarray) -> np.ndarray:
    """One-hot labels given as integers, as floats (the model dtype on the backend)."""
    return labels.astype(np.float64) if not np.issubdtype(labels.dtype, np.floating) else labels


@dataclass(frozen=True)
class SoftmaxCrossEntropy(Loss):
    """Cross-entropy with integer labels (N,) or one-hot/soft labels (N, C); predictions of
    more axes (a sequence's ``(N, T, C)``) take labels ``(N, T)`` or ``(N, T, C)`` and the
    loss is the mean over every position, as Keras'.

    Args:
      from_logits: the predictions are logits (default: softmax is applied here, stably); with
        ``False`` they are probabilities (a softmax output), clipped to ``[1e-7, 1 - 1e-7]``.
    """

    name = "softmax_cross_entropy"
    metric: str | None = "accuracy"
    from_logits: bool = True

    def __call__(self, logits, labels):
        xp = array_namespace(logits)
        if logits.ndim > 2:  # every position a row
            c = logits.shape[-1]
            flat = labels if labels.ndim == logits.ndim else xp.reshape(labels, (-1,))
            if labels.ndim == logits.ndim:
                flat = xp.reshape(labels, (-1, c))
            value, grad = self(xp.reshape(logits, (-1, c)), flat)
            return value, xp.reshape(grad, logits.shape)
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
        if len(pred_shape) > 2 and labels.ndim == len(pred_shape) - 1:
            if labels.shape != tuple(pred_shape[:-1]):
                raise ValueError(
                    f"loss '{self.name}' expects integer labels of shape {tuple(pred_shape[:-1])} "
                    f"for predictions of shape {tuple(pred_shape)}, got {labels.shape}"
                )
            flat = (int(np.prod(pred_shape[:-1])), pred_shape[-1])
            return self.check(flat, labels.reshape(-1)).reshape(labels.shape)
        if len(pred_shape) > 2:
            return _as_float(super().check(pred_shape, labels))
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
        return _as_float(super().check(pred_shape, labels))

    def label_dtype(self, labels, dtype):
        # Class indices (one axis fewer than the predictions) stay integers; one-hot or soft
        # labels were made float by check.
        return "int32" if np.issubdtype(labels.dtype, np.integer) else dtype


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
    if pred.ndim >= 2 and pred.shape[-1] > 1:
        hits = xp.argmax(pred, axis=-1) == (
            labels if labels.ndim == pred.ndim - 1 else xp.argmax(labels, axis=-1)
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
    if pred.ndim >= 2 and pred.shape[-1] > 1:
        return accuracy(pred, labels)
    xp = array_namespace(pred)
    hits = (pred > 0.5) == (labels > 0.5)
    return xp.sum(xp.astype(hits, pred.dtype)) / hits.size


METRICS = {"accuracy": accuracy, "probability_accuracy": probability_accuracy}


@dataclass(frozen=True)
class Outputs(Loss):
    """The loss of a model of several outputs: a loss per output, their weighted sum.

    Predictions and labels are tuples in the order of ``names``. The logs add each output's
    (unweighted) loss and metric as Keras names them: ``"<output>_loss"``,
    ``"<output>_accuracy"``.

    Args:
      losses: a :class:`Loss` per output.
      names: the outputs' names.
      weights: a weight per output (Keras' ``loss_weights``).
    """

    losses: tuple = ()
    names: tuple = ()
    weights: tuple = ()
    name = "loss"

    def __call__(self, preds, labels):
        total, grads = 0.0, []
        for loss, w, p, y in zip(self.losses, self.weights, preds, labels, strict=True):
            value, grad = loss(p, y)
            total = total + (value if w == 1 else w * value)
            grads.append(grad if w == 1 else grad * w)
        return total, tuple(grads)

    def check(self, pred_shape, labels):
        return tuple(
            loss.check(shape, y)
            for loss, shape, y in zip(self.losses, pred_shape, labels, strict=True)
        )

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(
            f"{name}_{what}"
            for name, loss in zip(self.names, self.losses, strict=True)
            for what in ("loss", *loss.metric_names)
        )

    def metric_fn(self, name: str):
        for i, (out, loss) in enumerate(zip(self.names, self.losses, strict=True)):
            if name == f"{out}_loss":
                return lambda p, y, i=i, loss=loss: loss(p[i], y[i])[0]
            for metric in loss.metric_names:
                if name == f"{out}_{metric}":
                    fn = loss.metric_fn(metric)
                    return lambda p, y, i=i, fn=fn: fn(p[i], y[i])
        raise KeyError(name)

    @classmethod
    def of(cls, loss, names: tuple[str, ...], weights=None) -> Outputs:
        """The loss of outputs ``names`` from Keras' ``compile`` arguments: one loss for every
        output, a list (in output order) or a dict by output name; ``weights`` likewise."""
        if isinstance(loss, Outputs):
            return (
                loss
                if weights is None
                else cls(
                    losses=loss.losses,
                    names=names,
                    weights=_per_output(weights, names, "loss_weights", float),
                )
            )
        losses = _per_output(loss, names, "loss", get, broadcast=True)
        w = (
            (1.0,) * len(names)
            if weights is None
            else _per_output(weights, names, "loss_weights", float)
        )
        return cls(losses=losses, names=tuple(names), weights=w)


def _per_output(value, names, what, convert, broadcast=False) -> tuple:
    """One ``convert``-ed entry per output from a dict by name, a list in order, or (with
    ``broadcast``) one value for all."""
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(names))
        missing = [n for n in names if n not in value]
        if unknown or missing:
            raise ValueError(
                f"{what}: the dict names outputs {sorted(value)}, the model's outputs are "
                f"{list(names)} (missing {missing}, unknown {unknown})"
            )
        return tuple(convert(value[n]) for n in names)
    if isinstance(value, (list, tuple)):
        if len(value) != len(names):
            raise ValueError(
                f"{what}: a list of {len(value)} for the model's {len(names)} outputs "
                f"{list(names)}; give one per output, or a dict by output name"
            )
        return tuple(convert(v) for v in value)
    if broadcast:
        return (convert(value),) * len(names)
    raise TypeError(f"{what} must be a list or a dict by output name {list(names)}, got {value!r}")


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
