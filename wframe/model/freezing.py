"""Freezing: which params training leaves alone, chosen by flat name.

``model.freeze("block_0/*")`` marks params as frozen: ``fit`` and :func:`wframe.make_train_step`
then give them no gradient computation (the trainable partition alone is differentiated on JAX;
on NumPy and CuPy the hand-written backward is asked only for the trainable params' gradients,
and a frozen body is not traversed backward at all), no optimizer state, no update, no weight
decay, and leave them out of the gradient-clipping norms: they stay bit-identical.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from wframe.tree import flatten


def select(params: dict, patterns: str | Iterable[str], what: str) -> frozenset[str]:
    """The flat param names that ``patterns`` name: each pattern is a flat name
    (``"dense_0/W"``), a layer or container name (``"block_0"``: all its params) or a glob
    (``"block_0/*"``, ``"*/b"``). A pattern that names nothing is an error listing the names."""
    names = [name for name, _ in flatten(params)]
    given = [patterns] if isinstance(patterns, str) else patterns
    given = list(given) if isinstance(given, (list, tuple, set, frozenset)) else None
    if not given or not all(isinstance(p, str) for p in given):
        raise TypeError(
            f"{what}: expected a name, a glob or a list of them (e.g. 'block_0/*'), got "
            f"{patterns!r}"
        )
    patterns = given
    chosen: set[str] = set()
    for pattern in patterns:
        hits = [
            n
            for n in names
            if n == pattern
            or n.startswith(pattern.rstrip("/") + "/")
            or fnmatch.fnmatchcase(n, pattern)
        ]
        if not hits:
            raise ValueError(
                f"{what}: {pattern!r} names no parameter of the model; its parameters are {names}"
            )
        chosen.update(hits)
    return frozenset(chosen)
