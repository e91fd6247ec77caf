"""Minimal pytree helpers over nested dicts, lists, tuples and NamedTuples.

Params, grads and optimizer states are plain containers, so the same helpers serve every backend
without importing jax. ``None`` is an empty subtree, as in JAX.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def tree_map(fn: Callable, tree: Any, *rest: Any) -> Any:
    """Apply ``fn`` to every leaf of ``tree`` (and the matching leaves of ``rest``)."""
    if isinstance(tree, dict):
        # Leaves are inlined here rather than recursed into: this runs several times per train
        # step, and for small models its per-leaf overhead is what a step costs.
        if not rest:
            return {k: fn(v) if hasattr(v, "shape") else tree_map(fn, v) for k, v in tree.items()}
        if len(rest) == 1:
            (other,) = rest
            return {
                k: fn(v, other[k]) if hasattr(v, "shape") else tree_map(fn, v, other[k])
                for k, v in tree.items()
            }
        return {
            k: fn(v, *[r[k] for r in rest])
            if hasattr(v, "shape")
            else tree_map(fn, v, *[r[k] for r in rest])
            for k, v in tree.items()
        }
    if _is_namedtuple(tree):
        return type(tree)(*(tree_map(fn, *xs) for xs in zip(tree, *rest, strict=True)))
    if isinstance(tree, (tuple, list)):
        return type(tree)(tree_map(fn, *xs) for xs in zip(tree, *rest, strict=True))
    if tree is None:
        return None
    return fn(tree, *rest)


def tree_leaves(tree: Any) -> list:
    """Leaves of ``tree`` in traversal order (no names built: this runs every train step)."""
    out: list = []
    _leaves(tree, out)
    return out


def _leaves(tree: Any, out: list) -> None:
    if isinstance(tree, dict):
        for v in tree.values():
            if hasattr(v, "shape"):
                out.append(v)
            else:
                _leaves(v, out)
    elif isinstance(tree, (tuple, list)):
        for v in tree:
            _leaves(v, out)
    elif tree is not None:
        out.append(tree)


def flatten(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``("dense_0/W", leaf)`` pairs; dict keys and sequence indices joined with ``/``."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, (tuple, list)):
        items = (
            (tree._fields[i] if _is_namedtuple(tree) else str(i), v) for i, v in enumerate(tree)
        )
    elif tree is None:
        return
    else:
        yield prefix, tree
        return
    for k, v in items:
        yield from flatten(v, f"{prefix}/{k}" if prefix else str(k))


def reorder(tree: Any, like: Any) -> Any:
    """``tree`` with its dicts' keys in the order of ``like``'s (JAX returns sorted dicts)."""
    if isinstance(tree, dict) and isinstance(like, dict):
        return {k: reorder(tree[k], like[k]) for k in like}
    if _is_namedtuple(tree):
        return type(tree)(*(reorder(t, s) for t, s in zip(tree, like, strict=True)))
    if isinstance(tree, (tuple, list)) and isinstance(like, (tuple, list)):
        return type(tree)(reorder(t, s) for t, s in zip(tree, like, strict=True))
    return tree


def path_get(tree: Any, path: tuple[str, ...]) -> Any:
    """The subtree of nested dicts at ``path`` (``("block_0", "dense_1", "W")``)."""
    for key in path:
        tree = tree[key]
    return tree


def map_at(tree: dict, fns: dict[str, Callable]) -> dict:
    """``tree`` with ``fns["a/b/W"](leaf)`` at those flat names; only the dicts on the way
    are copied, every other subtree is shared."""
    if not fns:
        return tree
    out = dict(tree)
    nested: dict[str, dict[str, Callable]] = {}
    for name, fn in fns.items():
        head, _, rest = name.partition("/")
        if rest:
            nested.setdefault(head, {})[rest] = fn
        else:
            out[head] = fn(out[head])
    for head, sub in nested.items():
        out[head] = map_at(out[head], sub)
    return out


def split(tree: dict, names: frozenset[str] | set[str], prefix: str = "") -> tuple[dict, dict]:
    """``(rest, chosen)``: ``tree`` cut in two nested dicts by flat names (``chosen`` holds the
    leaves named in ``names``); empty dicts are dropped. :func:`merge` puts them back."""
    rest, chosen = {}, {}
    for k, v in tree.items():
        name = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict):
            r, c = split(v, names, name)
            if r:
                rest[k] = r
            if c:
                chosen[k] = c
        elif name in names:
            chosen[k] = v
        else:
            rest[k] = v
    return rest, chosen


def merge(a: dict, b: dict, like: dict) -> dict:
    """The nested dicts ``a`` and ``b`` (disjoint leaves) as one, in ``like``'s key order."""
    out = {}
    for k, ref in like.items():
        if isinstance(ref, dict):
            sub = merge(a.get(k, {}), b.get(k, {}), ref)
            if sub or k in a or k in b:
                out[k] = sub
        elif k in a:
            out[k] = a[k]
        elif k in b:
            out[k] = b[k]
    return out
