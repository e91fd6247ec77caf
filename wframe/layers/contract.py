"""Checks of what a user's layer returns: its ``forward``'s triple and its ``backprop``'s
gradients, each failure named after the layer.

:meth:`wframe.layers.Layer.apply` runs them only for layer classes defined outside wframe (its
own layers are tested against ``jax.grad`` and finite differences instead), so they cost the
built-in layers nothing. A user's layer costs one closure per call and, in its backward pass, a
walk over its gradient dict: nothing next to the arithmetic.
"""

from __future__ import annotations

from typing import Any

from wframe.tree import flatten
from wframe.types import Params


def checked_forward(layer: Any, out: Any, params: Params, x: Any, vjp: bool) -> Any:
    """``out``, the return of ``layer.forward``, checked; its ``backprop`` wrapped (when
    ``vjp``) so that a missing backward or a gradient that does not fit the params raises an
    error naming the layer instead of failing somewhere below."""
    if not isinstance(out, tuple) or len(out) != 3:
        got = f"a tuple of {len(out)}" if isinstance(out, tuple) else type(out).__name__
        raise TypeError(
            f"{layer.label}: forward must return (y, new_state, backprop), got {got}; return "
            "(y, state, None) where no backward is needed (the jax backend differentiates "
            "forward itself)"
        )
    y, state, back = out
    if not vjp:
        return out
    if back is None:
        return y, state, _missing(layer)
    if not callable(back):
        raise TypeError(
            f"{layer.label}: forward's third value must be the backprop closure "
            f"backprop(dy, input_grad=True) -> (dx, grads), got {type(back).__name__}"
        )

    def backprop(dy, input_grad=True, **need):
        got = back(dy, input_grad=input_grad, **need)
        if not isinstance(got, tuple) or len(got) != 2:
            raise TypeError(
                f"{layer.label}: backprop must return (dx, grads), got {type(got).__name__}"
                + (f" of {len(got)}" if isinstance(got, tuple) else "")
            )
        dx, grads = got
        _check_grads(layer, params, need.get("need"), grads)
        if input_grad:
            _check_dx(layer, x, dx)
        return dx, grads

    return y, state, backprop


def _missing(layer: Any):
    def backprop(dy, input_grad=True, **need):
        raise TypeError(
            f"{layer.label} has no backward pass: its forward returned None as backprop. On the "
            "numpy and cupy backends training calls each layer's hand-written backward, so "
            "forward must return (y, new_state, backprop) with backprop(dy, input_grad=True) "
            "-> (dx, {param name: gradient}) (see wf.layers.Layer); or train on the jax "
            "backend (WFRAME_BACKEND=jax, or model.to_backend('jax')), which differentiates "
            "forward itself"
        )

    return backprop


def _check_grads(layer: Any, params: Params, need: Any, grads: Any) -> None:
    if not isinstance(grads, dict):
        raise TypeError(
            f"{layer.label}: backprop must return grads as a dict shaped like the layer's "
            f"params ({{param name: gradient}}), got {type(grads).__name__}"
        )
    shapes = {k: tuple(a.shape) for k, a in flatten(params)}
    got = {k: tuple(getattr(g, "shape", ())) for k, g in flatten(grads)}
    wanted = set(shapes) if need is None else {k for k, _ in flatten(need)}
    if set(got) - set(shapes) or wanted - set(got):
        raise ValueError(
            f"{layer.label}: backprop returned gradients for {sorted(got)}, expected one per "
            f"param: {sorted(wanted)} (the keys of the params dict its init made)"
        )
    for k, shape in got.items():
        if shape != shapes[k]:
            raise ValueError(
                f"{layer.label}: backprop's gradient for param {k!r} has shape {shape}, "
                f"expected {shapes[k]} (the param's shape)"
            )


def _check_dx(layer: Any, x: Any, dx: Any) -> None:
    xs, dxs = (x, dx) if isinstance(x, tuple) else ((x,), (dx,))
    if not isinstance(dxs, tuple) or len(dxs) != len(xs):
        raise ValueError(
            f"{layer.label}: backprop's dx must hold one gradient per input ({len(xs)}), got "
            f"{type(dx).__name__}"
        )
    for i, (a, d) in enumerate(zip(xs, dxs, strict=True)):
        if d is not None and tuple(d.shape) != tuple(a.shape):
            which = f" {i}" if len(xs) > 1 else ""
            raise ValueError(
                f"{layer.label}: backprop's dx for input{which} has shape {tuple(d.shape)}, "
                f"expected the input's shape {tuple(a.shape)}"
            )
