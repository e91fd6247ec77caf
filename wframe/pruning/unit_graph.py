"""Which layers of a model can lose whole units, and what else reads those units.

A *unit* is an output feature of a :class:`~wframe.layers.Dense`, a filter of a
:class:`~wframe.layers.Conv2D`/:class:`~wframe.layers.Conv1D`, a hidden unit of a
:class:`~wframe.layers.SimpleRNN`/:class:`~wframe.layers.LSTM`/:class:`~wframe.layers.GRU`
(``j`` of every gate block) or a head of a :class:`~wframe.layers.MultiHeadAttention`.
:func:`unit_layers` follows each such layer's output through the layers that pass features
through one by one (Dropout, an elementwise Activation, pooling, Flatten, BatchNorm over the
last axis) to the layers that *read* them (the next Dense, Conv, recurrent layer or attention
projection), whose input rows can then be cut. A layer whose units reach anything else (a
merge such as ``Add``/``Concatenate``, a LayerNorm, whose statistics over the features would
change, a Reshape, a nested model, a shared layer, the model's output) is left alone, and the
reason is reported. A head removal changes nothing downstream (the attention's output keeps its
size), so attention layers need no consumer.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple

from wframe.layers import (
    GRU,
    LSTM,
    Activation,
    AvgPool1D,
    AvgPool2D,
    BatchNorm,
    Conv1D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool1D,
    GlobalAvgPool2D,
    GlobalMaxPool1D,
    GlobalMaxPool2D,
    Layer,
    MaxPool1D,
    MaxPool2D,
    MultiHeadAttention,
    SimpleRNN,
)
from wframe.layers.combinators import Sequential as Chain
from wframe.layers.graph import Graph

RECURRENT = (SimpleRNN, LSTM, GRU)
#: Layers whose input rows (the last axis of what they read) can be cut.
READERS = (Dense, Conv2D, Conv1D, *RECURRENT)
#: Layers that carry each feature on its own (or only move it, as Flatten), so a removed unit
#: stays one feature (or one feature per position) up to the reader.
PASSING = (
    Dropout,
    Flatten,
    MaxPool2D,
    AvgPool2D,
    GlobalAvgPool2D,
    GlobalMaxPool2D,
    MaxPool1D,
    AvgPool1D,
    GlobalAvgPool1D,
    GlobalMaxPool1D,
)
#: Activations that mix the features (removing one changes the others).
MIXING = frozenset({"softmax"})
#: The attention inputs, by position in a call ``mha(query, value, key)``.
SLOTS = ("query", "value", "key")


class Cut(NamedTuple):
    """One reader of a layer's units: the reader, what is cut (``"rows"``: the input axis of
    its kernel; ``"query"``/``"key"``/``"value"``: that projection's input rows; ``"norm"``: a
    BatchNorm's params and statistics) and the passing layers between the two, in order."""

    layer: Layer
    slot: str
    path: tuple[Layer, ...]


class UnitLayer(NamedTuple):
    """A layer that can lose units: the layer, its number of units (heads for attention) and
    every reader its units reach."""

    layer: Layer
    units: int
    cuts: tuple[Cut, ...]


class _View(NamedTuple):
    """A chain or a graph as calls: per node ``(layer, inputs, multi, output value)``, each
    input a ``(value, index)`` pair (``index``: the entry read of a tuple value, or ``None``)."""

    nodes: list[tuple[Layer, tuple, bool, int]]
    readers: dict[int, list[tuple[int, int]]]  # value -> [(node, position among its inputs)]
    outputs: frozenset[int]
    calls: Counter


def check_model(model: Any, what: str) -> None:
    """Raise unless ``model`` is a built wframe chain or graph model."""
    if not isinstance(model, (Chain, Graph)) or not hasattr(type(model), "params"):
        raise TypeError(
            f"{what} takes a wframe model (wf.Sequential or wf.Model), got {type(model).__name__}"
        )
    if not model.built:
        raise RuntimeError(
            f"{what}: the model has no params yet; build it first (model.build((None, "
            "features))) or fit it on data"
        )


def units_of(layer: Layer) -> int | None:
    """The number of units ``layer`` could lose (``None``: it has no units)."""
    if isinstance(layer, (Dense, *RECURRENT)):
        return layer.units
    if isinstance(layer, (Conv2D, Conv1D)):
        return layer.filters
    if isinstance(layer, MultiHeadAttention):
        return layer.num_heads
    return None


def unit_layers(model: Any) -> dict[str, UnitLayer | str]:
    """Every layer of ``model`` that has units: a :class:`UnitLayer` where its units can be
    removed, else the reason why not (a sentence)."""
    view = _view(model)
    out: dict[str, UnitLayer | str] = {}
    for layer, _, multi, value in view.nodes:
        units = units_of(layer)
        if units is None or layer.name in out:
            continue
        out[layer.name] = _plan(view, layer, units, multi, value)
    return out


def _plan(view: _View, layer: Layer, units: int, multi: bool, value: int) -> UnitLayer | str:
    if view.calls[layer.name] > 1:
        return "it is called more than once (a shared layer)"
    if value in view.outputs:
        return "it is an output layer"
    if units < 2:
        return "it has a single unit"
    if isinstance(layer, MultiHeadAttention):
        return UnitLayer(layer, units, ())  # its output keeps its size
    if multi:
        return "it is called on several inputs"
    if _mixes(getattr(layer, "activation", None)):
        return f"its activation {layer.activation!r} mixes its units"
    cuts: list[Cut] = []
    reason = _follow(view, value, (), cuts)
    return reason if reason is not None else UnitLayer(layer, units, tuple(cuts))


def _follow(view: _View, value: int, path: tuple, cuts: list[Cut]) -> str | None:
    """Add the readers of ``value`` (reached through ``path``) to ``cuts``; the reason the
    units cannot be removed, or ``None``."""
    if value in view.outputs:
        return "its units reach the model's output"
    for node, position in view.readers.get(value, ()):
        layer, inputs, multi, out = view.nodes[node]
        if inputs[position][1] is not None:
            return f"{layer.label} reads one entry of its output"
        if view.calls[layer.name] > 1:
            return f"{layer.label}, which reads its units, is called more than once"
        if isinstance(layer, MultiHeadAttention):
            if position >= len(SLOTS):
                return f"{layer.label} reads its units as an attention mask"
            # One input (a chain) is self-attention: it feeds all three projections.
            slots = SLOTS[position : position + 1] if multi else SLOTS
            cuts.extend(Cut(layer, slot, path) for slot in slots)
            continue
        if multi:
            return (
                f"{layer.label} reads its units together with other inputs: cannot be cut to match"
            )
        if isinstance(layer, READERS):
            cuts.append(Cut(layer, "rows", path))
            continue
        if isinstance(layer, BatchNorm) and layer.axis == -1:
            cuts.append(Cut(layer, "norm", path))
        elif not _passes(layer):
            return f"{layer.label} reads its units and cannot be cut to match"
        reason = _follow(view, out, (*path, layer), cuts)
        if reason is not None:
            return reason
    return None


def _passes(layer: Layer) -> bool:
    if isinstance(layer, Activation):
        return isinstance(layer.activation, str) and not _mixes(layer.activation)
    return isinstance(layer, PASSING)


def _mixes(activation: Any) -> bool:
    return isinstance(activation, str) and activation.lower() in MIXING


def _view(model: Any) -> _View:
    if isinstance(model, Graph):
        by_name = {layer.name: layer for layer in model.layers}
        first = len(model.inputs)
        nodes = [
            (
                by_name[node.layer],
                tuple((r.value, r.index) for r in node.inputs),
                node.multi,
                first + k,
            )
            for k, node in enumerate(model.nodes)
        ]
        outputs = frozenset(r.value for r in model.outputs)
    else:
        nodes = [(layer, ((k, None),), False, k + 1) for k, layer in enumerate(model.layers)]
        outputs = frozenset({len(nodes)})
    readers: dict[int, list[tuple[int, int]]] = {}
    for k, (_, inputs, _, _) in enumerate(nodes):
        for position, (value, _) in enumerate(inputs):
            readers.setdefault(value, []).append((k, position))
    calls = Counter(layer.name for layer, _, _, _ in nodes)
    return _View(nodes, readers, outputs, calls)
