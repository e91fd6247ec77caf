"""Data of several arrays (a model's inputs or outputs by name, tuples and dicts of arrays)
by rows: one entry per name, the same number of examples, rows taken, counted, joined and split
off for validation.

Like :mod:`wframe.data`, everything here runs on the host before anything is compiled, and
errors name the argument, the expected and the received value, and the fix.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from wframe.data import host_array


def require_examples(x: Any, what: str, fix: str) -> None:
    """Refuse data of no rows where examples are needed (a mean over none is no number).

    Args:
      x, what, fix: the data (array, tuple or dict of them), its name, and the error's advice.
    """
    if rows(x) == 0:
        raise ValueError(f"{what} has no examples (0 rows); {fix}")


def split(x: Any, y: Any, fraction: Any) -> tuple[Any, Any, tuple[Any, Any]]:
    """``(x_train, y_train, (x_val, y_val))``: the last ``fraction`` of the rows held out, as
    Keras' ``validation_split`` (``ceil(n * (1 - fraction))`` rows kept for training).

    Args:
      x, y: inputs and labels (arrays, lists or dicts of them, or nested sequences).
      fraction: the share of rows held out, a number in [0, 1) that leaves rows on each side.
    """
    ok = isinstance(fraction, (int, float, np.floating)) and not isinstance(fraction, bool)
    if not ok or not 0 <= fraction < 1:
        raise ValueError(f"fit: validation_split must be a number in [0, 1), got {fraction!r}")
    x, y = _arrays(x, "x"), _arrays(y, "y")
    first = _first(x)
    n = first.shape[0] if first.ndim else 0
    cut = math.ceil(n * (1 - float(fraction)))
    if cut == 0 or cut == n:
        raise ValueError(
            f"fit: validation_split={fraction} of {n} examples leaves "
            f"{'no training' if cut == 0 else 'no validation'} examples; use a larger "
            "dataset or another fraction"
        )
    head, tail = slice(None, cut), slice(cut, None)
    return take(x, head), take(y, head), (take(x, tail), take(y, tail))


def _arrays(x: Any, what: str) -> Any:
    """``x`` with nested sequences made NumPy arrays (a list or dict of arrays kept one)."""
    if isinstance(x, dict):
        return {k: _arrays(v, f"{what}[{k!r}]") for k, v in x.items()}
    if _is_array_list(x):
        return tuple(_arrays(v, f"{what}[{i}]") for i, v in enumerate(x))
    x = host_array(x, what)
    return x if hasattr(x, "shape") else np.asarray(x)


def _first(x: Any) -> Any:
    if isinstance(x, dict):
        return _first(next(iter(x.values())))
    return _first(x[0]) if isinstance(x, tuple) else x


def take(x: Any, rows: Any) -> Any:
    """``x[rows]`` of an array, or of each array of a tuple or dict of them.

    Args:
      x, rows: the data and the index along the batch axis (a slice or an index array).
    """
    if isinstance(x, dict):
        return {k: take(v, rows) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(take(v, rows) for v in x)
    return x[rows]


def rows(x: Any) -> int:
    """The number of examples of an array or tuple of arrays (checked to agree).

    Args:
      x: an array, or a tuple or dict of them (the first one's rows are read).
    """
    return int(_first(x).shape[0])


def concat_rows(parts: list, xp: Any) -> Any:
    """Batches (arrays, or tuples of one array per output) joined along the batch axis.

    Args:
      parts, xp: the batches in order (one is returned as it is) and their array namespace.
    """
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], tuple):
        return tuple(xp.concat([p[i] for p in parts], axis=0) for i in range(len(parts[0])))
    return xp.concat(parts, axis=0)


def _is_array_list(x: Any) -> bool:
    """A list or tuple of arrays of at least one axis (several inputs), not nested numbers."""
    return (
        isinstance(x, (list, tuple))
        and bool(x)
        and all(getattr(a, "ndim", 0) >= 1 and not isinstance(a, (list, tuple)) for a in x)
    )


def per_name(x: Any, names: tuple[str, ...], what: str, kind: str) -> tuple:
    """``x`` as a tuple with one entry per name: from a dict by name (a pandas DataFrame
    whose columns hold the names, each column one ``(n, 1)`` array), a list or tuple of
    arrays in order, or (one name) one array; each entry as :func:`host_array` gives it; a
    ``ValueError`` naming what is wrong.

    Args:
      x, names: the data and the model's input (or output) names, in order.
      what, kind: the argument's name in errors and what the names are (``"input"``).
    """
    n = len(names)
    columns = getattr(x, "columns", None)
    if n > 1 and columns is not None and set(names) == set(columns):
        x = {k: x[[k]] for k in names}
    parts = _per_name(x, names, what, kind)
    named = len(parts) > 1
    return tuple(
        host_array(p, f"{what}[{k!r}]" if named else what, strict=False)
        for p, k in zip(parts, names, strict=True)
    )


def _per_name(x: Any, names: tuple[str, ...], what: str, kind: str) -> tuple:
    n = len(names)
    if isinstance(x, dict):
        unknown = sorted(set(x) - set(names))
        missing = [k for k in names if k not in x]
        if unknown or missing:
            raise ValueError(
                f"{what}: the dict's keys {sorted(x)} must be the model's {kind} names "
                f"{list(names)} (missing {missing}, unknown {unknown})"
            )
        return tuple(x[k] for k in names)
    if _is_array_list(x):
        if len(x) != n:
            fix = (
                "stack them into one array, or build a graph model with a wf.Input per array"
                if n == 1
                else "pass one per " + kind
            )
            raise ValueError(
                f"{what}: a {type(x).__name__} of {len(x)} arrays for a model of {n} {kind}"
                f"{'s' if n > 1 else ''} {list(names)}; {fix}"
            )
        return tuple(x)
    if n > 1:
        raise ValueError(
            f"{what}: the model has {n} {kind}s {list(names)}; pass a list of {n} arrays or a "
            f"dict by {kind} name, got {type(x).__name__}"
        )
    return (x,)


def same_rows(arrays: tuple, names: tuple[str, ...], what: str) -> None:
    """Refuse inputs (or labels) of different numbers of examples.

    Args:
      arrays, names, what: the arrays, their names in order, and the argument in errors.
    """
    counts = [int(a.shape[0]) for a in arrays]
    if len(set(counts)) > 1:
        got = ", ".join(f"{n!r}: {c}" for n, c in zip(names, counts, strict=True))
        raise ValueError(f"{what}: every input needs the same number of examples, got {got}")
