"""Structured pruning: remove whole units and get a smaller dense model that runs faster and
saves smaller files, rather than zeros in a model of the same size.

:func:`prune_units` scores every unit (a Dense output, a Conv filter, a recurrent unit, an
attention head), picks the lowest ``fraction`` per layer or over the whole model, and returns a
new model of the same class whose layers have fewer ``units``/``filters``/``num_heads`` and
whose readers (the next Dense/Conv/recurrent layer, the attention projections, a BatchNorm's
params and statistics, the rows a Flatten spreads a channel over) are cut to match. It is
:func:`select_units` (which units stay) then :func:`remove_units` (the smaller model), each
usable alone; :func:`prunable_units` says which layers can lose units and why others cannot.

**What the smaller model computes.** Exactly what the original computes when the removed units'
*outgoing* weights are zero (the rows of the readers that take them, a recurrent layer's own
feedback rows ``W_h[j]``, a head's slice of the attention output kernel): removing a unit is
masking what it sends. A removed Dense/Conv unit whose *incoming* weights are all zero (a masked
unit) keeps what it sent, a constant folded into the reader's bias where a bias holds it exactly
(:mod:`wframe.pruning.unit_cuts`), so a pruned model's fully masked units disappear without
changing its outputs. Units whose output reaches a merge (``Add``, ``Concatenate``, ...), a
LayerNorm, a Reshape, a nested model, a shared layer or the model's output are never removed.
"""

from __future__ import annotations

import fnmatch
import math
import operator
from collections.abc import Mapping
from typing import Any

import numpy as np

from wframe.backends import to_numpy
from wframe.pruning.masks import Selector, check_fraction, check_scope, check_selector
from wframe.pruning.unit_cuts import per_unit, shrink, unit_params
from wframe.pruning.unit_graph import UnitLayer, check_model, unit_layers
from wframe.tree import flatten

CRITERIA = ("l2", "l1", "taylor")


def prune_units(
    model: Any,
    fraction: float,
    scope: str = "layer",
    criterion: str = "l2",
    *,
    include: Selector = None,
    exclude: Selector = None,
    data: tuple[Any, Any] | None = None,
) -> Any:
    """A new, smaller dense model: ``model`` without the lowest-scoring ``fraction`` of its
    units (see the module for which units and what the result computes).

    Args:
      model: a built ``wf.Sequential`` or ``wf.Model`` (graph); it is not changed.
      fraction: in [0, 1): the share of the selected units to remove.
      scope: ``"layer"``: ``fraction`` of each layer's units (rounded half up, at least one
        unit kept); ``"global"``: ``fraction`` of all the selected units, ranked by their
        score divided by the mean score of their layer (so layers of different fan-in
        compare), each layer keeping at least one.
      criterion: ``"l2"`` (the norm of the unit's incoming kernel weights: its column,
        filter, gate columns of ``W_x`` and ``W_h``, or a head's slices of the four attention
        kernels), ``"l1"`` (their sum of magnitudes) or ``"taylor"`` (``|w * dL/dw|`` summed
        over the same weights, on ``data``). Masked weights count as zero, so a unit whose
        weights are all masked scores 0 and goes first.
      include, exclude: which layers (by name): a glob such as ``"dense_*"``, a list of
        them or a callable ``name -> bool``; by default every layer that can lose units.
      data: ``(x, y)`` for ``criterion="taylor"``: one batch, through ``model.value_and_grad``
        with the compiled loss.

    Returns:
      A new model of ``model``'s class (built on its backend, with its pruning masks cut to
      match, its frozen params frozen and compiled with its optimizer, loss and metrics; the
      optimizer state starts afresh) that trains with ``fit`` and saves with ``save_model``.

    Raises:
      ValueError: a bad ``fraction``/``scope``/``criterion``/``data``, a glob that names no
        layer with units, an included layer that cannot lose units (with the reason), or no
        layer left to prune.
      TypeError: ``model`` is not a wframe model.
      RuntimeError: ``model`` is not built.
    """
    keep = select_units(
        model, fraction, scope, criterion, include=include, exclude=exclude, data=data
    )
    return remove_units(model, keep)


def select_units(
    model: Any,
    fraction: float,
    scope: str = "layer",
    criterion: str = "l2",
    *,
    include: Selector = None,
    exclude: Selector = None,
    data: tuple[Any, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Which units :func:`prune_units` keeps: ``{layer name: sorted kept unit indices}`` for
    every selected layer (errors as :func:`prune_units`).

    Args:
      model, fraction, scope, criterion, include, exclude, data: as for :func:`prune_units`;
        ``model`` is only read.
    """
    what = "prune_units"
    check_model(model, what)
    fraction = check_fraction(fraction, f"{what}: fraction")
    check_scope(scope, what)
    if criterion not in CRITERIA:
        raise ValueError(f"{what}: criterion must be one of {CRITERIA}, got {criterion!r}")
    if criterion == "taylor" and data is None:
        raise ValueError(
            f"{what}: criterion='taylor' needs data=(x, y), a batch to take the gradients on"
        )
    if criterion != "taylor" and data is not None:
        raise ValueError(
            f"{what}: data is used only by criterion='taylor', got criterion={criterion!r}; "
            "leave data out or pass criterion='taylor'"
        )
    plans = _chosen(model, include, exclude, what)
    scores = unit_scores(model, plans, criterion, data)
    if scope == "layer":
        return {name: _lowest_out(s, _count(fraction, len(s))) for name, s in scores.items()}
    return _global(scores, fraction)


def remove_units(model: Any, keep: Mapping[str, Any]) -> Any:
    """A new model like ``model`` keeping, in each layer named in ``keep``, only the units
    whose indices are listed (their order does not matter); other layers keep theirs.

    Args:
      model: a built ``wf.Sequential`` or ``wf.Model``; it is not changed.
      keep: ``{layer name: indices}``, as :func:`select_units` returns.

    Returns:
      The smaller model, as :func:`prune_units` returns it.

    Raises:
      ValueError: a name that is no layer with units or one that cannot lose them (with the
        reason), indices that repeat, fall outside the layer's units or keep none of them.
    """
    what = "remove_units"
    check_model(model, what)
    if not isinstance(keep, Mapping):
        raise TypeError(
            f"{what}: keep must be a dict {{layer name: kept unit indices}}, got "
            f"{type(keep).__name__}"
        )
    plans = unit_layers(model)
    checked = {}
    for name, idx in keep.items():
        plan = plans.get(name)
        if plan is None:
            can = [n for n, p in plans.items() if isinstance(p, UnitLayer)]
            raise ValueError(
                f"{what}: {name!r} is no layer with units; these can lose units: {can}"
            )
        if not isinstance(plan, UnitLayer):
            raise ValueError(f"{what}: layer {name!r} cannot lose units: {plan}")
        checked[name] = _indices(idx, plan.units, f"{what}: keep[{name!r}]")
    return shrink(model, {n: plans[n] for n in checked}, checked)


def prunable_units(model: Any) -> dict[str, int | str]:
    """Every layer of ``model`` with units: its number of units (heads) where they can be
    removed, else the reason why not, e.g. ``"its units reach the model's output"``.

    Args:
      model: a built ``wf.Sequential`` or ``wf.Model`` (graph).
    """
    check_model(model, "prunable_units")
    return {n: p.units if isinstance(p, UnitLayer) else p for n, p in unit_layers(model).items()}


# ----------------------------------------------------------------------------- scores
def unit_scores(
    model: Any, plans: dict[str, UnitLayer], criterion: str, data: Any = None
) -> dict[str, np.ndarray]:
    """``{layer name: score per unit}`` under ``criterion`` (see :func:`prune_units`)."""
    flat = dict(flatten(model.params))
    masks = model.masks or {}
    grads = _gradients(model, plans, data) if criterion == "taylor" else {}
    scores = {}
    for name, plan in plans.items():
        total = np.zeros(plan.units)
        for param, axis, gates in unit_params(plan.layer):
            full = f"{name}/{param}"
            w = np.asarray(to_numpy(flat[full]), np.float64)
            if full in masks:
                w = np.where(np.asarray(to_numpy(masks[full])) != 0, w, 0.0)
            if criterion == "taylor":
                w = w * grads[full]
            rows = per_unit(w, axis, gates, plan.units)
            total += np.sum(rows * rows, axis=1) if criterion == "l2" else np.sum(abs(rows), axis=1)
        scores[name] = np.sqrt(total) if criterion == "l2" else total
    return scores


def _gradients(model: Any, plans: dict[str, UnitLayer], data: Any) -> dict[str, np.ndarray]:
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(
            f"prune_units: data must be a pair (x, y), got {type(data).__name__}"
            + (f" of length {len(data)}" if isinstance(data, (tuple, list)) else "")
        )
    _, grads = model.value_and_grad(*data)
    out = {n: np.asarray(to_numpy(g), np.float64) for n, g in flatten(grads)}
    for name, plan in plans.items():
        for param, _, _ in unit_params(plan.layer):
            if f"{name}/{param}" not in out:
                raise ValueError(
                    f"prune_units: criterion='taylor' needs the gradient of '{name}/{param}', "
                    f"which is frozen; exclude layer {name!r} or unfreeze it"
                )
    return out


# ----------------------------------------------------------------------------- choosing
def _chosen(model: Any, include: Selector, exclude: Selector, what: str) -> dict[str, UnitLayer]:
    """The layers to prune: those ``include`` names (all that can lose units by default)
    less those ``exclude`` names."""
    plans = unit_layers(model)
    names = list(plans)
    if include is None:
        chosen = [n for n in names if isinstance(plans[n], UnitLayer)]
    else:
        chosen = _matching(include, names, f"{what}: include")
        for name in chosen:
            if not isinstance(plans[name], UnitLayer):
                raise ValueError(f"{what}: layer {name!r} cannot lose units: {plans[name]}")
    if exclude is not None:
        dropped = _matching(exclude, names, f"{what}: exclude")
        chosen = [n for n in chosen if n not in dropped]
    if not chosen:
        reasons = "; ".join(f"{n}: {p}" for n, p in plans.items() if isinstance(p, str))
        raise ValueError(
            f"{what}: no layer to prune (include={include!r}, exclude={exclude!r})"
            + (f"; layers that cannot lose units: {reasons}" if reasons else "")
            + ("" if plans else "; the model has no Dense, Conv, recurrent or attention layer")
        )
    return {n: plans[n] for n in chosen}


def _matching(sel: Selector, names: list[str], what: str) -> list[str]:
    """The ``names`` that ``sel`` picks (a glob matching none of them is an error)."""
    sel = check_selector(sel, what)
    if callable(sel):
        return [n for n in names if sel(n)]
    for glob in sel:
        if not any(fnmatch.fnmatchcase(n, glob) for n in names):
            raise ValueError(f"{what}: {glob!r} names no layer with units; they are {names}")
    return [n for n in names if any(fnmatch.fnmatchcase(n, g) for g in sel)]


def _count(fraction: float, n: int) -> int:
    """``fraction`` of ``n`` rounded half up, leaving at least one."""
    return min(int(math.floor(fraction * n + 0.5)), n - 1)


def _lowest_out(score: np.ndarray, k: int) -> np.ndarray:
    """The indices of ``score`` less its ``k`` lowest (ties: the first go), sorted."""
    return np.sort(np.argsort(score, kind="stable")[k:])


def _global(scores: dict[str, np.ndarray], fraction: float) -> dict[str, np.ndarray]:
    """Remove ``fraction`` of all units, lowest normalized score first, one kept per layer."""
    names = list(scores)
    normed = []
    for s in scores.values():
        mean = float(np.mean(s))
        normed.append(s / mean if mean > 0 else np.zeros_like(s))
    pooled = np.concatenate(normed)
    owner = np.concatenate([np.full(len(s), i) for i, s in enumerate(normed)])
    index = np.concatenate([np.arange(len(s)) for s in normed])
    left = [len(s) for s in normed]
    goal = int(math.floor(fraction * len(pooled) + 0.5))
    removed = [set() for _ in names]
    for k in np.argsort(pooled, kind="stable"):
        if goal == 0:
            break
        if left[owner[k]] > 1:
            left[owner[k]] -= 1
            removed[owner[k]].add(int(index[k]))
            goal -= 1
    return {
        name: np.array([j for j in range(len(scores[name])) if j not in removed[i]], dtype=int)
        for i, name in enumerate(names)
    }


def _indices(idx: Any, units: int, what: str) -> np.ndarray:
    """``idx`` as sorted unique ints in [0, units), at least one, or a ValueError."""
    try:
        values = [operator.index(v) for v in np.asarray(idx).reshape(-1).tolist()]
    except TypeError:
        raise ValueError(f"{what} must be unit indices (ints), got {idx!r}") from None
    if not values:
        raise ValueError(f"{what} keeps no unit; keep at least one")
    if len(set(values)) != len(values):
        raise ValueError(f"{what} lists a unit twice: {sorted(values)}")
    bad = [v for v in values if not 0 <= v < units]
    if bad:
        raise ValueError(f"{what}: {bad} are not units of a layer of {units} (0 to {units - 1})")
    return np.array(sorted(values), dtype=int)
