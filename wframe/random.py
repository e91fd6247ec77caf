"""Explicit, backend-independent randomness.

A key is an ``int`` seed or a :class:`numpy.random.SeedSequence`. Splitting is pure (the same key
always gives the same children) and draws happen on the host with NumPy's counter-based Philox
generator, then move to the backend with ``asarray``: one seed gives bit-identical numbers on
every backend.
"""

from __future__ import annotations

import zlib

import numpy as np

from wframe.types import Key


def as_key(key: Key) -> np.random.SeedSequence:
    """Normalize an int seed or a SeedSequence into a SeedSequence."""
    if isinstance(key, np.random.SeedSequence):
        return key
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool) and key >= 0:
        return np.random.SeedSequence(int(key))
    raise TypeError(
        f"key must be a non-negative int seed or a numpy.random.SeedSequence, got {key!r}"
    )


def fold_in(key: Key, data: int | str) -> np.random.SeedSequence:
    """A child key derived from ``key`` and an int or string label, purely."""
    key = as_key(key)
    word = zlib.crc32(data.encode()) if isinstance(data, str) else int(data)
    return np.random.SeedSequence(key.entropy, spawn_key=(*key.spawn_key, word))


def split(key: Key, num: int = 2) -> tuple[np.random.SeedSequence, ...]:
    """``num`` independent child keys; calling it twice gives the same children."""
    return tuple(fold_in(key, i) for i in range(num))


def generator(key: Key) -> np.random.Generator:
    """A host NumPy generator (Philox, counter-based) seeded by ``key``."""
    return np.random.Generator(np.random.Philox(as_key(key)))
