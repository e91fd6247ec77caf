"""Trees of arrays a user gives a model (params, state, optimizer state, pruning masks):
checked against the ones they replace, and moved to a backend.

Written once against the array API, as :mod:`wframe.data` is for the data a model trains on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wframe.backends import Backend, backend_of, to_numpy


def check_tree(new: Any, old: Any, what: str, backend: Backend) -> Any:
    """``new`` checked to have ``old``'s names, shapes and dtypes, on ``backend``; returns it."""
    if not isinstance(new, dict):
        raise TypeError(f"{what} must be a dict like model.{what}, got {type(new).__name__}")
    old_flat, new_flat = dict(_dict_items(old)), dict(_dict_items(new))
    if old_flat.keys() != new_flat.keys():
        missing = sorted(old_flat.keys() - new_flat.keys())
        unexpected = sorted(new_flat.keys() - old_flat.keys())
        raise ValueError(f"{what} names differ: missing {missing}, unexpected {unexpected}")
    for name, a in new_flat.items():
        ref = old_flat[name]
        if not hasattr(a, "shape") or (tuple(a.shape), str(a.dtype)) != (
            tuple(ref.shape),
            str(ref.dtype),
        ):
            got = (
                f"shape {tuple(a.shape)} and dtype {a.dtype}"
                if hasattr(a, "shape")
                else (type(a).__name__)
            )
            raise ValueError(
                f"{what} '{name}' must have shape {tuple(ref.shape)} and dtype {ref.dtype}, "
                f"got {got}"
            )
        owner = backend_of(a)
        if owner is not backend:
            raise TypeError(
                f"{what} '{name}' is an array of backend '{owner.name}', but the model lives "
                f"on '{backend.name}'; convert it with model.backend.asarray(wf.to_numpy(a)), "
                f"or move the model first with model.to_backend('{owner.name}')"
            )
    return new


def flat_names(tree: Any) -> list[str]:
    """The flat names (``"block_0/dense_1/W"``) of a nested dict's values, in order."""
    return [name for name, _ in _dict_items(tree)]


def _dict_items(tree: Any, prefix: str = ""):
    """``(flat name, value)`` of a nested dict; anything that is not a dict is a value."""
    for k, v in tree.items():
        name = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict):
            yield from _dict_items(v, name)
        else:
            yield name, v


def mover(backend: Backend):
    """``a -> a`` on ``backend`` (copied through the host from any other backend)."""

    def move(a):
        if hasattr(a, "shape") and backend_of(a) is not backend:
            return backend.asarray(to_numpy(a))
        return a

    return move


def check_masks(new: Any, params: Any, backend: Backend) -> dict[str, Any]:
    """Pruning masks checked against ``params`` (names, shapes, values 0/1) and moved to
    ``backend`` in each param's dtype; ``None`` or ``{}`` gives ``{}``."""
    if new is None:
        return {}
    if not isinstance(new, dict):
        raise TypeError(
            f"masks must be a dict {{'dense_0/W': array of 0 and 1}}, got {type(new).__name__}"
        )
    flat = dict(_dict_items(params))
    out = {}
    for name, mask in new.items():
        if name not in flat:
            raise ValueError(f"masks: the model has no param {name!r}; its params are {list(flat)}")
        ref = flat[name]
        host = np.asarray(to_numpy(mask) if hasattr(mask, "shape") else mask)
        if host.shape != tuple(ref.shape):
            raise ValueError(
                f"masks: {name!r} must have the param's shape {tuple(ref.shape)}, got {host.shape}"
            )
        if not np.isin(host, (0, 1)).all():
            raise ValueError(f"masks: {name!r} must hold only 0 and 1 (or booleans)")
        out[name] = backend.asarray(host.astype(str(ref.dtype)))
    return out
