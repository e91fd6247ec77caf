"""Activation functions, each a forward that returns ``(y, backprop)`` written once on ``xp``.

``backprop(dy) -> dx`` is the hand-written vector-Jacobian product used on NumPy and CuPy; JAX
differentiates the forward instead. Look them up by name with :func:`get`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from wframe.backends import array_namespace, backend_of, kinks
from wframe.backends.fusion import FUSED
from wframe.types import Array

Forward = Callable[[Array], tuple[Array, Callable[[Array], Array]]]


def linear(x: Array):
    """Identity.

    Args:
      x: the input array (any shape).
    """
    return x, lambda dy: dy


def relu(x: Array):
    """max(x, 0); the gradient at 0 is 0, as in JAX and PyTorch (on JAX too:
    :mod:`~wframe.backends.kinks`).

    Args:
      x: the input array (any shape).
    """
    xp = array_namespace(x)
    y = kinks.maximum(x, 0)
    # A multiply by the cast mask: NumPy's where() with a scalar is several times slower.
    return y, lambda dy: dy * xp.astype(y > 0, dy.dtype)


def leaky_relu(x: Array, negative_slope: float = 0.01):
    """x for x > 0 else ``negative_slope * x`` (slope 0.01 as jax.nn and torch.nn).

    Args:
      x: the input array (any shape).
      negative_slope: the slope for ``x <= 0`` (default 0.01); 0 gives :func:`relu`.
    """
    xp = array_namespace(x)
    mask = x > 0
    return xp.where(mask, x, negative_slope * x), lambda dy: xp.where(mask, dy, negative_slope * dy)


def sigmoid(x: Array):
    """1 / (1 + exp(-x)), computed as ``(1 + tanh(x / 2)) / 2``.

    The same function with one transcendental, no branch, and no overflow at any ``|x|`` in any
    dtype (NaN-free under autodiff too); it is within half a unit in the last place of 1 of the
    exact value (float32: 6e-8), which is the accuracy that holds for small outputs (relative
    error 2e-4 at x = -10; exactly 0 below x = -20 in float32, where the exact value is
    < 3e-9). The ``exp``/``where`` form it replaces cost ~1.9x in a JAX LSTM step and 1.3-6x
    on NumPy.

    Args:
      x: the input array (any shape).
    """
    xp = array_namespace(x)
    y = 0.5 + 0.5 * xp.tanh(0.5 * x)
    return y, lambda dy: dy * (y * (1 - y))


def tanh(x: Array):
    """Hyperbolic tangent.

    Args:
      x: the input array (any shape).
    """
    xp = array_namespace(x)
    y = xp.tanh(x)
    return y, lambda dy: dy * (1 - y * y)


def softmax(x: Array):
    """Softmax over the last axis (max-shifted, so it never overflows).

    Args:
      x: the input array (any shape); normalized over its last axis.
    """
    xp = array_namespace(x)
    e = xp.exp(x - xp.max(x, axis=-1, keepdims=True))
    y = e / xp.sum(e, axis=-1, keepdims=True)
    return y, lambda dy: y * (dy - xp.sum(dy * y, axis=-1, keepdims=True))


def silu(x: Array):
    """``x * sigmoid(x)`` (Keras ``silu``, alias ``swish``; PyTorch ``SiLU``).

    Args:
      x: the input array (any shape).
    """
    s, _ = sigmoid(x)
    return x * s, lambda dy: dy * (s * (1 + x * (1 - s)))


def elu(x: Array, alpha: float = 1.0):
    """x for x > 0 else ``alpha * (exp(x) - 1)`` (Keras and PyTorch: ``alpha = 1.0``).

    Args:
      x: the input array (any shape).
      alpha: the negative saturation value, ``elu(x) -> -alpha`` as ``x -> -inf`` (default
        1.0).
    """
    xp = array_namespace(x)
    mask = x > 0
    # expm1 of the negative part only: exp of a large positive x would overflow unused.
    neg = alpha * xp.expm1(xp.where(mask, xp.zeros_like(x), x))
    return xp.where(mask, x, neg), lambda dy: xp.where(mask, dy, dy * (neg + alpha))


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def selu(x: Array):
    """``scale * elu(x, alpha)`` with the self-normalizing constants of Klambauer et al. (2017),
    ``alpha = 1.67326...`` and ``scale = 1.05070...`` (Keras, PyTorch).

    Args:
      x: the input array (any shape).
    """
    y, backprop = elu(x, _SELU_ALPHA)
    return _SELU_SCALE * y, lambda dy: backprop(_SELU_SCALE * dy)


def softplus(x: Array):
    """``log(1 + exp(x))``, as ``max(x, 0) + log1p(exp(-|x|))``: no overflow at any ``|x|``.

    The gradient is ``sigmoid(x)``.

    Args:
      x: the input array (any shape).
    """
    y = kinks.softplus(x)  # (sigmoid(0) = 0.5 at 0 under autodiff too)
    s, _ = sigmoid(x)
    return y, lambda dy: dy * s


def relu6(x: Array):
    """``min(max(x, 0), 6)``; the gradient is 0 at the kinks 0 and 6 (as PyTorch).

    Args:
      x: the input array (any shape).
    """
    xp = array_namespace(x)
    y = kinks.clip(x, 0, 6)
    return y, lambda dy: dy * xp.astype((x > 0) & (x < 6), dy.dtype)


def hard_sigmoid(x: Array):
    """``relu6(x + 3) / 6``: 0 below -3, 1 above 3, linear between (Keras 3 and PyTorch
    ``hardsigmoid``; Keras 2's was ``0.2 * x + 0.5``).

    Args:
      x: the input array (any shape).
    """
    xp = array_namespace(x)
    y = kinks.clip(x + 3, 0, 6) / 6
    return y, lambda dy: dy * (xp.astype((x > -3) & (x < 3), dy.dtype) / 6)


_GELU_C = math.sqrt(2 / math.pi)
_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


def gelu(x: Array, approximate: bool = False):
    """GELU, ``x * Phi(x)`` with ``Phi`` the standard normal CDF: ``0.5 x (1 + erf(x / sqrt 2))``.

    The exact form is the default, as in Keras (``gelu(x, approximate=False)``) and PyTorch;
    ``approximate=True`` (or the name ``"gelu_approximate"``/``"gelu_tanh"``) gives the tanh
    approximation :func:`gelu_approximate`. The ``erf`` is the arrays' backend's
    (:meth:`wframe.backends.base.Backend.erf`).

    Args:
      x: the input array.
      approximate: use the tanh approximation instead.
    """
    if approximate:
        return gelu_approximate(x)
    xp = array_namespace(x)
    cdf = 0.5 * (1 + backend_of(x).erf(x * _SQRT_HALF))

    def backprop(dy):
        # The density at |x| <= 40 (0 beyond, in float64 too): x * x would overflow float16.
        u = xp.minimum(xp.abs(x), 40.0)
        return dy * (cdf + x * (_INV_SQRT_2PI * xp.exp(-0.5 * u * u)))

    return x * cdf, backprop


def gelu_approximate(x: Array):
    """GELU, tanh approximation: ``0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))``.

    Keras' ``gelu(x, approximate=True)``, jax.nn.gelu's default, PyTorch's
    ``approximate="tanh"``; within 1e-3 of the exact :func:`gelu`. Names: ``"gelu_approximate"``,
    ``"gelu_tanh"``.

    Args:
      x: the input array (any shape).
    """
    xp = array_namespace(x)
    # tanh is 1 long before |x| = 30, and 30^3 fits float16: no overflow (nor a NaN gradient).
    xc = xp.minimum(xp.maximum(x, -30.0), 30.0)
    inner = _GELU_C * (x + 0.044715 * xc * xc * xc)
    t = xp.tanh(inner)

    def backprop(dy):
        dinner = _GELU_C * (1 + 3 * 0.044715 * xc * xc)
        return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * dinner)

    return 0.5 * x * (1 + t), backprop


_ACTIVATIONS: dict[str, Forward] = {
    "linear": linear,
    "identity": linear,
    "relu": relu,
    "leaky_relu": leaky_relu,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "softmax": softmax,
    "gelu": gelu,
    "gelu_approximate": gelu_approximate,
    "gelu_tanh": gelu_approximate,
    "silu": silu,
    "swish": silu,
    "elu": elu,
    "selu": selu,
    "softplus": softplus,
    "relu6": relu6,
    "hard_sigmoid": hard_sigmoid,
}


def get(identifier: str | Forward | None, owner: str = "activation") -> Forward:
    """An activation by name (``None`` is linear) or a ``x -> (y, backprop)`` callable.

    A callable is checked once, on a small NumPy array, to return ``(y, backprop)``: a plain
    ``x -> y`` function such as ``numpy.tanh`` is refused with the name to use instead.

    Args:
      identifier: a name from this module (any case), ``None``, or a callable.
      owner: how error messages name the caller, e.g. ``"Dense 'dense_0'"``.
    """
    if identifier is None:
        return linear
    if isinstance(identifier, str):
        if identifier.lower() in _ACTIVATIONS:
            return _ACTIVATIONS[identifier.lower()]
        raise ValueError(
            f"Unknown activation {identifier!r} for {owner}. Expected one of "
            f"{sorted(_ACTIVATIONS)}."
        )
    if not callable(identifier) or (hasattr(identifier, "init") and hasattr(identifier, "forward")):
        got = type(identifier).__name__
        hint = " (a layer: put it in the model after this one)" if callable(identifier) else ""
        raise TypeError(f"{owner}: activation must be a name or a callable, got {got}{hint}")
    if identifier not in _KNOWN:
        _check_callable(identifier, owner)
    return identifier


_KNOWN = set(_ACTIVATIONS.values())


def _check_callable(fn: Callable, owner: str) -> None:
    name = getattr(fn, "__name__", repr(fn))
    try:
        out = fn(np.zeros((1, 2), dtype=np.float32))
    except Exception:  # an xp-generic callable may reject NumPy arrays: let it run
        return
    if not (isinstance(out, tuple) and len(out) == 2 and callable(out[1])):
        hint = f" Use activation={name!r}." if name in _ACTIVATIONS else ""
        raise TypeError(
            f"{owner}: activation {name} must return (y, backprop) like the functions in "
            f"wframe.activations, but it returned {type(out).__name__}. Pass a name such as "
            f"'tanh', or wrap it: def act(x): y = f(x); return y, lambda dy: dy * f'(x).{hint}"
        )


def apply(activation: Forward, z: Array, bias: Array | None = None, xp: Any = None):
    """``activation(z + bias)`` (``bias=None``: ``activation(z)``) as ``(y, backprop)``.

    One fused kernel for the add, the activation and later its backward where the arrays'
    backend has one for this activation (CuPy, see :mod:`wframe.backends.fusion`); otherwise
    (and always for a user's callable) the functions above, which are the numerical reference.

    Args:
      activation: a ``x -> (y, backprop)`` forward, e.g. from :func:`get`; only this module's
        functions have fused kernels.
      z: the pre-activation array, e.g. ``x @ W``.
      bias: added to ``z`` before the activation (broadcast over its last axis), or ``None``.
      xp: ``z``'s namespace where the caller has it (each lookup costs a microsecond); ``None``
        looks it up.

    Returns:
      ``(y, backprop)`` with ``backprop(dy)`` the gradient with respect to ``z + bias``.
    """
    return kernel(activation, array_namespace(z) if xp is None else xp)(z, bias)


def kernel(activation: Forward, xp: Any) -> Callable:
    """:func:`apply` bound to ``activation`` and the namespace ``xp``, its fused kernel looked
    up once: ``run(z, bias=None) -> (y, backprop)`` for arrays of ``xp`` (a compiled plan's,
    see :meth:`wframe.layers.Layer.plan`)."""
    fused = FUSED.get(xp)
    if fused is None:
        return lambda z, bias=None: activation(z if bias is None else z + bias)

    def run(z, bias=None):
        out = fused.bias_activation(z, bias, activation)
        return out if out is not None else activation(z if bias is None else z + bias)

    return run
