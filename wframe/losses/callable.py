"""A plain function ``fn(y_true, y_pred)`` as a loss, differentiated by autodiff (JAX).

Keras' argument order: labels first. The function is written with the arrays' namespace
(``xp = wf.backends.array_namespace(y_pred)``) and returns per-sample losses (reduced as Keras'
``sum_over_batch_size``, with sample weights) or a scalar. Backends without autodiff (NumPy,
CuPy) cannot differentiate it: training there is refused before the first step (see
:attr:`Loss.needs_autodiff`) with the way out; its value (``evaluate``) works everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wframe.backends import array_namespace, backend_of
from wframe.losses.base import Loss, expand_weights
from wframe.types import Array


@dataclass(frozen=True, init=False)
class CallableLoss(Loss):
    """``fn(y_true, y_pred) -> per-sample losses (or a scalar)`` as a :class:`Loss`.

    Args:
      fn: the function, written with the arrays' namespace.
      metric: a metric to log next to the loss (default none, as Keras for a custom loss).
    """

    fn: Callable[[Any, Any], Any] | None = None
    needs_autodiff = True

    def __init__(self, fn: Callable[[Any, Any], Any], metric: str | None = None):
        if not callable(fn):
            raise TypeError(f"CallableLoss: fn must be a function (y_true, y_pred), got {fn!r}")
        object.__setattr__(self, "fn", fn)
        object.__setattr__(self, "metric", metric)
        object.__setattr__(self, "name", getattr(fn, "__name__", type(fn).__name__))

    def refusal(self, backend: str) -> str:
        """Why and how: the message for a backend without autodiff."""
        return (
            f"loss {self.name!r} is a plain function (y_true, y_pred) -> loss, which only a "
            f"backend with autodiff can differentiate; the {backend} backend has none. Write it "
            "as a wframe.losses.Loss subclass whose __call__(pred, labels, sample_weight=None) "
            "returns (value, dpred) with the hand-written gradient, or train on the jax backend "
            "(WFRAME_BACKEND=jax, or model.to_backend('jax'))"
        )

    def check(self, pred_shape, labels):
        """Any numeric labels of one row per example (the function decides what they mean);
        labels (N,) for predictions (N, 1) are a column, as Keras does."""
        pred_shape = tuple(pred_shape)
        if labels.shape == pred_shape[:-1] and pred_shape[-1:] == (1,):
            labels = labels[..., None]
        if labels.ndim == 0 or labels.shape[0] != pred_shape[0]:
            raise ValueError(
                f"loss '{self.name}' expects labels of one row per example ({pred_shape[0]}), "
                f"got shape {labels.shape}"
            )
        return super().check(labels.shape, labels)

    def __call__(self, pred, labels, sample_weight=None):
        backend = backend_of(pred)
        if not backend.has_autodiff:
            raise TypeError(self.refusal(backend.name))
        grad = backend.value_and_grad(lambda p: self.value(p, labels, sample_weight))
        return grad(pred)

    def value(self, pred: Array, labels: Array, sample_weight: Array | None = None) -> Array:
        xp = array_namespace(pred)
        out = self.fn(labels, pred)
        if not hasattr(out, "ndim"):
            raise TypeError(
                f"loss {self.name!r} must return an array of per-sample losses (or a scalar "
                f"array), got {type(out).__name__}"
            )
        if sample_weight is None:
            return xp.sum(out) / max(out.size, 1) if out.ndim else out
        w = expand_weights(xp, sample_weight, out)
        if out.ndim == 0:  # Keras broadcasts a scalar loss over the weights
            return out * xp.mean(w)
        weighted = out * w
        return xp.sum(weighted) / max(weighted.size, 1)
