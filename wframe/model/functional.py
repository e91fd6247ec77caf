"""``wf.Model(inputs, outputs)``: a trainable graph built from symbolic tensors.

``x = wf.Input(shape=(8,)); y = Dense(4)(x); model = wf.Model(x, y)`` reads the layer calls
between the inputs and the outputs into a :class:`~wframe.layers.graph.Graph` (only the calls
the outputs depend on), names its layers as a chain does (``dense_0``, ... per kind, or the
names given) and builds it at once: the inputs give every shape.
"""

from __future__ import annotations

from typing import Any

from wframe import saving
from wframe.layers import registry
from wframe.layers.combinators import name_layers
from wframe.layers.graph import Graph
from wframe.layers.symbolic import SymbolicTensor
from wframe.model.base import Model


class Functional(Model, Graph):
    """A model whose layers form a graph: several inputs and outputs, shared layers, merges.

    Made by ``wf.Model(inputs, outputs)``; :class:`~wframe.Model`'s whole API applies, with
    ``x`` (and ``y``) given as one array, a list in the order of ``inputs`` (``outputs``), or a
    dict by input (output) name.

    Args:
      inputs: a ``wf.Input`` tensor, a list of them, or a dict ``{name: tensor}``.
      outputs: a tensor computed from them, a list, or a dict ``{name: tensor}`` (the names
        then name the outputs in losses, logs and ``predict``'s dict).
      name: the model's name when it is nested inside another.
      seed, dtype: as for :class:`wframe.Sequential`.
    """

    def __init__(self, inputs, outputs, *, name=None, seed: int = 0, dtype: Any = "float32"):
        fields, kinds = _trace(inputs, outputs)
        Graph.__init__(self, **fields, name=name)
        Model.__init__(self, seed=seed, dtype=dtype)
        self.input_kind, self.output_kind = kinds
        self.build(self.declared_shape())

    def build_shape(self, input_shape: Any) -> Any:
        shapes = self._input_shapes(input_shape)
        return shapes if len(shapes) > 1 else shapes[0]

    def declared_shape(self) -> Any:
        """The input shape the graph's inputs declare (a tuple of them for several)."""
        shapes = tuple(spec.shape for spec in self.inputs)
        return shapes if len(shapes) > 1 else shapes[0]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    @property
    def input_dtypes(self) -> tuple[str | None, ...]:
        return tuple(None if s.dtype.startswith("float") else s.dtype for s in self.inputs)

    def format_outputs(self, y: Any) -> Any:
        if self.output_kind == "single":
            return y
        ys = y if len(self.outputs) > 1 else (y,)
        if self.output_kind == "dict":
            return dict(zip(self.output_names, ys, strict=True))
        return list(ys)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(input_kind=self.input_kind, output_kind=self.output_kind)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Functional:
        config = dict(config)
        kinds = config.pop("input_kind", "list"), config.pop("output_kind", "list")
        seed, dtype = config.pop("seed", 0), config.pop("dtype", "float32")
        model = cls.__new__(cls)
        Graph.__init__(model, **saving.fields_from_config(Graph, config, "wframe.Model"))
        Model.__init__(model, seed=seed, dtype=dtype)
        model.input_kind, model.output_kind = kinds
        model.build(model.declared_shape())
        return model


registry.register(Functional, name="wframe.Model")


def _structure(value: Any, what: str) -> tuple[str, list[tuple[str | None, Any]]]:
    """``(kind, [(name or None, tensor)])`` of one tensor, a list/tuple or a dict."""
    if isinstance(value, dict):
        items = list(value.items())
        kind = "dict"
    elif isinstance(value, (list, tuple)):
        items, kind = [(None, v) for v in value], "list"
    else:
        items, kind = [(None, value)], "single"
    if not items:
        raise ValueError(f"wf.Model: {what} is empty; pass at least one tensor")
    for key, t in items:
        if not isinstance(t, SymbolicTensor):
            where = f"{what}[{key!r}]" if key is not None else what
            raise TypeError(
                f"wf.Model: {where} must be symbolic tensors (from wf.Input and layer calls on "
                f"them), got {type(t).__name__}"
            )
    return kind, items


def _calls(outputs: list[SymbolicTensor], inputs: list[SymbolicTensor]) -> list:
    """The calls the outputs depend on, in the order they were made (a topological order);
    a ``ValueError`` for an input the outputs reach that is not in ``inputs``."""
    known = {id(t) for t in inputs}
    seen, calls, stack = set(), [], list(outputs)
    while stack:
        t = stack.pop()
        if t.call is None:
            if id(t) not in known:
                raise ValueError(
                    f"wf.Model: the outputs depend on {t!r}, which is not among the model's "
                    "inputs (a tensor of another graph?); add it to inputs"
                )
            continue
        if id(t.call) in seen:
            continue
        seen.add(id(t.call))
        calls.append((t.serial, t.call))
        stack.extend(t.call.tensors)
    return [c for _, c in sorted(calls, key=lambda sc: sc[0])]


def _trace(inputs: Any, outputs: Any) -> tuple[dict[str, Any], tuple[str, str]]:
    """The :class:`Graph` fields between ``inputs`` and ``outputs``, and their kinds."""
    in_kind, in_items = _structure(inputs, "inputs")
    out_kind, out_items = _structure(outputs, "outputs")
    in_tensors = [t for _, t in in_items]
    for t in in_tensors:
        if t.call is not None:
            raise ValueError(
                f"wf.Model: inputs must be wf.Input tensors, got the output of {t.call.layer.label}"
            )
    if len({id(t) for t in in_tensors}) != len(in_tensors):
        raise ValueError("wf.Model: the same wf.Input is given twice in inputs")
    calls = _calls([t for _, t in out_items], in_tensors)
    used = {id(t) for c in calls for t in c.tensors} | {id(t) for _, t in out_items}
    for i, t in enumerate(in_tensors):
        if id(t) not in used:
            raise ValueError(
                f"wf.Model: input {t.name or i!r} is never connected to the outputs; remove it "
                "from inputs or use it"
            )
    layers = _unique_layers(calls)
    named = dict(zip(map(id, layers), name_layers("wf.Model", layers), strict=True))
    value = {id(t): i for i, t in enumerate(in_tensors)}
    nodes = []
    for k, call in enumerate(calls):
        refs = tuple(_ref(value, t) for t in call.tensors)
        options = tuple(sorted(call.options.items()))
        nodes.append((named[id(call.layer)].name, refs, isinstance(call.inputs, tuple), options))
        value[id(call)] = len(in_tensors) + k
    input_specs = tuple(
        (key or t.name or f"input_{i}", t.shape, t.dtype) for i, (key, t) in enumerate(in_items)
    )
    out_refs = tuple(_ref(value, t) for _, t in out_items)
    names = [key or (named[id(t.call.layer)].name if t.call else t.name) for key, t in out_items]
    fields = {
        "inputs": input_specs,
        "layers": tuple(named[id(layer)] for layer in layers),
        "nodes": tuple(nodes),
        "outputs": out_refs,
        "output_names": _distinct(names),
    }
    return fields, (in_kind, out_kind)


def _ref(value: dict, t: SymbolicTensor) -> tuple[int, int | None]:
    return (value[id(t)], None) if t.call is None else (value[id(t.call)], t.index)


def _unique_layers(calls: list) -> list:
    seen, out = set(), []
    for call in calls:
        if id(call.layer) not in seen:
            seen.add(id(call.layer))
            out.append(call.layer)
    return out


def _distinct(names: list[str]) -> tuple[str, ...]:
    """Output names made distinct as Keras does (``dense_1``, ``dense_1_1``)."""
    out: list[str] = []
    for name in names:
        candidate, i = name, 1
        while candidate in out:
            candidate, i = f"{name}_{i}", i + 1
        out.append(candidate)
    return tuple(out)
