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

import zlib

import numpy as np

from wframe.backends import array_namespace
from wframe.types import Array, Key


def as_key(key: Key) -> np.random.SeedSequence:
    """Normalize an int seed or a SeedSequence into a SeedSequence."""
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
    """
    if hasattr(key, "shape"):
        word = zlib.crc32(data.encode()) if isinstance(data, str) else int(data)
        xp = array_namespace(key)
        salt = xp.asarray([0, word & 0xFFFFFFFF], dtype=xp.uint32)
        return mix32(key ^ salt)
    key = as_key(key)
    word = zlib.crc32(data.encode()) if isinstance(data, str) else int(data)
    return np.random.SeedSequence(key.entropy, spawn_key=(*key.spawn_key, word))


def split(key: Key, num: int = 2) -> tuple[np.random.SeedSequence, ...]:
    """``num`` independent child keys; calling it twice gives the same children."""
    return tuple(fold_in(key, i) for i in range(num))


def generator(key: Key) -> np.random.Generator:
    """A host NumPy generator (Philox, counter-based) seeded by ``key``."""
    return np.random.Generator(np.random.Philox(as_key(key)))


def mix32(x: Array) -> Array:
    """A bijective avalanche of uint32 words (murmur3's finalizer), elementwise, any backend."""
    xp = array_namespace(x)
    x = x ^ (x >> 16)
    x = x * xp.asarray(0x85EBCA6B, dtype=xp.uint32)
    x = x ^ (x >> 13)
    x = x * xp.asarray(0xC2B2AE35, dtype=xp.uint32)
    return x ^ (x >> 16)


def array_key(seed: int, counter: int, backend=None) -> Array:
    """The array key ``[seed, counter]`` on ``backend`` (default: the active one)."""
    from wframe.backends import get_backend

    backend = backend or get_backend()
    host = np.array([seed & 0xFFFFFFFF, counter & 0xFFFFFFFF], dtype=np.uint32)
    return backend.asarray(host)
