"""Containers that are layers themselves: a chain, a residual block, parallel branches.

A container names its children (``dense_0``, ``dense_1``, ... per kind, or the names the user
gave), nests their params under those names (``{"block_0": {"dense_1": {"W": ...}}}``, flattened
``"block_0/dense_1/W"``) and chains their hand-written backprops. One layer instance used twice
is one child with one set of params, and the gradients of its uses add up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from wframe.backends import array_namespace
from wframe.backends.fusion import FUSED
from wframe.layers.base import Layer
from wframe.random import fold_in
from wframe.tree import tree_map

_EMPTY: dict = {}


def accumulate(grads: dict, name: str, g: Any) -> None:
    """Add ``g`` to ``grads[name]``: a layer used twice gets the sum of its uses' gradients."""
    if g:
        grads[name] = tree_map(lambda u, v: u + v, grads[name], g) if name in grads else g


def _call(child: Layer, i: int, params, state: dict, x, train: bool, key, vjp: bool):
    """``child.apply`` on its part of ``params``/``state`` (updated in place in ``state``, a
    container's own copy) with its key folded from the container's by position ``i``."""
    k = fold_in(key, i) if key is not None and child.uses_key else None
    y, s, back = child.apply(
        params.get(child.name, _EMPTY),
        state.get(child.name, _EMPTY),
        x,
        train=train,
        key=k,
        vjp=vjp,
    )
    if s:
        state[child.name] = s
    return y, back


def back_through(child: Layer, back: Any, dy: Any, input_grad: bool, need: Any) -> tuple[Any, Any]:
    """``child``'s backprop asked only for the gradients in ``need`` (its part of the parent's
    ``need``; ``None``: all of them): passed on to a layer that takes it, else filtered."""
    if need is None:
        return back(dy, input_grad=input_grad)
    if child.selective_grads:
        return back(dy, input_grad=input_grad, need=need)
    dx, grads = back(dy, input_grad=input_grad)
    return dx, _only(grads, need)


def _only(grads: dict, need: dict) -> dict:
    out = {}
    for k, v in grads.items():
        if k in need:
            out[k] = _only(v, need[k]) if isinstance(v, dict) else v
    return out


def name_layers(owner: str, layers: Any) -> tuple[Layer, ...]:
    """``layers`` with every instance named; the same instance twice gets the same name."""
    if isinstance(layers, Layer) or not isinstance(layers, Sequence):
        raise TypeError(
            f"{owner} takes a list of layers, got {type(layers).__name__}; wrap a single layer "
            "in a list"
        )
    named: dict[int, Layer] = {}
    counts: dict[str, int] = {}
    owners: dict[str, int] = {}
    out = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(
                f"{owner}: item {i} must be a wframe Layer (wf.layers.Dense(...), ...), got "
                f"{type(layer).__name__}"
            )
        if id(layer) not in named:
            name = layer.name
            if name is None:
                kind = layer.kind
                while f"{kind}_{counts.get(kind, 0)}" in owners:
                    counts[kind] = counts.get(kind, 0) + 1
                name = f"{kind}_{counts.get(kind, 0)}"
                counts[kind] = counts.get(kind, 0) + 1
            if name in owners:
                raise ValueError(
                    f"{owner}: two different layers are named {name!r} (items {owners[name]} and "
                    f"{i}); give them distinct names, or pass the same instance twice to share "
                    "its params"
                )
            owners[name] = i
            named[id(layer)] = layer.named(name)
        out.append(named[id(layer)])
    return tuple(out)


def _unique(layers: tuple[Layer, ...]) -> list[tuple[int, Layer]]:
    seen: set[str] = set()
    firsts = []
    for i, layer in enumerate(layers):
        if layer.name not in seen:
            seen.add(layer.name)
            firsts.append((i, layer))
    return firsts


@dataclass(frozen=True)
class Sequential(Layer):
    """A chain of layers: ``y = f_n(... f_1(x))``, itself a layer (so chains nest).

    Args:
      layers: :class:`~wframe.layers.Layer` instances; unnamed ones are named ``dense_0``,
        ``dense_1``, ... per kind.
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``sequential_0``, ...).
    """

    layers: tuple[Layer, ...] = ()

    selective_grads = True

    def __post_init__(self):
        object.__setattr__(self, "layers", name_layers(type(self).__name__, self.layers))

    @property
    def uses_key(self) -> bool:
        return any(layer.uses_key for layer in self.layers)

    @property
    def input_dtype(self) -> str | None:
        return self.layers[0].input_dtype if self.layers else None

    def children(self):
        return tuple((layer.name, layer) for _, layer in _unique(self.layers))

    def init(self, key, in_shape, *, dtype="float32"):
        if not self.layers:
            raise ValueError(f"{self.label} has no layers; pass a non-empty list")
        params, state, shape = {}, {}, tuple(in_shape)
        done: dict[str, Any] = {}  # a layer's name -> (its input shape, its output shape)
        for i, layer in enumerate(self.layers):
            if layer.name in done:  # a shared instance: its params exist; check it fits here
                if done[layer.name][0] != shape:
                    raise ValueError(
                        f"{self.label}: the shared layer {layer.name!r} is used on inputs of "
                        f"shape {done[layer.name][0]} and {shape}; a shared layer needs one shape"
                    )
                shape = done[layer.name][1]  # same input, same output: nothing drawn again
                continue
            p, s, out = layer.init(fold_in(key, i), shape, dtype=dtype)
            done[layer.name], shape = (shape, out), out
            if p:
                params[layer.name] = p
            if s:
                state[layer.name] = s
        return params, state, shape

    def forward(self, params, state, x, *, train=False, key=None, vjp=True):
        new_state = dict(state)
        backs = []
        for i, layer in enumerate(self.layers):
            x, back = _call(layer, i, params, new_state, x, train, key, vjp)
            if vjp:
                backs.append((layer.name, back))
        if not vjp:
            return x, new_state, None
        # Each layer used once and every one holding params in order: the gradients are the
        # layers' own dicts, in ``params``' order, with nothing to add up or filter.
        plain = len(backs) == len(params) and list(params) == [name for name, _ in backs]

        def backprop(dy, input_grad=True, need=None):
            if need is None and plain:  # every gradient, each layer once: no filtering
                gs = [None] * len(backs)
                for i in range(len(backs) - 1, -1, -1):
                    dy, gs[i] = backs[i][1](dy, input_grad=input_grad or i > 0)
                return (dy if input_grad else None), {
                    n: g for n, g in zip(params, gs, strict=True) if g
                }
            grads: dict[str, Any] = {}
            # Without an input gradient, nothing below the first layer whose grads are needed
            # runs backward (a frozen body costs no backward pass at all).
            stop = 0
            if need is not None and not input_grad:
                wanted = [i for i, (name, _) in enumerate(backs) if need.get(name)]
                stop = wanted[0] if wanted else len(backs)
            for i in range(len(backs) - 1, stop - 1, -1):
                name, back = backs[i]
                sub = None if need is None else need.get(name, _EMPTY)
                dy, g = back_through(self.layers[i], back, dy, input_grad or i > stop, sub)
                accumulate(grads, name, g)
            return (dy if input_grad else None), {
                name: grads[name] for name in params if name in grads
            }

        return x, new_state, backprop

    def plan(self, xp, in_shape, train=True):
        if not self.layers:
            return None
        # A layer used twice sums its uses' gradients: the forward does that (the default).
        if len({layer.name for layer in self.layers}) != len(self.layers):
            return super().plan(xp, in_shape, train)
        runs, shape, keyed = [], tuple(in_shape), []
        for i, layer in enumerate(self.layers):
            planned = layer.planned(xp, shape, train)
            if planned is None:
                return None
            runs.append((layer.name, planned[0]))
            keyed.append(i if layer.uses_key else None)  # its key folded as forward folds it
            shape = planned[1]

        def chained(params, x, vjp=True, key=None):
            backs = []
            for (name, layer_run), i in zip(runs, keyed, strict=True):
                k = None if i is None or key is None else fold_in(key, i)
                x, back = layer_run(params.get(name, _EMPTY), x, vjp, k)
                backs.append(back)
            if not vjp:
                return x, None

            def backprop(dy, input_grad=True):
                gs = [None] * len(runs)
                for i in range(len(runs) - 1, -1, -1):
                    dy, gs[i] = backs[i](dy, input_grad=input_grad or i > 0)
                grads = {name: g for (name, _), g in zip(runs, gs, strict=True) if g}
                return (dy if input_grad else None), grads

            return x, backprop

        # The backend's kernel for the whole chain where it has one (NumPy: Dense layers).
        fuse = getattr(FUSED.get(xp), "dense_chain", None)
        fused = None if fuse is None else fuse(runs, chained)
        return (chained if fused is None else fused), shape


@dataclass(frozen=True)
class Residual(Layer):
    """``y = x + f(x)``: a skip connection around one layer (or a list of layers, chained).

    ``f`` must keep the shape of its input. Its params are the residual's own params (no extra
    nesting): ``{"residual_0": {"W": ..., "b": ...}}`` around a Dense.

    Args:
      layer: the layer ``f``, or a list of layers (made a :class:`Sequential`); it must map
        inputs of shape ``(batch, *rest)`` to the same shape.
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``residual_0``, ...).
    """

    layer: Layer

    selective_grads = True

    def __post_init__(self):
        layer = self.layer
        if isinstance(layer, Sequence) and not isinstance(layer, str):
            layer = Sequential(list(layer))
        if not isinstance(layer, Layer):
            raise TypeError(
                f"{self.label} wraps a wframe Layer or a list of them, got {type(layer).__name__}"
            )
        object.__setattr__(self, "layer", layer)

    @property
    def uses_key(self) -> bool:
        return self.layer.uses_key

    @property
    def input_dtype(self) -> str | None:
        return self.layer.input_dtype

    def children(self):
        return ((None, self.layer),)

    def init(self, key, in_shape, *, dtype="float32"):
        params, state, out = self.layer.init(key, in_shape, dtype=dtype)
        if tuple(out[1:]) != tuple(in_shape[1:]):
            raise ValueError(
                f"{self.label}: the wrapped {self.layer.label} maps inputs of shape "
                f"{tuple(in_shape)} to {tuple(out)}; y = x + f(x) needs f to keep the shape"
            )
        return params, state, tuple(in_shape)

    def forward(self, params, state, x, *, train=False, key=None, vjp=True):
        fx, new_state, back = self.layer.apply(params, state, x, train=train, key=key, vjp=vjp)
        if tuple(fx.shape) != tuple(x.shape):
            raise ValueError(
                f"{self.label}: f(x) has shape {tuple(fx.shape)} but x has {tuple(x.shape)}"
            )
        if not vjp:
            return x + fx, new_state, None

        def backprop(dy, input_grad=True, need=None):
            dfx, grads = back_through(self.layer, back, dy, input_grad, need)
            return (dy + dfx if input_grad else None), grads

        return x + fx, new_state, backprop


@dataclass(frozen=True)
class Concatenate(Layer):
    """Parallel branches on the same input, outputs concatenated along ``axis``; without
    branches, a merge layer (Keras' ``Concatenate(axis=-1)``) that concatenates the list of
    tensors it is called on in a graph.

    Args:
      branches: layers (each may be a chain) applied to the same input; their outputs must
        agree on every axis but ``axis``. Empty: the merge layer.
      axis: the axis to concatenate along (default: the last, features or channels).
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``concatenate_0``, ...).
    """

    branches: tuple[Layer, ...] = ()
    axis: int = -1

    selective_grads = True

    def __post_init__(self):
        if isinstance(self.branches, int):  # Keras' Concatenate(1): its first argument is axis
            raise TypeError(
                f"{self.label}: the first argument is branches (a list of layers), got "
                f"{self.branches!r}; give the axis by keyword: Concatenate(axis={self.branches!r})"
            )
        object.__setattr__(self, "branches", name_layers(self.label, self.branches))
        if not isinstance(self.axis, int) or isinstance(self.axis, bool):
            raise ValueError(f"{self.label}: axis must be an int, got {self.axis!r}")

    @property
    def uses_key(self) -> bool:
        return any(b.uses_key for b in self.branches)

    def children(self):
        return tuple((b.name, b) for _, b in _unique(self.branches))

    def _axis(self, ndim: int) -> int:
        if not -ndim < self.axis < ndim or self.axis % ndim == 0:
            raise ValueError(
                f"{self.label}: axis={self.axis} must name a non-batch axis of the branches' "
                f"{ndim}-D outputs"
            )
        return self.axis % ndim

    def init(self, key, in_shape, *, dtype="float32"):
        params, state, outs = {}, {}, []
        if not self.branches:
            if not (isinstance(in_shape, tuple) and in_shape and isinstance(in_shape[0], tuple)):
                raise ValueError(
                    f"{self.label} has no branches, so it merges a list of tensors in a graph "
                    "(Concatenate(axis=-1)([a, b])); in a chain pass it branches"
                )
            outs = [tuple(s) for s in in_shape]
        for i, branch in enumerate(self.branches):
            p, s, out = branch.init(fold_in(key, i), in_shape, dtype=dtype)
            if p:
                params.setdefault(branch.name, p)
            if s:
                state.setdefault(branch.name, s)
            outs.append(tuple(out))
        ax = self._axis(len(outs[0]))
        rest = {o[:ax] + o[ax + 1 :] for o in outs}
        if len(rest) != 1 or len({len(o) for o in outs}) != 1:
            raise ValueError(
                f"{self.label}: branch outputs {outs} must agree on every axis but {self.axis}"
            )
        sizes = [o[ax] for o in outs]
        total = None if None in sizes else sum(sizes)
        out = (*outs[0][:ax], total, *outs[0][ax + 1 :])
        return params, state, out

    def forward(self, params, state, x, *, train=False, key=None, vjp=True):
        if not self.branches:
            return self._merge(x, vjp)
        new_state = dict(state)
        ys, backs = [], []
        for i, branch in enumerate(self.branches):
            y, back = _call(branch, i, params, new_state, x, train, key, vjp)
            ys.append(y)
            backs.append((branch.name, back))
        xp = array_namespace(ys[0])
        ax = self._axis(ys[0].ndim)
        y = xp.concat(ys, axis=ax)
        if not vjp:
            return y, new_state, None
        bounds = [0]
        for part in ys:
            bounds.append(bounds[-1] + part.shape[ax])

        def backprop(dy, input_grad=True, need=None):
            dx, grads = None, {}
            for i, (name, back) in enumerate(backs):
                index = [slice(None)] * dy.ndim
                index[ax] = slice(bounds[i], bounds[i + 1])
                sub = None if need is None else need.get(name, _EMPTY)
                d, g = back_through(self.branches[i], back, dy[tuple(index)], input_grad, sub)
                if input_grad:
                    dx = d if dx is None else dx + d
                accumulate(grads, name, g)
            return dx, {name: grads[name] for name in params if name in grads}

        return y, new_state, backprop

    def _merge(self, xs, vjp):
        if not isinstance(xs, tuple):
            raise ValueError(f"{self.label} merges a tuple of arrays, got one array")
        xp = array_namespace(xs[0])
        ax = self._axis(xs[0].ndim)
        y = xp.concat(xs, axis=ax)
        if not vjp:
            return y, {}, None
        bounds = [0]
        for part in xs:
            bounds.append(bounds[-1] + part.shape[ax])

        def backprop(dy, input_grad=True, need=None):
            if not input_grad:
                return None, {}
            index = [slice(None)] * dy.ndim
            parts = []
            for i in range(len(xs)):
                index[ax] = slice(bounds[i], bounds[i + 1])
                parts.append(dy[tuple(index)])
            return tuple(parts), {}

        return y, {}, backprop
