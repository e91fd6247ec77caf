"""Cross-entropies: softmax over classes and binary, from logits or from probabilities.

wframe's own names (``softmax_cross_entropy``, ``binary_cross_entropy``) take logits by
default; the Keras classes and names (``categorical_crossentropy``,
``sparse_categorical_crossentropy``, ``binary_crossentropy``) take probabilities unless
``from_logits=True``, exactly as Keras. Both compute stably (log-sum-exp, log1p) from logits;
from probabilities they clip to ``[EPSILON, 1 - EPSILON]`` as Keras does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from wframe.backends import array_namespace, kinks
from wframe.backends.fusion import FUSED
from wframe.losses.base import EPSILON, Reduced


def _one_hot(labels, num_classes: int, dtype):
    xp = array_namespace(labels)
    return xp.astype(xp.expand_dims(labels, axis=-1) == xp.arange(num_classes), dtype)


def _as_float(labels: np.ndarray) -> np.ndarray:
    """One-hot labels given as integers, as floats (the model dtype on the backend)."""
    return labels.astype(np.float64) if not np.issubdtype(labels.dtype, np.floating) else labels


@dataclass(frozen=True)
class SoftmaxCrossEntropy(Reduced):
    """Cross-entropy over the last axis with integer labels (N,) or one-hot/soft labels (N, C);
    predictions of more axes (a sequence's ``(N, T, C)``) take labels ``(N, T)`` or
    ``(N, T, C)``, and the loss is the mean over every position, as Keras'. Integer labels of
    shape (N, 1) are taken as (N,), as Keras does.

    Args:
      from_logits: the predictions are logits (default: softmax is applied here, stably); with
        ``False`` they are probabilities (a softmax output), normalised to sum to 1 and clipped
        to ``[1e-7, 1 - 1e-7]`` as Keras does.
      metric: the metric logged beside the loss in ``fit``/``evaluate`` (default ``"accuracy"``;
        ``None`` for none).
    """

    name = "softmax_cross_entropy"
    metric: str | None = "accuracy"
    from_logits: bool = True
    axis: ClassVar[int] = -1
    #: which labels are accepted: "sparse" (class indices), "dense" (one-hot/soft) or both.
    labels_kind: ClassVar[str | None] = None

    def __call__(self, logits, labels, sample_weight=None):
        if sample_weight is None:
            fused = FUSED.get(array_namespace(logits))  # value and gradient in one kernel
            out = self._fused(fused, logits, labels) if fused is not None else None
            if out is not None:
                return out
        return super().__call__(logits, labels, sample_weight)

    def kernel(self, xp):
        fused = FUSED.get(xp)
        rows = None if fused is None or type(self).__call__ is not _SCE_CALL else self._rows(fused)
        if rows is None:
            return self.__call__
        generic = super().__call__

        def run(pred, labels):
            if pred.ndim == 2 and labels.ndim == 1:  # (n, c) and class indices: as they are
                out = rows(pred, labels)
            else:
                out = self._fused(fused, pred, labels)
            return out if out is not None else generic(pred, labels)

        return run

    def _rows(self, fused):
        """The backend's kernel ``(pred (n, c), labels (n,)) -> (value, dpred) or None`` of
        this loss, or ``None``: of logits, or of probabilities where this loss computes its
        terms and count as this class does."""
        if self.from_logits:
            return fused.softmax_cross_entropy
        if type(self).terms is not _SCE_TERMS or type(self).count is not Reduced.count:
            return None
        probs = getattr(fused, "probability_cross_entropy", None)
        return None if probs is None else lambda p, labels: probs(p, labels, EPSILON)

    def _fused(self, fused, pred, labels):
        """The backend's kernel on unweighted predictions of any rank (flattened to rows), or
        ``None``: the generic code."""
        rows = self._rows(fused)
        if rows is None:
            return None
        labels = _class_axis(pred, labels)
        if pred.ndim == 2:
            return rows(pred, labels)
        xp, c = array_namespace(pred), pred.shape[-1]
        dense = labels.ndim == pred.ndim
        flat = xp.reshape(labels, (-1, c) if dense else (-1,))
        out = rows(xp.reshape(pred, (-1, c)), flat)
        return None if out is None else (out[0], xp.reshape(out[1], pred.shape))

    def terms(self, xp, logits, labels, scale):
        labels = _class_axis(logits, labels)
        if not self.from_logits:
            return _probability_terms(xp, logits, labels, scale)
        shifted = logits - xp.max(logits, axis=-1, keepdims=True)
        e = xp.exp(shifted)
        s = xp.sum(e, axis=-1, keepdims=True)
        if labels.ndim == logits.ndim - 1:  # class indices: each row's labels sum to 1
            onehot = _one_hot(labels, logits.shape[-1], logits.dtype)
            # log-sum-exp minus the label's logit.
            terms = xp.log(s) - xp.sum(onehot * shifted, axis=-1, keepdims=True)
            return terms, (e / s - onehot) * scale
        terms = -xp.sum(labels * (shifted - xp.log(s)), axis=-1, keepdims=True)
        # Soft labels need not sum to 1, hence the general form p * sum(y) - y.
        return terms, (e / s * xp.sum(labels, axis=-1, keepdims=True) - labels) * scale

    def check(self, pred_shape, labels):
        pred_shape = tuple(pred_shape)
        lead, c = pred_shape[:-1], pred_shape[-1]
        if np.issubdtype(labels.dtype, np.integer) and c > 1 and labels.shape == (*lead, 1):
            labels = labels[..., 0]  # Keras' (n, 1) class labels
        if labels.shape == lead:
            return self._check_classes(pred_shape, labels)
        if self.labels_kind == "sparse":
            raise ValueError(
                f"loss '{self.name}' expects integer class labels of shape {lead}, got labels "
                f"of shape {labels.shape}; for one-hot (or soft) labels of shape {pred_shape} "
                "use loss='categorical_crossentropy'"
            )
        if labels.ndim != len(pred_shape):
            raise ValueError(
                f"loss '{self.name}' expects integer class labels of shape {lead} or one-hot "
                f"labels of shape {pred_shape}; got shape {labels.shape}"
            )
        return _as_float(super().check(pred_shape, labels))

    def _check_classes(self, pred_shape, labels):
        lead, c = pred_shape[:-1], pred_shape[-1]
        if self.labels_kind == "dense":
            raise ValueError(
                f"loss '{self.name}' expects one-hot (or soft) labels of shape {pred_shape} like "
                f"the predictions, got class labels of shape {labels.shape}; for class indices "
                f"use loss='sparse_categorical_crossentropy' (or one-hot them: np.eye({c})[y])"
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"loss '{self.name}' expects integer class labels of shape {lead} or one-hot "
                f"labels of shape {pred_shape}; got shape {labels.shape} with dtype "
                f"{labels.dtype} (class indices stored as floats? pass y.astype(int))"
            )
        low, high = (labels.min(), labels.max()) if labels.size else (0, 0)
        if c == 1 or low < 0 or high >= c:
            classes = max(int(high) + 1, 2)
            hint = (
                f"; the model's output has {c} unit{'s' if c > 1 else ''}: for {classes} classes "
                f"make the last layer Dense({classes})"
            )
            if c == 1:
                hint += (
                    " (a softmax over 1 unit is always 1; for two classes, Dense(1, "
                    "activation='sigmoid') with loss='binary_crossentropy' works too)"
                )
            raise ValueError(
                f"loss '{self.name}' expects class labels in [0, {c}), got values in "
                f"[{low}, {high}]{hint if c == 1 or high >= c else ''}"
            )
        return labels

    def label_dtype(self, labels, dtype):
        # Class indices (one axis fewer than the predictions) stay integers; one-hot or soft
        # labels were made float by check.
        return "int32" if np.issubdtype(labels.dtype, np.integer) else dtype


_SCE_CALL, _SCE_TERMS = SoftmaxCrossEntropy.__call__, SoftmaxCrossEntropy.terms


def _class_axis(logits, labels):
    """Class labels of shape (..., 1) for predictions of C > 1 classes, as (...)."""
    if labels.ndim == logits.ndim and labels.shape[-1] == 1 and logits.shape[-1] > 1:
        return array_namespace(labels).reshape(labels, labels.shape[:-1])
    return labels


def _probability_terms(xp, probs, labels, scale):
    """Keras' cross-entropy of probabilities: normalised to sum to 1, clipped, then the log."""
    if labels.ndim == probs.ndim - 1:
        labels = _one_hot(labels, probs.shape[-1], probs.dtype)
    total = xp.sum(probs, axis=-1, keepdims=True)
    q = probs / total
    clipped = kinks.clip(q, EPSILON, 1 - EPSILON)
    inside = xp.astype((q > EPSILON) & (q < 1 - EPSILON), probs.dtype)
    terms = -xp.sum(labels * xp.log(clipped), axis=-1, keepdims=True)
    dq = -labels / clipped * inside * scale
    # Through q = p / sum(p): dp = (dq - sum(dq * q)) / sum(p).
    return terms, (dq - xp.sum(dq * q, axis=-1, keepdims=True)) / total


@dataclass(frozen=True)
class CategoricalCrossentropy(SoftmaxCrossEntropy):
    """Keras' ``categorical_crossentropy``: one-hot or soft labels shaped like the
    predictions, which are probabilities unless ``from_logits=True`` (Keras' default).
    For integer class labels use :class:`SparseCategoricalCrossentropy`.

    Args:
      metric: the metric logged beside the loss in ``fit``/``evaluate`` (default ``"accuracy"``;
        ``None`` for none).
      from_logits: the predictions are logits; ``False`` (default) takes probabilities, clipped
        to ``[1e-7, 1 - 1e-7]``.
    """

    name = "categorical_crossentropy"
    from_logits: bool = False
    labels_kind: ClassVar[str | None] = "dense"


@dataclass(frozen=True)
class SparseCategoricalCrossentropy(SoftmaxCrossEntropy):
    """Keras' ``sparse_categorical_crossentropy``: integer class labels (N,) or (N, 1);
    predictions are probabilities unless ``from_logits=True`` (Keras' default).

    Args:
      metric: the metric logged beside the loss in ``fit``/``evaluate`` (default ``"accuracy"``;
        ``None`` for none).
      from_logits: the predictions are logits; ``False`` (default) takes probabilities, clipped
        to ``[1e-7, 1 - 1e-7]``.
    """

    name = "sparse_categorical_crossentropy"
    from_logits: bool = False
    labels_kind: ClassVar[str | None] = "sparse"


@dataclass(frozen=True)
class BinaryCrossEntropy(Reduced):
    """Binary cross-entropy: labels in [0, 1], the same shape as the predictions.

    Args:
      from_logits: the predictions are logits (default, computed stably); with ``False`` they
        are probabilities (a sigmoid output), clipped to ``[1e-7, 1 - 1e-7]``.
      metric: the metric logged beside the loss in ``fit``/``evaluate`` (default ``"accuracy"``;
        ``None`` for none).
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

    def terms(self, xp, x, labels, scale):
        if not self.from_logits:
            p = kinks.clip(x, EPSILON, 1 - EPSILON)
            inside = xp.astype((x > EPSILON) & (x < 1 - EPSILON), x.dtype)
            terms = -(labels * xp.log(p) + (1 - labels) * xp.log(1 - p))
            return terms, (p - labels) / (p * (1 - p)) * inside * scale
        e = xp.exp(-xp.abs(x))
        terms = kinks.softplus(x, e) - x * labels  # max(x, 0) - x y + log1p(exp(-|x|))
        sig = xp.where(x >= 0, 1 / (1 + e), e / (1 + e))
        return terms, (sig - labels) * scale


@dataclass(frozen=True)
class BinaryCrossentropy(BinaryCrossEntropy):
    """Keras' ``binary_crossentropy``: predictions are probabilities (a sigmoid output) unless
    ``from_logits=True``, Keras' default.

    Args:
      metric: the metric logged beside the loss in ``fit``/``evaluate`` (default ``"accuracy"``;
        ``None`` for none).
      from_logits: the predictions are logits; ``False`` (default) takes probabilities, clipped
        to ``[1e-7, 1 - 1e-7]``.
    """

    name = "binary_crossentropy"
    from_logits: bool = False
