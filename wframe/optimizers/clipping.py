"""Gradient clipping: by value, by each parameter's norm, by the global norm.

Two ways in, with the same arithmetic:

* ``fit(..., clipnorm=, clipvalue=, global_clipnorm=)`` (Keras' names and meaning; also
  :func:`wframe.make_train_step`): applied inside the compiled step to the gradients of the
  trainable parameters, and the pre-clip global norm is logged as ``grad_norm``.
* transformations to chain before an optimizer, as optax: :func:`clip` (by value),
  :func:`clip_by_norm` (each parameter's L2 norm; optax has no per-leaf norm clip) and
  :func:`wframe.optimizers.clip_by_global_norm`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from wframe.backends import array_namespace
from wframe.optimizers.base import GradientTransformation, empty_init
from wframe.tree import tree_leaves, tree_map


class Clip(NamedTuple):
    """What ``fit``'s clipping shortcuts ask for (at most one is set, as Keras).

    Args:
      clipnorm: rescale each parameter's gradient whose L2 norm exceeds it to that norm.
      clipvalue: clip every gradient element to ``[-clipvalue, clipvalue]``.
      global_clipnorm: rescale all gradients together when their global L2 norm (over every
        trainable parameter) exceeds it. With any of the three set, ``fit`` logs the pre-clip
        global norm as ``grad_norm``.
    """

    clipnorm: float | None = None
    clipvalue: float | None = None
    global_clipnorm: float | None = None


def options(
    clipnorm: Any = None, clipvalue: Any = None, global_clipnorm: Any = None
) -> Clip | None:
    """Checked :class:`Clip` options, or ``None`` when none is set.

    Args:
      clipnorm, clipvalue, global_clipnorm: as for :class:`Clip`; each ``None`` or a finite
        number > 0 (made a float), at most one of them set.

    Raises:
      ValueError: for two or more set, or a value that is not a finite number > 0.
    """
    given = {k: v for k, v in locals().items() if v is not None}
    if len(given) > 1:
        raise ValueError(
            f"fit: only one of clipnorm, clipvalue and global_clipnorm can be set (as Keras), got "
            f"{', '.join(f'{k}={v!r}' for k, v in given.items())}; for several, chain "
            "wf.clipping.clip / clip_by_norm / wf.optimizers.clip_by_global_norm before the "
            "optimizer"
        )
    for name, value in given.items():
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and value > 0
        if not ok or not math.isfinite(value):
            raise ValueError(f"fit: {name} must be a finite number > 0, got {value!r}")
    return Clip(**{k: float(v) for k, v in given.items()}) if given else None


def global_norm(tree: Any) -> Any:
    """``sqrt(Σ g²)`` over every leaf of ``tree``.

    Args:
      tree: a pytree (nested dicts) of arrays of one backend, at least one leaf.
    """
    leaves = tree_leaves(tree)
    xp = array_namespace(leaves[0])
    return xp.sqrt(sum(xp.sum(g * g) for g in leaves))


def _by_norm(g: Any, norm: Any, bound: float) -> Any:
    # g * bound / max(norm, bound), as Keras' clip_by_norm (no division by a zero norm).
    xp = array_namespace(g)
    norm = xp.astype(norm, g.dtype)
    return g * (bound / xp.maximum(norm, xp.asarray(bound, dtype=g.dtype)))


def apply(grads: Any, clip: Clip, norm: Any) -> Any:
    """``grads`` clipped as ``clip`` says; ``norm`` is their global norm (already computed).

    Args:
      grads: the gradients, a pytree of arrays.
      clip: the :class:`Clip` options (one of them set).
      norm: :func:`global_norm` of ``grads``, a scalar array: the step logs it, so it is
        computed once; used only for ``global_clipnorm``.
    """
    if clip.global_clipnorm is not None:
        return tree_map(lambda g: _by_norm(g, norm, clip.global_clipnorm), grads)
    if clip.clipnorm is not None:
        return tree_map(lambda g: _by_norm(g, _leaf_norm(g), clip.clipnorm), grads)
    v = clip.clipvalue
    return tree_map(lambda g: array_namespace(g).clip(g, -v, v), grads)


def _leaf_norm(g: Any) -> Any:
    xp = array_namespace(g)
    return xp.sqrt(xp.sum(g * g))


def clip(max_delta: float) -> GradientTransformation:
    """Clip every update element to ``[-max_delta, max_delta]`` (optax's ``clip``).

    Args:
      max_delta: the largest magnitude kept, > 0.
    """

    def update_fn(updates, state, params=None):
        del params
        return tree_map(lambda g: array_namespace(g).clip(g, -max_delta, max_delta), updates), state

    return GradientTransformation(empty_init, update_fn)


def clip_by_norm(max_norm: float) -> GradientTransformation:
    """Rescale each update leaf whose L2 norm exceeds ``max_norm`` to that norm (Keras'
    ``clipnorm``).

    Args:
      max_norm: the largest L2 norm a leaf keeps, > 0; smaller leaves are unchanged.
    """

    def update_fn(updates, state, params=None):
        del params
        return tree_map(lambda g: _by_norm(g, _leaf_norm(g), max_norm), updates), state

    return GradientTransformation(empty_init, update_fn)
