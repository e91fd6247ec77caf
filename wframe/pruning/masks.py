"""Magnitude pruning's masks: :func:`prune` zeroes the smallest-magnitude weights and sets
``model.masks``; from then on every train step (``fit`` and :func:`wframe.make_train_step`)
keeps those weights at exactly zero. :func:`sparsity_report` counts the zeros,
:func:`strip_pruning` drops the masks for export and :func:`to_sparse` hands 2-D weights to
SciPy. Thresholds are picked on the host with NumPy (it runs between steps); the arrays are
updated on the model's backend.
"""

from __future__ import annotations

import fnmatch
import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from wframe.backends import array_namespace, to_numpy
from wframe.tree import flatten, map_at
from wframe.types import Array

SCOPES = ("global", "layer")
#: ``"dense_*/W"``, a list of such globs, or a callable ``name -> bool``.
Selector = str | list[str] | tuple[str, ...] | Callable[[str], bool] | None


def prune(
    model: Any,
    sparsity: float = 0.9,
    *,
    scope: str = "global",
    include: Selector = None,
    exclude: Selector = None,
    exclude_bias: bool = True,
) -> Any:
    """Zero the smallest-magnitude weights of ``model`` and keep them at zero while it trains.

    Args:
      model: a built :class:`~wframe.Sequential`.
      sparsity: the fraction in [0, 1) of the selected weights that are zero afterwards:
        exactly ``round(sparsity * n)`` of them, ties broken by position (a stable sort).
        Weights an earlier mask pruned stay pruned and count first, so a sparsity below the
        current one prunes nothing more.
      scope: ``"global"``: one threshold over all selected weights (layers end up with
        different sparsities); ``"layer"``: ``sparsity`` in each selected param.
      include, exclude: which params (flat names such as ``"dense_0/W"``): a glob
        (``fnmatch``), a list of globs or a callable ``name -> bool``. Every glob must match.
      exclude_bias: skip params with fewer than 2 dims (biases, norm scales and shifts).

    Returns:
      ``model``, its params updated, ``model.masks`` set (joined with the masks it had), and
      the optimizer moments of the pruned weights (every params-shaped dict in
      ``model.opt_state``) zeroed, so that the masked steps keep them at zero.
    """
    names = selected(model, include, exclude, exclude_bias, "prune")
    sparsity = check_fraction(sparsity, "prune: sparsity")
    check_scope(scope, "prune")
    flat = dict(flatten(model.params))
    old = model.masks or {}
    # Already-pruned weights score -1, below every magnitude: they are the first to go.
    scores = {}
    for name in names:
        score = np.abs(to_numpy(flat[name])).ravel()
        if name in old:
            score = np.where(to_numpy(old[name]).ravel() != 0, score, -1)
        scores[name] = score
    groups = [names] if scope == "global" else [[name] for name in names]
    keep = {}
    for group in groups:
        score = np.concatenate([scores[name] for name in group])
        mask = np.ones(score.shape, bool)
        mask[np.argsort(score, kind="stable")[: _count(sparsity, score.size)]] = False
        mask &= ~(score < 0)  # pruned before stays pruned (NaN weights are not "pruned")
        cuts = np.cumsum([scores[name].size for name in group])[:-1]
        for name, part in zip(group, np.split(mask, cuts), strict=True):
            keep[name] = part.reshape(tuple(flat[name].shape))
    model.masks = {**old, **keep}  # checked and moved to the backend in each param's dtype
    masks = {name: model.masks[name] for name in keep}
    model.params = map_at(model.params, {name: _zeroer(m) for name, m in masks.items()})
    if model.opt_state is not None:
        model.opt_state = _zero_moments(model.opt_state, model.params, masks)
    return model


def sparsity_report(model: Any, print_fn: Callable[[str], Any] | None = print) -> list[dict]:
    """Print a table of zeros per param and return its rows.

    Args:
      model: a built model.
      print_fn: where the table's lines go (default :func:`print`); ``None`` prints nothing.

    Returns:
      One dict per param (``name``, ``shape``, ``size``, ``nonzero``, ``sparsity``: the
      fraction of exact zeros) and a last row named ``"total"`` (``shape`` ``None``).
    """
    _built(model, "sparsity_report")
    rows = []
    for name, a in flatten(model.params):
        size, nonzero = math.prod(a.shape), int(np.count_nonzero(to_numpy(a)))
        rows.append(
            {
                "name": name,
                "shape": tuple(a.shape),
                "size": size,
                "nonzero": nonzero,
                "sparsity": 1 - nonzero / size if size else 0.0,
            }
        )
    size, nonzero = sum(r["size"] for r in rows), sum(r["nonzero"] for r in rows)
    rows.append(
        {
            "name": "total",
            "shape": None,
            "size": size,
            "nonzero": nonzero,
            "sparsity": 1 - nonzero / size if size else 0.0,
        }
    )
    if print_fn is not None:
        cells = [
            (
                r["name"],
                "" if r["shape"] is None else str(r["shape"]),
                str(r["size"]),
                str(r["nonzero"]),
                f"{r['sparsity']:.2%}",
            )
            for r in rows
        ]
        head = ("param", "shape", "size", "nonzero", "sparsity")
        widths = [max(len(c[i]) for c in [head, *cells]) for i in range(len(head))]

        def line(c):  # name and shape left-aligned, numbers right-aligned
            pairs = enumerate(zip(c, widths, strict=True))
            return "  ".join(s.ljust(w) if i < 2 else s.rjust(w) for i, (s, w) in pairs)

        rule = "-" * len(line(head))
        print_fn("\n".join([line(head), rule, *map(line, cells[:-1]), rule, line(cells[-1])]))
    return rows


def strip_pruning(model: Any) -> Any:
    """A copy of ``model`` without masks, as tfmot's ``strip_pruning`` (``model`` is unchanged).

    The copy has its own arrays (params, state, optimizer state): its pruned weights start at
    zero but are free to grow if it trains. Use it to export or fine-tune densely; keep
    training ``model`` itself to stay sparse.

    Args:
      model: a built model.
    """
    _built(model, "strip_pruning")
    out = model.copy()  # layers are immutable and shared; the arrays are copied
    out.masks = None
    return out


def to_sparse(model: Any) -> dict[str, Any]:
    """The 2-D params of ``model`` as ``scipy.sparse.csr_matrix`` on the host (needs SciPy).

    Args:
      model: a built model.
    """
    _built(model, "to_sparse")
    try:
        from scipy import sparse
    except ImportError:
        raise ImportError("to_sparse needs SciPy: pip install scipy") from None
    return {
        name: sparse.csr_matrix(to_numpy(a)) for name, a in flatten(model.params) if a.ndim == 2
    }


# --------------------------------------------------------------------------- helpers
def _zeroer(mask: Array) -> Callable[[Array], Array]:
    """``a -> a`` with zeros where ``mask`` is 0 (``where``, not a product: NaN * 0 is NaN)."""

    def zero(a: Array) -> Array:
        xp = array_namespace(a)
        return xp.where(mask != 0, a, xp.zeros_like(a))

    return zero


def _zero_moments(tree: Any, params: Any, masks: dict[str, Array]) -> Any:
    """``tree`` (an optimizer state) with the masked entries of every dict that is part of the
    ``params`` tree (optax's ``mu``, ``nu``, ``trace``, ..., also for a trainable partition or
    a :func:`~wframe.optimizers.partition` group) zeroed; everything else is kept."""
    if isinstance(tree, dict):
        leaves = dict(flatten(tree))
        # A part of the params tree (all of it, the trainable partition, a partition group)
        shaped = leaves and all(
            tuple(getattr(a, "shape", ())) == tuple(getattr(_at(params, n), "shape", (None,)))
            for n, a in leaves.items()
        )
        if not shaped:
            return {k: _zero_moments(v, params, masks) for k, v in tree.items()}
        # Entries that are not arrays of the param's shape (optax's MaskedNode) are left alone.
        fns = {
            name: _zeroer(m)
            for name, m in masks.items()
            if tuple(getattr(leaves.get(name), "shape", ())) == tuple(m.shape)
        }
        return map_at(tree, fns)
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # a NamedTuple
        return type(tree)(*(_zero_moments(v, params, masks) for v in tree))
    if isinstance(tree, (tuple, list)):
        return type(tree)(_zero_moments(v, params, masks) for v in tree)
    return tree


def _at(tree: Any, name: str) -> Any:
    for key in name.split("/"):
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _built(model: Any, what: str) -> None:
    if not getattr(model, "built", False):
        raise RuntimeError(
            f"{what}: the model has no params yet; build it first (model.build((None, "
            "features))) or fit it on data"
        )


def _count(fraction: float, n: int) -> int:
    return min(int(math.floor(fraction * n + 0.5)), n)  # round half up, not to even


def check_fraction(value: Any, what: str) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{what} must be a number in [0, 1), got {value!r}")
    return float(value)


def check_int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_scope(scope: Any, what: str) -> str:
    if scope not in SCOPES:
        raise ValueError(f"{what}: scope must be one of {SCOPES}, got {scope!r}")
    return scope


def check_selector(sel: Any, what: str) -> Callable[[str], bool] | list[str] | None:
    """``sel`` as a callable or a list of globs (checked), ``None`` for none."""
    if sel is None or callable(sel):
        return sel
    globs = [sel] if isinstance(sel, str) else sel
    if not isinstance(globs, (list, tuple)) or not all(isinstance(g, str) for g in globs):
        raise TypeError(
            f"{what} must be a glob such as 'dense_*/W', a list of globs or a callable "
            f"name -> bool, got {type(sel).__name__} {sel!r}"
        )
    return list(globs)


def _matching(sel: Any, names: list[str], what: str) -> set[str]:
    """The ``names`` that ``sel`` picks; a glob that matches none of them is an error."""
    sel = check_selector(sel, what)
    if callable(sel):
        return {name for name in names if sel(name)}
    out: set[str] = set()
    for glob in sel:
        hits = [name for name in names if fnmatch.fnmatchcase(name, glob)]
        if not hits:
            raise ValueError(f"{what}: {glob!r} matches no param; the params are {names}")
        out.update(hits)
    return out


def selected(
    model: Any, include: Selector, exclude: Selector, exclude_bias: bool, what: str
) -> list[str]:
    """The names of the params to prune, in the params' order."""
    _built(model, what)
    flat = dict(flatten(model.params))
    names = list(flat)
    chosen = set(names) if include is None else _matching(include, names, f"{what}: include")
    if exclude is not None:
        chosen -= _matching(exclude, names, f"{what}: exclude")
    if exclude_bias:
        chosen = {name for name in chosen if flat[name].ndim >= 2}
    if not chosen:
        raise ValueError(
            f"{what}: no param to prune (include={include!r}, exclude={exclude!r}, "
            f"exclude_bias={exclude_bias} skips params with fewer than 2 dims); the params are "
            f"{[f'{n} {tuple(flat[n].shape)}' for n in names]}"
        )
    return [name for name in names if name in chosen]
