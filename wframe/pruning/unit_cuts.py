"""The arrays of a model with units removed, cut from the original's on the host.

For every layer that loses units (:mod:`wframe.pruning.unit_graph` says which and what reads
them) this cuts its own output axis (a Dense's columns and bias, a Conv's filters, unit ``j`` of
every gate block of a recurrent layer's ``W_x``, ``W_h`` and biases plus ``W_h``'s row ``j``, an
attention head's slices of the four projections), the matching input rows of every reader (a
Flatten in between repeats the channel at every position: channels-last, so feature
``p * channels + c``), a BatchNorm's params and moving statistics on the way, and the pruning
masks the same way.

**Dead units fold.** A removed Dense/Conv unit whose incoming weights are all zero (a masked
unit) still emits a constant, ``activation(b)``, which the layers on the way (BatchNorm,
Activation, pooling) turn into another constant. Where the reader adds that constant's
contribution in a way a bias can hold (a Dense, a ``"valid"`` Conv, a recurrent layer's input
side, an attention projection, each with a bias), it is added to the reader's bias, so the
smaller model equals the masked one. Elsewhere (a ``"same"``/``"causal"`` Conv, whose borders
see the padding, or a reader without bias) the unit is removed like any other: its output
counts as zero.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from wframe import activations, saving
from wframe.backends import to_numpy, use_backend
from wframe.layers import Activation, BatchNorm, Conv1D, Conv2D, Dense, Layer, MultiHeadAttention
from wframe.pruning.unit_graph import RECURRENT, Cut, UnitLayer
from wframe.tree import flatten, tree_map

#: The projections of an attention layer, and the axis of its heads in each kernel.
PROJECTIONS = (("query", 1), ("key", 1), ("value", 1), ("output", 0))


def unit_params(layer: Layer) -> list[tuple[str, int, int]]:
    """``(param name, unit axis, gate blocks)`` of the kernels that feed ``layer``'s units:
    what scores a unit (its bias aside)."""
    if isinstance(layer, RECURRENT):
        return [("W_x", -1, layer.gates), ("W_h", -1, layer.gates)]
    if isinstance(layer, MultiHeadAttention):
        return [(f"{proj}/W", axis, 1) for proj, axis in PROJECTIONS]
    return [("W", -1, 1)]


def per_unit(a: np.ndarray, axis: int, gates: int, units: int) -> np.ndarray:
    """``a``'s entries as one row per unit, (units, rest): the unit axis first, and for a
    gated axis (gates * units) entry ``j`` of every gate block in unit ``j``'s row."""
    a = np.moveaxis(a, axis, -1)
    a = a.reshape(-1, gates, units)
    return np.moveaxis(a, 2, 0).reshape(units, -1)


def gated(kept: np.ndarray, units: int, gates: int) -> np.ndarray:
    """The indices of the kept units in a gated axis (block ``k`` holds ``k * units + j``)."""
    return np.concatenate([k * units + kept for k in range(gates)])


def shrink(model: Any, plans: dict[str, UnitLayer], keep: dict[str, np.ndarray]) -> Any:
    """A new model like ``model`` without the units ``keep`` leaves out (``keep``: the kept
    indices per layer of ``plans``), its arrays cut to match (see the module)."""
    flat = {n: np.array(to_numpy(a)) for n, a in flatten(model.params)}
    state = {n: np.array(to_numpy(a)) for n, a in flatten(model.state)}
    masks = None
    if model.masks is not None:
        masks = {n: np.array(to_numpy(a)) for n, a in model.masks.items()}
    fields: dict[str, dict[str, Any]] = {}
    # from the original arrays, before any cut: a unit is dead when it is in the original
    constants = {name: _constants(model, plans[name], flat, masks) for name in keep}
    for name, kept in keep.items():
        plan = plans[name]
        keeps = np.zeros(plan.units, bool)
        keeps[kept] = True
        if keeps.all():
            continue
        const, dead = constants[name]
        for cut in plan.cuts:
            _cut_reader(model, cut, keeps, const, dead & ~keeps, (flat, state, masks), fields)
        _cut_own(plan.layer, kept, plan.units, flat, masks)
        fields.setdefault(name, {})[_size_field(plan.layer)] = len(kept)
    return _rebuilt(model, fields, flat, state, masks)


# ----------------------------------------------------------------------------- constants
def _constants(model: Any, plan: UnitLayer, flat: dict, masks: dict | None):
    """``(what each unit emits when its incoming weights are zero, which units have only zero
    incoming weights)``; ``(None, none)`` for the layers whose units never fold (recurrent
    units carry a state that changes over time; heads are cut from the output kernel)."""
    layer, units = plan.layer, plan.units
    if not isinstance(layer, (Dense, Conv2D, Conv1D)):
        return None, np.zeros(units, bool)
    W = flat[f"{layer.name}/W"]
    if masks is not None and f"{layer.name}/W" in masks:
        W = np.where(masks[f"{layer.name}/W"] != 0, W, 0)
    dead = ~per_unit(W, -1, 1, units).any(axis=1)
    b = flat.get(f"{layer.name}/b", np.zeros(units, W.dtype))
    y = activations.get(layer.activation, layer.label)(b[None, :])[0]  # on the host
    return np.asarray(y, np.float64)[0], dead


def _through(model: Any, path: tuple, vectors: tuple) -> tuple:
    """``(kept, folded, constant)`` per feature carried along ``path``: a BatchNorm or an
    Activation maps the constants; after a Flatten the vectors are repeated per position once
    a feature count shows how many positions there are (:func:`_expand`)."""
    keep, fold, const = vectors
    for layer in path:
        if isinstance(layer, BatchNorm):
            n = model.state[layer.name]["mean"].shape[0]
            keep, fold, const = (_expand(v, n) for v in (keep, fold, const))
        if const is not None and isinstance(layer, (BatchNorm, Activation)):
            # NumPy arrays: the layer runs on the host (no compilation for one row)
            params = tree_map(to_numpy, model.params.get(layer.name, {}))
            state = tree_map(to_numpy, model.state.get(layer.name, {}))
            y = layer.apply(params, state, const[None, :].astype(model.dtype), train=False)[0]
            const = np.asarray(y, np.float64)[0]
    return keep, fold, const


def _expand(v: np.ndarray | None, n: int) -> np.ndarray | None:
    """``v`` over ``n`` features: as is, or repeated per position after a Flatten (channels
    last: feature ``p * channels + c`` is channel ``c``)."""
    if v is None or len(v) == n:
        return v
    if n % len(v):
        raise RuntimeError(f"prune_units: cannot match {len(v)} units to {n} features")
    return np.tile(v, n // len(v))


# ----------------------------------------------------------------------------- cutting
def _cut_reader(model, cut: Cut, keeps, const, fold, arrays, fields) -> None:
    """Cut the rows of ``cut.layer`` that read removed units (after folding the dead ones)."""
    flat, state, masks = arrays
    keep, fold, const = _through(model, cut.path, (keeps, fold, const))
    name = cut.layer.name
    if cut.slot == "norm":
        rows = np.flatnonzero(_expand(keep, state[f"{name}/mean"].shape[0]))
        for key in ("gamma", "beta"):
            _take(flat, masks, f"{name}/{key}", rows, 0)
        for key in ("mean", "var"):
            _take(state, None, f"{name}/{key}", rows, 0)
        return
    param, axis = _rows_of(cut.layer, cut.slot)
    n = flat[param].shape[axis]
    keep, fold, const = (_expand(v, n) for v in (keep, fold, const))
    if const is not None and fold.any():
        _fold(cut.layer, cut.slot, flat, param, axis, fold, const)
    _take(flat, masks, param, np.flatnonzero(keep), axis)
    if isinstance(cut.layer, MultiHeadAttention):  # its output keeps the query's old size
        fields.setdefault(name, {})["output_shape"] = flat[f"{name}/output/W"].shape[-1]


def _rows_of(layer: Layer, slot: str) -> tuple[str, int]:
    """The flat name of the kernel whose input rows ``slot`` cuts, and their axis."""
    if isinstance(layer, MultiHeadAttention):
        return f"{layer.name}/{slot}/W", 0
    if isinstance(layer, RECURRENT):
        return f"{layer.name}/W_x", 0
    if isinstance(layer, Conv2D):
        return f"{layer.name}/W", 2  # (kh, kw, in, out)
    return f"{layer.name}/W", 1 if isinstance(layer, Conv1D) else 0


def _fold(layer, slot, flat, param, axis, rows, const) -> None:
    """Add the constant the removed dead ``rows`` feed ``layer`` to its bias, where a bias
    holds it exactly (see the module)."""
    bias = f"{layer.name}/{slot}/b" if isinstance(layer, MultiHeadAttention) else f"{layer.name}/b"
    if bias not in flat or getattr(layer, "padding", "valid") != "valid":
        return
    W = np.moveaxis(np.compress(rows, flat[param].astype(np.float64), axis=axis), axis, 0)
    shape = flat[bias].shape
    add = np.tensordot(const[rows], W, 1).reshape(-1, *shape).sum(axis=0)  # over the taps
    flat[bias] = (flat[bias] + add).astype(flat[bias].dtype)


def _cut_own(layer: Layer, kept: np.ndarray, units: int, flat: dict, masks) -> None:
    """Keep only the units ``kept`` of ``layer``'s own output."""
    name = layer.name
    if isinstance(layer, MultiHeadAttention):
        for proj, axis in PROJECTIONS:
            _take(flat, masks, f"{name}/{proj}/W", kept, axis)
            if proj != "output":
                _take(flat, masks, f"{name}/{proj}/b", kept, 0)
    elif isinstance(layer, RECURRENT):
        cols = gated(kept, units, layer.gates)
        _take(flat, masks, f"{name}/W_x", cols, -1)
        _take(flat, masks, f"{name}/W_h", kept, 0)  # the removed units' own feedback
        _take(flat, masks, f"{name}/W_h", cols, -1)
        for bias in ("b", "b_h"):
            _take(flat, masks, f"{name}/{bias}", cols, 0)
    else:
        _take(flat, masks, f"{name}/W", kept, -1)
        _take(flat, masks, f"{name}/b", kept, 0)


def _take(flat: dict, masks: dict | None, name: str, idx: np.ndarray, axis: int) -> None:
    for tree in (flat, masks):
        if tree is not None and name in tree:
            tree[name] = np.take(tree[name], idx, axis=axis)


def _size_field(layer: Layer) -> str:
    if isinstance(layer, MultiHeadAttention):
        return "num_heads"
    return "filters" if isinstance(layer, (Conv2D, Conv1D)) else "units"


# ----------------------------------------------------------------------------- the new model
def _rebuilt(model: Any, fields: dict, flat: dict, state: dict, masks: dict | None) -> Any:
    """A model of ``model``'s class and config, its changed layers resized by ``fields``,
    holding the cut arrays on ``model``'s backend; frozen and compiled as ``model``."""
    config = saving.model_config(model)
    entries = config["config"]["layers"]
    for i, layer in enumerate(model.layers):
        if layer.name in fields:
            entries[i] = saving.layer_config(dataclasses.replace(layer, **fields[layer.name]))
    backend = model.backend
    with use_backend(backend):
        new = saving.model_from_config(config)

    def moved(tree: dict) -> dict:
        return {n: backend.asarray(a, dtype=str(a.dtype)) for n, a in tree.items()}

    new.params = _nest(moved(flat), model.params)
    new.state = _nest(moved(state), model.state)
    if masks is not None:
        new.masks = moved(masks)
    if model.frozen:
        new.freeze(sorted(model.frozen))
    if model.optimizer is not None:
        optimizer = model.optimizer_name or model.optimizer
        new.compile(optimizer=optimizer, loss=model.loss, metrics=model.compiled_metrics)
    return new


def _nest(flat: dict[str, Any], like: dict, prefix: str = "") -> dict:
    """``flat`` (``{"dense_0/W": a}``) nested as ``like`` (``{"dense_0": {"W": ...}}``)."""
    return {
        k: _nest(flat, v, f"{prefix}{k}/") if isinstance(v, dict) else flat[f"{prefix}{k}"]
        for k, v in like.items()
    }
