"""A graph of layer calls: several inputs, several outputs, fan-out and shared layers.

The graph is data: its inputs ``(name, shape, dtype)``, its layers (named, each once), its
nodes (one call of a layer on earlier values, in a topological order) and its outputs. Values
are numbered: the inputs first, then one per node; a :class:`Ref` ``(value, index)`` names a
value, or output ``index`` of a value that is a tuple (a layer of several outputs). The forward
runs the nodes in order; the hand-written backward runs them in reverse, **adding the
gradients where a value fans out** and over the calls of a shared layer (whose params are one
entry of ``params``, by layer name, as in a chain). ``wf.Model(inputs, outputs)`` builds one
from symbolic tensors (:mod:`wframe.model.functional`); a straight line of single-input nodes
draws the same keys as the ``Sequential`` of the same layers, so both start from the same
weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from wframe.backends import array_namespace
from wframe.layers.base import Layer
from wframe.layers.combinators import accumulate, back_through
from wframe.random import fold_in

_EMPTY: dict = {}


class Ref(NamedTuple):
    """A value of the graph: ``value`` (inputs first, then one per node) and, for a value
    that is a tuple, which of its entries (``None``: the whole value)."""

    value: int
    index: int | None = None


class GraphInput(NamedTuple):
    """A graph input: its name, shape (``None`` for the batch axis) and dtype."""

    name: str
    shape: tuple
    dtype: str


class Node(NamedTuple):
    """One call: the layer's name, the values it reads (a tuple passed to the layer when
    ``multi``, else the one value) and its static keyword options as ``(name, value)`` pairs."""

    layer: str
    inputs: tuple
    multi: bool = False
    options: tuple = ()


def _is_shapes(shape: Any) -> bool:
    return isinstance(shape, (tuple, list)) and bool(shape) and isinstance(shape[0], (tuple, list))


@dataclass(frozen=True)
class Graph(Layer):
    """Layers called on each other's outputs, from ``inputs`` to ``outputs`` (see the module).

    Args:
      inputs: ``(name, shape, dtype)`` per input.
      layers: the layers, each once, with distinct names.
      nodes: ``(layer name, input refs, multi, options)`` per call, each reading only inputs
        and earlier nodes.
      outputs: the refs of the outputs.
      output_names: a name per output (how losses and logs name it).
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).
    """

    inputs: tuple = ()
    layers: tuple = ()
    nodes: tuple = ()
    outputs: tuple = ()
    output_names: tuple = ()

    selective_grads = True

    def __post_init__(self):
        inputs = tuple(GraphInput(str(n), tuple(s), str(d)) for n, s, d in self.inputs)
        nodes = tuple(
            Node(str(n), tuple(Ref(*r) for r in ins), bool(m), tuple(tuple(o) for o in opts))
            for n, ins, m, opts in self.nodes
        )
        outputs = tuple(Ref(*r) for r in self.outputs)
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "outputs", outputs)
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "output_names", tuple(str(n) for n in self.output_names))
        self._check_structure()

    def _check_structure(self) -> None:
        by_name = {}
        for layer in self.layers:
            if not isinstance(layer, Layer) or not layer.name:
                raise ValueError(f"{self.label}: layers must be named wframe Layers, got {layer!r}")
            if layer.name in by_name:
                raise ValueError(f"{self.label}: two layers are named {layer.name!r}")
            by_name[layer.name] = layer
        if not self.inputs or not self.outputs:
            raise ValueError(f"{self.label}: a graph needs at least one input and one output")
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.label}: input names {names} must be distinct")
        n_in = len(self.inputs)
        for k, node in enumerate(self.nodes):
            if node.layer not in by_name:
                raise ValueError(f"{self.label}: node {k} calls an unknown layer {node.layer!r}")
            if not node.inputs or (not node.multi and len(node.inputs) != 1):
                raise ValueError(f"{self.label}: node {k} must read one value, or several (multi)")
            for ref in node.inputs:
                if not 0 <= ref.value < n_in + k:
                    raise ValueError(
                        f"{self.label}: node {k} ({node.layer}) reads value {ref.value}, which "
                        "is not an input or an earlier node"
                    )
        for ref in self.outputs:
            if not 0 <= ref.value < n_in + len(self.nodes):
                raise ValueError(f"{self.label}: output {ref} names no value of the graph")
        if len(self.output_names) != len(self.outputs):
            raise ValueError(
                f"{self.label}: {len(self.output_names)} output names for "
                f"{len(self.outputs)} outputs"
            )
        object.__setattr__(self, "_by_name", by_name)
        # Per node, what the forward and backward read on every call, resolved once: the
        # layer, its options, and the value it reads when that is one whole value (else None).
        steps = tuple(
            (
                node.layer,
                by_name[node.layer],
                node.inputs[0].value if not node.multi and node.inputs[0].index is None else None,
                node,
                dict(node.options),
            )
            for node in self.nodes
        )
        object.__setattr__(self, "_steps", steps)
        everything = {flag: self._wanted(flag, None) for flag in (False, True)}
        object.__setattr__(self, "_wanted_all", everything)

    @property
    def uses_key(self) -> bool:
        return any(layer.uses_key for layer in self.layers)

    @property
    def input_dtype(self) -> str | None:
        dtype = self.inputs[0].dtype
        return None if dtype.startswith("float") else dtype

    def get_layer(self, name: str) -> Layer:
        """The layer called ``name``; a ``ValueError`` lists the names otherwise."""
        if name not in self._by_name:
            raise ValueError(
                f"{self.label} has no layer {name!r}; its layers are {list(self._by_name)}"
            )
        return self._by_name[name]

    def children(self):
        return tuple((layer.name, layer) for layer in self.layers)

    # ----------------------------------------------------------------- values
    def _read(self, values: list, node: Node) -> Any:
        got = tuple(_get(values, r) for r in node.inputs)
        return got if node.multi else got[0]

    def _outputs(self, values: list) -> Any:
        got = tuple(_get(values, r) for r in self.outputs)
        return got if len(got) > 1 else got[0]

    def split_inputs(self, x: Any, what: str = "x") -> tuple:
        """``x`` (one value, or a tuple of one per input) as a tuple of the inputs."""
        n = len(self.inputs)
        xs = tuple(x) if isinstance(x, (tuple, list)) and not hasattr(x, "shape") else (x,)
        if len(xs) != n:
            names = [i.name for i in self.inputs]
            raise ValueError(f"{self.label} takes {n} inputs {names}, got {len(xs)} for {what}")
        return xs

    # ----------------------------------------------------------------- layer contract
    def init(self, key, in_shape, *, dtype="float32"):
        params, state = {}, {}
        values = list(self._input_shapes(in_shape))
        for _, node, _, p, s, out in self.walk(key, in_shape, dtype):
            values.append(out)
            if p and node.layer not in params:
                params[node.layer] = p
            if s and node.layer not in state:
                state[node.layer] = s
        return params, state, self._outputs(values)

    def walk(self, key: Any, in_shape: Any, dtype: str):
        """``(k, node, input shape, params, state, output shape)`` per node, initialising each
        layer at its first call, in order (a shared layer's later calls must see its first
        shape, and give its first params and output shape)."""
        values: list = list(self._input_shapes(in_shape))
        first: dict = {}  # a layer's name -> (input shape, params, state, output shape)
        for k, node in enumerate(self.nodes):
            layer, arg = self._by_name[node.layer], self._read(values, node)
            if node.layer in first and first[node.layer][0] != arg:
                raise ValueError(
                    f"{self.label}: the shared layer {node.layer!r} is called on inputs of shape "
                    f"{first[node.layer][0]} and {arg}; a shared layer needs one shape"
                )
            if node.layer not in first:  # a shared layer's later calls draw nothing again
                first[node.layer] = (arg, *layer.init(fold_in(key, k), arg, dtype=dtype))
            _, p, s, out = first[node.layer]
            values.append(_shape(out))
            yield k, node, arg, p, s, values[-1]

    def source(self, ref: Ref) -> str:
        """How a summary names a value: the input's name or the layer that made it."""
        n_in = len(self.inputs)
        name = (
            self.inputs[ref.value].name if ref.value < n_in else self.nodes[ref.value - n_in].layer
        )
        return name if ref.index is None else f"{name}[{ref.index}]"

    def _input_shapes(self, in_shape: Any) -> tuple:
        shapes = tuple(in_shape) if _is_shapes(in_shape) else (in_shape,)
        if len(shapes) != len(self.inputs):
            raise ValueError(f"{self.label} takes {len(self.inputs)} inputs, got shapes {in_shape}")
        for spec, shape in zip(self.inputs, shapes, strict=True):
            shape = tuple(shape)
            ok = len(shape) == len(spec.shape) and all(
                d is None or s is None or d == s
                for d, s in zip(spec.shape[1:], shape[1:], strict=True)
            )
            if not ok:
                raise ValueError(
                    f"{self.label}: input {spec.name!r} has shape {spec.shape}, got {shape}"
                )
        return tuple((None, *tuple(s)[1:]) for s in shapes)

    def forward(self, params, state, x, *, train=False, key=None, vjp=True):
        values: list = list(self.split_inputs(x))
        new_state = dict(state)
        backs = []
        for k, (name, layer, src, node, options) in enumerate(self._steps):
            sub_key = fold_in(key, k) if key is not None and layer.uses_key else None
            y, s, back = layer.apply(
                params.get(name, _EMPTY),
                new_state.get(name, _EMPTY),
                values[src] if src is not None else self._read(values, node),
                train=train,
                key=sub_key,
                vjp=vjp,
                **options,
            )
            if s:
                new_state[name] = s
            values.append(y)
            backs.append(back)
        out = self._outputs(values)
        if not vjp:
            return out, new_state, None

        def backprop(dy, input_grad=True, need=None):
            return self._backward(values, backs, dy, input_grad, need, params)

        return out, new_state, backprop

    def _backward(self, values, backs, dy, input_grad, need, params):
        n_in = len(self.inputs)
        wanted = self._wanted_all[input_grad] if need is None else self._wanted(input_grad, need)
        cot: list = [None] * len(values)  # the cotangent of each value, summed over its uses
        for ref, d in zip(self.outputs, dy if len(self.outputs) > 1 else (dy,), strict=True):
            _add(cot, ref, d)
        grads: dict = {}
        steps = self._steps
        for k in range(len(steps) - 1, -1, -1):
            v = n_in + k
            if not wanted[v]:
                continue
            name, layer, src, node, _ = steps[k]
            g = cot[v]
            if g is None or isinstance(values[v], tuple):
                g = _cotangent(g, values[v])
            cot[v] = None
            sub = None if need is None else need.get(name, _EMPTY)
            if src is not None:  # one whole value in (a chain's step): no bookkeeping
                dx, got = back_through(layer, backs[k], g, wanted[src], sub)
                if dx is not None and wanted[src]:
                    cot[src] = dx if cot[src] is None else cot[src] + dx
            else:
                want_dx = any(wanted[r.value] for r in node.inputs)
                dx, got = back_through(layer, backs[k], g, want_dx, sub)
                if want_dx:
                    for ref, d in zip(node.inputs, dx if node.multi else (dx,), strict=True):
                        if wanted[ref.value]:
                            _add(cot, ref, d)
            accumulate(grads, name, got)
        dx = None
        if input_grad:
            dx = tuple(_cotangent(cot[i], values[i]) for i in range(n_in))
            dx = dx if n_in > 1 else dx[0]
        return dx, {name: grads[name] for name in params if name in grads}

    def _wanted(self, input_grad: bool, need: Any) -> list[bool]:
        """Per value, whether a gradient must reach it: it is an input and ``input_grad``,
        or it comes from a node whose layer's gradients are needed, or from such a value."""
        wanted = [input_grad] * len(self.inputs)
        for node in self.nodes:
            own = need is None or bool(need.get(node.layer))
            wanted.append(own or any(wanted[r.value] for r in node.inputs))
        return wanted


def _get(values: list, ref: Ref) -> Any:
    v = values[ref.value]
    return v if ref.index is None else v[ref.index]


def _shape(out: Any) -> Any:
    return tuple(tuple(o) for o in out) if _is_shapes(out) else tuple(out)


def _add(cot: list, ref: Ref, d: Any) -> None:
    """Add the cotangent ``d`` of ``ref`` (``None``: no gradient, e.g. integer ids)."""
    if d is None:
        return
    if ref.index is None:
        cot[ref.value] = d if cot[ref.value] is None else cot[ref.value] + d
        return
    parts = cot[ref.value] if cot[ref.value] is not None else {}
    parts[ref.index] = d if ref.index not in parts else parts[ref.index] + d
    cot[ref.value] = parts


def _cotangent(c: Any, value: Any) -> Any:
    """The cotangent of ``value`` from its summed parts; zeros where no gradient reached it."""
    if isinstance(value, tuple):
        parts = c or {}
        return tuple(parts[i] if i in parts else _zeros(a) for i, a in enumerate(value))
    return _zeros(value) if c is None else c


def _zeros(a: Any) -> Any:
    """Zeros like ``a``; ``None`` for integer or boolean values (ids, masks: no gradient)."""
    xp = array_namespace(a)
    return None if xp.isdtype(a.dtype, ("integral", "bool")) else xp.zeros_like(a)
