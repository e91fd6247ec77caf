"""Weight penalties added to the loss: ``l1``, ``l2`` and ``l1_l2``, with Keras' meaning.

A layer takes them per parameter (``Dense(64, kernel_regularizer="l2")``, or an instance such as
``l2(1e-4)``; also ``bias_regularizer``, and ``recurrent_regularizer`` for the recurrent
layers' ``W_h``). Training adds ``penalty = sum of the layers' terms`` to the loss: on JAX
inside the differentiated objective, on NumPy and CuPy as the closed-form gradient of each term
computed from the params themselves (no second forward). ``History`` logs the data loss as
``loss`` and the penalty as ``penalty``.

``l2(λ)`` in the loss is not decoupled weight decay: under plain SGD the two are the same step
(``2λ·lr·W`` with ``weight_decay = 2λ``), but Adam divides the penalty's gradient by its running
scale, so heavily-updated weights are decayed less. For decoupled decay use ``adamw`` or
``add_decayed_weights``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from wframe.backends import array_namespace
from wframe.tree import path_get
from wframe.types import Array


def _factor(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    if value < 0:
        raise ValueError(
            f"{what} must be >= 0 (a negative penalty rewards large weights), got {value!r}"
        )
    return float(value)


@dataclass(frozen=True)
class Regularizer:
    """``penalty(W) = l1·Σ|W| + l2·ΣW²``; :meth:`grad` is its closed-form gradient.

    Args:
      l1, l2: the factors, finite numbers >= 0 (default 0); a negative one is refused (it
        would reward large weights).
    """

    l1: float = 0.0
    l2: float = 0.0

    def __post_init__(self):
        name = type(self).__name__
        object.__setattr__(self, "l1", _factor(self.l1, f"{name}: l1"))
        object.__setattr__(self, "l2", _factor(self.l2, f"{name}: l2"))

    def __call__(self, w: Array) -> Array:
        xp = array_namespace(w)
        out = xp.zeros((), dtype=w.dtype)
        if self.l1:
            # |w| as w·sign(w): autodiff then gives sign(w), 0 at w = 0 as PyTorch and TF do
            # (jax.grad of abs gives 1 there), so JAX agrees with :meth:`grad`.
            out = out + self.l1 * xp.sum(w * xp.sign(w))
        if self.l2:
            out = out + self.l2 * xp.sum(w * w)
        return out

    def grad(self, w: Array) -> Array:
        """``l1·sign(W) + 2·l2·W`` (the subgradient 0 at W = 0)."""
        xp = array_namespace(w)
        if self.l1 and self.l2:
            return self.l1 * xp.sign(w) + (2 * self.l2) * w
        if self.l1:
            return self.l1 * xp.sign(w)
        return (2 * self.l2) * w


@dataclass(frozen=True)
class L1(Regularizer):
    """``l1·Σ|W|`` (Keras' default factor 0.01).

    Args:
      l1: the factor (default 0.01).
      l2: an added L2 factor, as for :class:`Regularizer` (default 0).
    """

    l1: float = 0.01


@dataclass(frozen=True)
class L2(Regularizer):
    """``l2·ΣW²``, gradient ``2·l2·W`` (Keras' default factor 0.01).

    Args:
      l1: an added L1 factor, as for :class:`Regularizer` (default 0).
      l2: the factor (default 0.01).
    """

    l2: float = 0.01


@dataclass(frozen=True)
class L1L2(Regularizer):
    """``l1·Σ|W| + l2·ΣW²`` (both 0 by default, as Keras).

    Args:
      l1, l2: the factors, finite numbers >= 0 (default 0).
    """


def l1(l1: float = 0.01) -> Regularizer:
    """The penalty ``l1·Σ|W|`` (Keras' ``regularizers.l1``).

    Args:
      l1: the factor (Keras' default 0.01).
    """
    return L1(l1=l1)


def l2(l2: float = 0.01) -> Regularizer:
    """The penalty ``l2·ΣW²``, whose gradient is ``2·l2·W`` (Keras' ``regularizers.l2``).

    Args:
      l2: the factor (Keras' default 0.01).
    """
    return L2(l2=l2)


def l1_l2(l1: float = 0.0, l2: float = 0.0) -> Regularizer:
    """The penalty ``l1·Σ|W| + l2·ΣW²`` (Keras' ``regularizers.l1_l2``).

    Args:
      l1: the L1 factor (default 0, as Keras' ``L1L2()``).
      l2: the L2 factor (default 0).
    """
    return L1L2(l1=l1, l2=l2)


_NAMES = {"l1": L1, "l2": L2, "l1_l2": L1L2, "l1l2": L1L2}


def get(identifier: Any, owner: str = "regularizer") -> Regularizer | None:
    """A :class:`Regularizer` from a name (``"l1"``, ``"l2"``, ``"l1_l2"``), an instance or
    ``None``; anything else raises naming ``owner``.

    Args:
      identifier: a name (any case; ``"l1l2"`` too) for Keras' default factors, a
        :class:`Regularizer`, or ``None`` (returned as they are).
      owner: how the error names the caller, e.g. ``"Dense 'dense_0': kernel_regularizer"``.

    Raises:
      ValueError: for anything else, listing the names.
    """
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _NAMES:
        return _NAMES[identifier.lower()]()
    valid = ", ".join(repr(n) for n in ("l1", "l2", "l1_l2"))
    raise ValueError(
        f"{owner}: unknown regularizer {identifier!r}; expected one of {valid}, an instance "
        "such as wf.regularizers.l2(1e-4), or None"
    )


def collect(layer: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Regularizer]:
    """``{("block_0", "dense_1", "W"): L2(...)}``: every regularized param of ``layer``,
    by its path in the params tree (containers walked as their params nest).

    Args:
      layer: a layer (a model's root chain or any container); its
        ``param_regularizers()`` and its ``children()`` are read.
      prefix: the path of ``layer``'s params in the tree (``()`` for the root).
    """
    out = {prefix + (name,): reg for name, reg in layer.param_regularizers().items()}
    for key, child in layer.children():
        out.update(collect(child, prefix if key is None else prefix + (key,)))
    return out


def penalty(params: Any, terms: dict[tuple[str, ...], Regularizer]) -> Any:
    """The sum of ``terms``' penalties on ``params`` (0 as a plain float when there are none).

    Args:
      params: the model's params tree (nested dicts of arrays).
      terms: ``{path: Regularizer}``, as :func:`collect` gives.
    """
    return sum(reg(path_get(params, path)) for path, reg in terms.items())


def add_grads(grads: Any, params: Any, terms: dict[tuple[str, ...], Regularizer]) -> Any:
    """``grads`` plus each term's closed-form gradient, as a new tree (``grads`` untouched).

    Args:
      grads: the data loss's gradients, a tree like ``params`` holding every path in ``terms``.
      params, terms: as for :func:`penalty`.
    """
    if not terms:
        return grads
    out = _copy_dicts(grads)
    for path, reg in terms.items():
        node = out
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = node[path[-1]] + reg.grad(path_get(params, path))
    return out


def _copy_dicts(tree: Any) -> Any:
    return {k: _copy_dicts(v) for k, v in tree.items()} if isinstance(tree, dict) else tree
