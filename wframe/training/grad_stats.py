"""Gradient statistics a train step can compute for :class:`~wframe.callbacks.GradientMonitor`:
per trainable param the gradient norm and the update/weight ratio, per ReLU Dense/Conv2D layer
the fraction of dead units; compiled in only when asked (``stats=True`` runners)."""

from __future__ import annotations

from typing import Any, NamedTuple

from wframe.activations import relu
from wframe.backends import backend_of
from wframe.layers.conv import Conv2D
from wframe.layers.dense import Dense
from wframe.tree import flatten, path_get


class GradStats(NamedTuple):
    """What a step built with ``stats=True`` measures, by path in the params tree: the
    trainable params, and each ReLU Dense/Conv2D layer with its trainable params among W, b."""

    params: tuple[tuple[str, ...], ...]
    relu: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]

    @property
    def names(self) -> tuple[str, ...]:
        """``grad_norm/<param>``, ``update_ratio/<param>``, then ``dead_relu/<layer>``."""
        params = ["/".join(p) for p in self.params]
        return (
            *(f"grad_norm/{p}" for p in params),
            *(f"update_ratio/{p}" for p in params),
            *(f"dead_relu/{'/'.join(path)}" for path, _ in self.relu),
        )


def grad_stats(model) -> GradStats:
    """The :class:`GradStats` of a built model (frozen params have no gradient: left out)."""
    trainable = [name for name, _ in flatten(model.params) if name not in model.frozen]
    relu_layers = []

    def walk(layer, prefix):
        if isinstance(layer, (Dense, Conv2D)) and layer.activation in ("relu", relu):
            have = tuple(p for p in ("W", "b") if "/".join((*prefix, p)) in trainable)
            if have:
                relu_layers.append((prefix, have))
        for key, child in layer.children():
            walk(child, prefix if key is None else (*prefix, key))

    walk(model, ())
    return GradStats(tuple(tuple(n.split("/")) for n in trainable), tuple(relu_layers))


def leaf_norm(a: Any) -> Any:
    xp = backend_of(a).xp
    return xp.sqrt(xp.sum(a * a))


def dead_fraction(grads: Any, path: tuple[str, ...], have: tuple[str, ...]) -> Any:
    """The fraction of the layer's units whose gradient column (the last axis of W's gradient,
    and b's entry) is exactly zero: no example of the batch activated them."""
    alive = None
    for name in have:
        g = path_get(grads, (*path, name))
        xp = backend_of(g).xp
        used = xp.any(g != 0, axis=tuple(range(g.ndim - 1))) if g.ndim > 1 else g != 0
        alive = used if alive is None else alive | used
    return 1 - xp.sum(xp.astype(alive, g.dtype)) / alive.shape[0]


def update_ratios(before: list, after: list) -> Any:
    """``‖new - old‖ / ‖old‖`` per param, as one vector; from zero (a fresh bias) that is
    ``‖new - old‖ / ‖new‖``: 1 when it moved and 0 when it did not (never a division by 0)."""
    xp = backend_of(before[0]).xp
    was = xp.stack([leaf_norm(old) for old in before])
    moved = xp.stack([leaf_norm(new - old) for old, new in zip(before, after, strict=True)])
    ratio = moved / xp.where(was > 0, was, xp.ones_like(was))
    return xp.where(was > 0, ratio, xp.astype(moved > 0, moved.dtype))
