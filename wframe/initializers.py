"""Weight initializers: small callables ``init(key, shape, dtype="float32") -> Array``.

Every draw happens on the host in float64 with :func:`wframe.random.generator`, is cast to
``dtype`` on the host and only then moved to the active backend, so one key gives bit-identical
weights on NumPy, CuPy and JAX. Names, defaults and fans follow Keras. Parametrized
initializers (``constant``, ``normal``, ``uniform``, ``truncated_normal``, ``orthogonal``) are
factories: ``constant(0.5)`` or ``get("constant", value=0.5)`` returns the initializer.

Every initializer raises ``ValueError`` for a shape that is not a tuple of positive ints and
for a dtype that is not floating.

Under :func:`shape_only` (from :mod:`wframe.placeholders`) every initializer (named,
parametrized, or a user callable passed through :func:`get`) returns a placeholder instead: a
read-only NumPy view of one zero that holds no memory, with the shape and dtype asked for.
Running a model's ``init`` there tells which arrays it would make, and their bytes, without
allocating them (loaders compare that with a file before trusting its config).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from wframe.backends import get_backend
from wframe.placeholders import (
    BudgetExceeded,
    Tally,
    active,
    is_placeholder,
    placeholder,
    shape_only,
)
from wframe.random import generator
from wframe.types import Array, Key, Shape

__all__ = [
    "BudgetExceeded",
    "Tally",
    "compute_fans",
    "constant",
    "get",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "is_placeholder",
    "lecun_normal",
    "lecun_uniform",
    "normal",
    "ones",
    "orthogonal",
    "shape_only",
    "truncated_normal",
    "uniform",
    "zeros",
]

Initializer = Callable[..., Array]
# Std of a standard normal truncated to [-2, 2]: Keras divides by it so that the variance of the
# truncated draws matches the variance-scaling formula.
_TRUNCATED_STD = 0.87962566103423978


def _shape_aware(fn: Callable, min_rank: int = 0) -> Callable:
    """``fn``, returning a placeholder instead of drawing under :func:`shape_only`."""

    @functools.wraps(fn)
    def init(key, shape, dtype="float32", **kwargs):
        if not active():
            return fn(key, shape, dtype, **kwargs)
        shape, dt = _check(shape, dtype)
        if len(shape) < min_rank:
            what = fn.__name__.lstrip("_")
            raise ValueError(f"{what} needs a shape with at least {min_rank} dims, got {shape=}")
        return placeholder(shape, dt)

    return init


def _check(shape: Shape, dtype: DTypeLike) -> tuple[tuple[int, ...], np.dtype]:
    ok = isinstance(shape, (tuple, list)) and all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in shape
    )
    if not ok:
        raise ValueError(f"shape must be a tuple of positive ints, got shape={shape!r}")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.kind != "f":
        raise ValueError(f"dtype must be a floating dtype such as 'float32', got dtype={dtype!r}")
    return tuple(int(d) for d in shape), dt


def _finish(host: np.ndarray, dt: np.dtype) -> Array:
    # Cast on the host, so every backend receives exactly the same bits.
    return get_backend().asarray(np.asarray(host, dtype=dt), dtype=dt.name)


def _truncated_standard_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    # Redraw (not clip) values beyond 2 stddev, as TF/Keras do: clipping piles mass on the edges.
    z = rng.standard_normal(shape)
    bad = np.abs(z) > 2.0
    while bad.any():
        z[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(z) > 2.0
    return z


def compute_fans(shape: Shape) -> tuple[int, int]:
    """Fan-in and fan-out of a weight of ``shape``, as Keras computes them.

    Args:
      shape: ``(in, out)`` for dense kernels, ``(*receptive_field, in, out)`` for conv kernels;
        a 1-D shape gives ``fan_in = fan_out = shape[0]`` and ``()`` gives ``(1, 1)``.

    Returns:
      ``(fan_in, fan_out)``.
    """
    if len(shape) < 2:
        return (int(shape[0]),) * 2 if shape else (1, 1)
    receptive = math.prod(shape[:-2])
    return int(shape[-2] * receptive), int(shape[-1] * receptive)


@_shape_aware
def zeros(key: Key, shape: Shape, dtype: DTypeLike = "float32") -> Array:
    """All zeros.

    Args:
      key: unused (any key; kept for the common signature).
      shape: the weight's shape, a tuple of positive ints.
      dtype: a floating dtype.
    """
    shape, dt = _check(shape, dtype)
    return _finish(np.zeros(shape), dt)


@_shape_aware
def ones(key: Key, shape: Shape, dtype: DTypeLike = "float32") -> Array:
    """All ones.

    Args:
      key: unused (any key; kept for the common signature).
      shape: the weight's shape, a tuple of positive ints.
      dtype: a floating dtype.
    """
    shape, dt = _check(shape, dtype)
    return _finish(np.ones(shape), dt)


@_shape_aware
def _constant(key, shape, dtype="float32", *, value):
    shape, dt = _check(shape, dtype)
    return _finish(np.full(shape, value, dtype=np.float64), dt)


@_shape_aware
def _normal(key, shape, dtype="float32", *, mean, stddev):
    shape, dt = _check(shape, dtype)
    return _finish(mean + stddev * generator(key).standard_normal(shape), dt)


@_shape_aware
def _uniform(key, shape, dtype="float32", *, minval, maxval):
    shape, dt = _check(shape, dtype)
    return _finish(generator(key).uniform(minval, maxval, shape), dt)


@_shape_aware
def _truncated_normal(key, shape, dtype="float32", *, mean, stddev):
    shape, dt = _check(shape, dtype)
    return _finish(mean + stddev * _truncated_standard_normal(generator(key), shape), dt)


@functools.partial(_shape_aware, min_rank=2)
def _orthogonal(key, shape, dtype="float32", *, gain):
    shape, dt = _check(shape, dtype)
    if len(shape) < 2:
        raise ValueError(f"orthogonal needs a shape with at least 2 dims, got shape={shape!r}")
    # As Keras: flatten to (prod(shape[:-1]), shape[-1]) and QR the taller orientation.
    rows, cols = math.prod(shape[:-1]), shape[-1]
    q, r = np.linalg.qr(generator(key).standard_normal((max(rows, cols), min(rows, cols))))
    q = q * np.sign(np.diag(r))  # sign fix: makes Q uniform (Haar) over orthogonal matrices
    return _finish(gain * (q.T if rows < cols else q).reshape(shape), dt)


def constant(value: float = 0.0) -> Initializer:
    """An initializer filling every entry with ``value``.

    Args:
      value: the fill value.

    Returns:
      ``init(key, shape, dtype="float32") -> Array``.
    """
    return functools.partial(_constant, value=float(value))


def normal(mean: float = 0.0, stddev: float = 0.05) -> Initializer:
    """An initializer drawing from ``N(mean, stddev**2)``.

    Args:
      mean: the mean of the distribution.
      stddev: its standard deviation.

    Returns:
      ``init(key, shape, dtype="float32") -> Array``.
    """
    return functools.partial(_normal, mean=float(mean), stddev=float(stddev))


def uniform(minval: float = -0.05, maxval: float = 0.05) -> Initializer:
    """An initializer drawing uniformly from ``[minval, maxval)``.

    Args:
      minval: the lower bound.
      maxval: the upper bound (excluded).

    Returns:
      ``init(key, shape, dtype="float32") -> Array``.
    """
    return functools.partial(_uniform, minval=float(minval), maxval=float(maxval))


def truncated_normal(mean: float = 0.0, stddev: float = 0.05) -> Initializer:
    """An initializer drawing from ``N(mean, stddev**2)``, redrawing values beyond 2 stddev.

    Args:
      mean: the mean of the distribution before truncation.
      stddev: its standard deviation before truncation.

    Returns:
      ``init(key, shape, dtype="float32") -> Array``.
    """
    return functools.partial(_truncated_normal, mean=float(mean), stddev=float(stddev))


def orthogonal(gain: float = 1.0) -> Initializer:
    """An initializer giving ``gain`` times a random orthogonal matrix (QR of a normal one).

    Args:
      gain: the multiplicative factor.

    Returns:
      ``init(key, shape, dtype="float32") -> Array``; shapes with more than 2 dims are
      flattened to ``(prod(shape[:-1]), shape[-1])`` first, as in Keras.
    """
    return functools.partial(_orthogonal, gain=float(gain))


def _scaled(key, shape, dtype, scale: float, fan: str, dist: str) -> Array:
    fan_in, fan_out = compute_fans(_check(shape, dtype)[0])
    var = scale / {"in": fan_in, "avg": (fan_in + fan_out) / 2}[fan]
    if dist == "uniform":  # Var(U(-a, a)) = a^2 / 3
        limit = math.sqrt(3.0 * var)
        return _uniform(key, shape, dtype, minval=-limit, maxval=limit)
    return _truncated_normal(key, shape, dtype, mean=0.0, stddev=math.sqrt(var) / _TRUNCATED_STD)


def glorot_uniform(key: Key, shape: Shape, dtype: DTypeLike = "float32") -> Array:
    """Glorot/Xavier uniform: ``U(-l, l)`` with ``l = sqrt(6 / (fan_in + fan_out))``.

    Args:
      key: an int seed or a :class:`numpy.random.SeedSequence` (:mod:`wframe.random`).
      shape: the weight's shape, a tuple of positive ints (fans from :func:`compute_fans`).
      dtype: a floating dtype; drawn in float64 on the host, then cast.
    """
    return _scaled(key, shape, dtype, 1.0, "avg", "uniform")


def glorot_normal(key: Key, shape: Shape, dtype: DTypeLike = "float32") -> Array:
    """Glorot/Xavier normal: truncated normal of variance ``2 / (fan_in + fan_out)``.

    Args:
      key: an int seed or a :class:`numpy.random.SeedSequence` (:mod:`wframe.random`).
      shape: the weight's shape, a tuple of positive ints (fans from :func:`compute_fans`).
      dtype: a floating dtype; drawn in float64 on the host, then cast.
    """
    return _scaled(key, shape, dtype, 1.0, "avg", "normal")


def he_uniform(key: Key, shape: Shape, dtype: DTypeLike = "float32") -> Array:
    """He/Kaiming uniform: ``U(-l, l)`` with ``l = sqrt(6 / fan_in)``.

    Args:
      key: an int seed or a :class:`numpy.random.SeedSequence` (:mod:`wframe.random`).
      shape: the weight's shape, a tuple of positive ints (fans from :func:`compute_fans`).
      dtype: a floating dtype; drawn in float64 on the host, then cast.
    """
    return _scaled(key, shape, dtype, 2.0, "in", "uniform")


def he_normal(key: Key, shape: Shape, dtype: DTypeLike = "float32") -> Array:
    """He/Kaiming normal: truncated normal of variance ``2 / fan_in``.

    Args:
      key: an int seed or a :class:`numpy.random.SeedSequence` (:mod:`wframe.random`).
      shape: the weight's shape, a tuple of positive ints (fans from :func:`compute_fans`).
      dtype: a floating dtype; drawn in float64 on the host, then cast.
    """
    return _scaled(key, shape, dtype, 2.0, "in", "normal")


def lecun_uniform(key: Key, shape: Shape, dtype: DTypeLike = "float32") -> Array:
    """LeCun uniform: ``U(-l, l)`` with ``l = sqrt(3 / fan_in)``.

    Args:
      key: an int seed or a :class:`numpy.random.SeedSequence` (:mod:`wframe.random`).
      shape: the weight's shape, a tuple of positive ints (fans from :func:`compute_fans`).
      dtype: a floating dtype; drawn in float64 on the host, then cast.
    """
    return _scaled(key, shape, dtype, 1.0, "in", "uniform")


def lecun_normal(key: Key, shape: Shape, dtype: DTypeLike = "float32") -> Array:
    """LeCun normal: truncated normal of variance ``1 / fan_in``.

    Args:
      key: an int seed or a :class:`numpy.random.SeedSequence` (:mod:`wframe.random`).
      shape: the weight's shape, a tuple of positive ints (fans from :func:`compute_fans`).
      dtype: a floating dtype; drawn in float64 on the host, then cast.
    """
    return _scaled(key, shape, dtype, 1.0, "in", "normal")


_FACTORIES = (constant, normal, uniform, truncated_normal, orthogonal)
_ALL: dict[str, Callable] = {
    "zeros": zeros,
    "ones": ones,
    "constant": constant,
    "normal": normal,
    "random_normal": normal,
    "uniform": uniform,
    "random_uniform": uniform,
    "truncated_normal": truncated_normal,
    "orthogonal": orthogonal,
    "glorot_uniform": glorot_uniform,
    "xavier_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "xavier_normal": glorot_normal,
    "he_uniform": he_uniform,
    "kaiming_uniform": he_uniform,
    "he_normal": he_normal,
    "kaiming_normal": he_normal,
    "lecun_uniform": lecun_uniform,
    "lecun_normal": lecun_normal,
}


def get(identifier: str | Initializer, **kwargs: float) -> Initializer:
    """Look up an initializer by snake_case name (or Keras CamelCase), or pass a callable through.

    Args:
      identifier: a name such as ``"he_normal"`` or ``"GlorotUniform"``, or an initializer.
      **kwargs: arguments of a parametrized initializer, e.g. ``value=0.5`` for ``"constant"``.

    Returns:
      ``init(key, shape, dtype="float32") -> Array``.
    """
    if isinstance(identifier, str):
        name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", identifier).lower()
        if name not in _ALL:
            raise ValueError(f"Unknown initializer {identifier!r}. Expected one of {sorted(_ALL)}.")
        found = _ALL[name]
        if found in _FACTORIES:
            return found(**kwargs)
    elif callable(identifier):
        # A user's callable cannot know shape_only: it is wrapped while a block runs.
        found = _shape_aware(identifier) if active() else identifier
    else:
        raise TypeError(
            "initializer must be a name (str) or a callable, got "
            f"{type(identifier).__name__}: {identifier!r}"
        )
    if kwargs:
        raise TypeError(f"initializer {identifier!r} takes no arguments, got {kwargs}")
    return found


# The variance-scaling initializers: (scale, fan). Uniform ones draw U(-l, l) with variance
# scale / fan; normal ones divide the truncated normal's stddev by its std (0.8796...), so both
# give exactly std sqrt(scale / fan).
_SCALED = {
    glorot_uniform: (1.0, "avg"),
    glorot_normal: (1.0, "avg"),
    he_uniform: (2.0, "in"),
    he_normal: (2.0, "in"),
    lecun_uniform: (1.0, "in"),
    lecun_normal: (1.0, "in"),
}


def moments(init: Any, shape: tuple[int, ...]) -> tuple[float, float] | None:
    """``(mean, std)`` of the entries ``init`` draws for a parameter of ``shape``.

    Args:
      init: an initializer name or callable of this module.
      shape: the parameter's shape (fans as :func:`compute_fans`).

    Returns:
      The exact mean and std for the built-in initializers: ``sqrt(scale / fan)`` for
      glorot/he/lecun (uniform and truncated normal alike), ``stddev * 0.8796...`` for
      ``truncated_normal`` (truncation at 2 stddev, not corrected), ``(b - a) / sqrt(12)`` for
      ``uniform``, ``gain / sqrt(max(rows, cols))`` for ``orthogonal`` (its ``rows x cols``
      matrix, ``rows = prod(shape[:-1])``, has ``min(rows, cols)`` orthonormal rows or columns),
      0 for constants; ``None`` for a custom callable.
    """
    try:
        init = get(init)
    except (TypeError, ValueError):
        return None
    shape = tuple(int(d) for d in shape)
    if init in _SCALED:
        scale, fan = _SCALED[init]
        fan_in, fan_out = compute_fans(shape)
        return 0.0, math.sqrt(scale / (fan_in if fan == "in" else (fan_in + fan_out) / 2))
    if init is zeros:
        return 0.0, 0.0
    if init is ones:
        return 1.0, 0.0
    if not isinstance(init, functools.partial):
        return None
    kw = init.keywords
    if init.func is _constant:
        return kw["value"], 0.0
    if init.func is _normal:
        return kw["mean"], kw["stddev"]
    if init.func is _truncated_normal:
        return kw["mean"], kw["stddev"] * _TRUNCATED_STD
    if init.func is _uniform:
        return (kw["minval"] + kw["maxval"]) / 2, (kw["maxval"] - kw["minval"]) / math.sqrt(12)
    if init.func is _orthogonal and len(shape) >= 2:
        rows, cols = math.prod(shape[:-1]), shape[-1]
        return 0.0, abs(kw["gain"]) / math.sqrt(max(rows, cols))
    return None
