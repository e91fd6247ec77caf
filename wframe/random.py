"""Explicit, backend-independent randomness.

A key is an ``int`` seed or a :class:`numpy.random.SeedSequence`. Splitting is pure (the same key
always gives the same children) and draws happen on the host with NumPy's counter-based Philox
generator, then move to the backend with ``asarray``: one seed gives bit-identical numbers on
every backend.

Inside compiled code (dropout masks) a key is data instead: a ``uint32`` array of shape (2,),
``[seed, counter]``, hashed with xp integer arithmetic so that NumPy, CuPy and JAX give the same
bits without host transfers and JAX does not recompile when the counter moves.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np

from wframe.backends import array_namespace, get_backend
from wframe.backends.fusion import FUSED
from wframe.types import Array, Key, Shape


def as_key(key: Key) -> np.random.SeedSequence:
    """Normalize an int seed or a SeedSequence into a SeedSequence.

    Args:
      key: an int seed (>= 0) or a :class:`numpy.random.SeedSequence`.
    """
    if isinstance(key, np.random.SeedSequence):
        return key
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool) and key >= 0:
        return np.random.SeedSequence(int(key))
    raise TypeError(
        f"key must be a non-negative int seed or a numpy.random.SeedSequence, got {key!r}"
    )


def fold_in(key: Key | Array, data: int | str) -> np.random.SeedSequence | Array:
    """A child key derived from ``key`` and an int or string label, purely.

    ``key`` may be a host key (int or SeedSequence) or an array key (see the module docstring);
    the child has the same kind.

    Args:
      key: the parent key, host or array.
      data: the label; a str is hashed (CRC-32), an int is used as it is.
    """
    if hasattr(key, "shape"):
        word = zlib.crc32(data.encode()) if isinstance(data, str) else int(data)
        xp = array_namespace(key)
        # Mixed in non-linearly, so that (step, layer) pairs never collide the way a plain
        # xor would make (0, 3) and (2, 1) collide.
        k1 = mix32(mix32(key[1:2]) + xp.asarray([word & 0xFFFFFFFF], dtype=xp.uint32))
        return xp.concat([mix32(key[0:1] ^ k1), k1])
    key = as_key(key)
    word = zlib.crc32(data.encode()) if isinstance(data, str) else int(data)
    return np.random.SeedSequence(key.entropy, spawn_key=(*key.spawn_key, word))


def split(key: Key, num: int = 2) -> tuple[np.random.SeedSequence, ...]:
    """``num`` independent child keys; calling it twice gives the same children.

    Args:
      key: an int seed or a :class:`numpy.random.SeedSequence`.
      num: how many children (child ``i`` is ``fold_in(key, i)``).
    """
    return tuple(fold_in(key, i) for i in range(num))


def generator(key: Key) -> np.random.Generator:
    """A host NumPy generator (Philox, counter-based) seeded by ``key``.

    Args:
      key: an int seed or a :class:`numpy.random.SeedSequence`.
    """
    return np.random.Generator(np.random.Philox(as_key(key)))


def mix32(x: Array) -> Array:
    """A bijective avalanche of uint32 words (murmur3's finalizer), elementwise, any backend.

    Args:
      x: a ``uint32`` array.
    """
    xp = array_namespace(x)
    x = x ^ (x >> 16)
    x = x * xp.asarray(0x85EBCA6B, dtype=xp.uint32)
    x = x ^ (x >> 13)
    x = x * xp.asarray(0xC2B2AE35, dtype=xp.uint32)
    return x ^ (x >> 16)


def array_key(seed: int, counter: int, backend=None) -> Array:
    """The array key ``[seed, counter]`` on ``backend`` (default: the active one).

    Args:
      seed: an int, kept modulo ``2**32``.
      counter: an int (e.g. the step), kept modulo ``2**32``.
      backend: the :class:`~wframe.backends.Backend` to place it on; ``None`` for the active one.
    """
    backend = backend or get_backend()
    host = np.array([seed & 0xFFFFFFFF, counter & 0xFFFFFFFF], dtype=np.uint32)
    return backend.asarray(host)


# ----------------------------------------------------------------------------- in-graph draws
# A stateless counter-based generator on xp uint32 arithmetic: element ``i`` (its flat index, the
# counter) is hashed with the key by two keyed rounds of murmur3's finalizer,
#     bits[i] = mix32(mix32(i + s0) ^ s1),   s0, s1 = words derived from the key by mix32.
# Every step is a uint32 add, xor, shift or wrapping multiply, which NumPy, CuPy and XLA define
# identically, so one key gives bit-identical bits on every backend, eagerly or under ``jax.jit``,
# with no host transfer and no backend RNG. For a fixed key the map i -> bits[i] is a bijection
# of the 2**32 counters (each round is), so a stream never repeats within one draw. About 16
# integer ops per element; fused (XLA, a CuPy kernel) the draw is memory-bound like cuRAND's.
_GOLDEN = 0x9E3779B9  # 2**32 / golden ratio: decorrelates the two key words before mixing


def _key_words(key: Array) -> tuple[Any, Any, Any]:
    """``(xp, s0, s1)``: the key checked and turned into two mixed uint32 words of shape (1,)."""
    if not hasattr(key, "shape"):
        raise TypeError(
            "in-graph random draws need an array key (a uint32 array of shape (2,), e.g. "
            f"wframe.random.array_key(seed, step)), got {type(key).__name__} {key!r}"
        )
    xp = array_namespace(key)
    if tuple(key.shape) != (2,) or key.dtype != xp.uint32:
        raise ValueError(
            "an array key must be a uint32 array of shape (2,) (see wframe.random.array_key), "
            f"got dtype {key.dtype} and shape {tuple(key.shape)}"
        )
    # Slices, not key[0]: NumPy turns an integer index into a scalar, whose wrapping multiply
    # warns about overflow where an array's does not.
    s0 = mix32(key[0:1] ^ xp.asarray([_GOLDEN], dtype=xp.uint32))
    s1 = mix32(key[1:2] ^ s0)
    return xp, s0, s1


def random_bits(key: Array, shape: Shape) -> Array:
    """Uniform random ``uint32`` words of ``shape`` from an array key, identical on every backend.

    Args:
      key: a uint32 array of shape (2,) (:func:`array_key`, :func:`fold_in`) of any backend;
        the result lives on the same backend.
      shape: the output shape; at most 2**32 elements (the counter is one uint32 word).

    Returns:
      A uint32 array: ``mix32(mix32(i + s0) ^ s1)`` for the flat index ``i`` of each element.
    """
    fused = FUSED.get(array_namespace(key)) if hasattr(key, "shape") else None
    bits = fused.random_bits(key, shape) if fused is not None else None
    if bits is not None:  # the same words from one kernel (CuPy)
        return bits
    xp, s0, s1 = _key_words(key)
    shape = tuple(int(d) for d in shape)
    n = math.prod(shape)
    if n > 2**32:
        raise ValueError(f"random_bits draws at most 2**32 elements, got shape {shape} ({n})")
    counter = xp.arange(n, dtype=xp.uint32)
    return xp.reshape(mix32(mix32(counter + s0) ^ s1), shape)


def uniform(key: Array, shape: Shape, dtype: Any = "float32") -> Array:
    """Uniform floats in [0, 1) from an array key, bit-identical on NumPy, CuPy and JAX.

    The top ``p`` bits of :func:`random_bits` (``p`` = the dtype's significand precision, at most
    32) are converted exactly and scaled by ``2**-p``: every value is a multiple of ``2**-p`` and
    1.0 is never returned, whatever the rounding of the backend.

    Args:
      key: a uint32 array of shape (2,) (:func:`array_key`) of any backend.
      shape: the output shape.
      dtype: a floating dtype name (``"float32"``) or a dtype of the key's namespace.

    Returns:
      An array of ``shape`` and ``dtype`` on the key's backend.
    """
    bits = random_bits(key, shape)
    xp = array_namespace(bits)
    dt = getattr(xp, np.dtype(dtype).name) if isinstance(dtype, str) else dtype
    try:
        eps = float(xp.finfo(dt).eps)
    except (TypeError, ValueError):
        raise ValueError(f"uniform needs a floating dtype, got dtype={dtype!r}") from None
    p = min(round(1 - math.log2(eps)), 32)
    # Integers below 2**p convert exactly, and the power-of-two scale is exact too.
    return xp.astype(bits >> (32 - p), dt) * (2.0**-p)
