"""The model summary: one row per layer (nested containers indented), shapes and counts."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from wframe.backends import use_backend
from wframe.layers.combinators import Sequential as Chain
from wframe.layers.graph import Graph
from wframe.placeholders import shape_only
from wframe.tree import tree_leaves


def _count(tree: Any) -> int:
    return sum(math.prod(a.shape) for a in tree_leaves(tree))


def _rows(layer: Any, params: dict, in_shape: tuple, dtype: str, prefix: str, depth: int):
    """``(name, type, output shape, #params, connected to)`` rows of ``layer``'s children, in
    call order (``connected to`` names a graph node's inputs; empty in a chain)."""
    if isinstance(layer, Graph):
        return _graph_rows(layer, params, in_shape, dtype, prefix, depth)
    rows = []
    shape = in_shape
    children = layer.layers if isinstance(layer, Chain) else [c for _, c in layer.children()]
    keys = dict((id(c), k) for k, c in layer.children())
    for child in children:
        key = keys.get(id(child))
        sub = params.get(key, {}) if key is not None else params
        name = f"{prefix}{key if key is not None else child.name or child.kind}"
        child_in = shape if isinstance(layer, Chain) else in_shape
        out = child.compute_output_shape(child_in, dtype)
        rows.append(("  " * depth + name, type(child).__name__, out, _count(sub), ""))
        if child.children():
            rows.extend(_rows(child, sub, child_in, dtype, f"{name.strip()}/", depth + 1))
        shape = out
    return rows


def _graph_rows(graph: Graph, params: dict, in_shape: Any, dtype: str, prefix: str, depth: int):
    """A row per input and per call of a graph (a shared layer's params counted once)."""
    rows = [
        ("  " * depth + prefix + spec.name, "Input", spec.shape, 0, "") for spec in graph.inputs
    ]
    counted = set()
    with use_backend("numpy"), shape_only():  # the shapes of each call, nothing allocated
        calls = [(node, arg, out) for _, node, arg, _, _, out in graph.walk(0, in_shape, dtype)]
    for node, arg, out in calls:
        child, name = graph.get_layer(node.layer), f"{prefix}{node.layer}"
        count = 0 if node.layer in counted else _count(params.get(node.layer, {}))
        counted.add(node.layer)
        links = ", ".join(graph.source(ref) for ref in node.inputs)
        rows.append(("  " * depth + name, type(child).__name__, out, count, links))
        if child.children() and count:
            rows.extend(_rows(child, params.get(node.layer, {}), arg, dtype, f"{name}/", depth + 1))
    return rows


def layer_rows(model: Any) -> list[tuple[str, str, Any, int, str]]:
    """``(name, type, output shape, #params, connected to)`` for every layer of a built
    model, nested too."""
    return _rows(model, model.params, model.input_shape, model.dtype, "", 0)


def summary(model: Any, print_fn: Callable[[str], Any] = print) -> str:
    """Print (and return) ``model``'s table: layers, output shapes, parameter counts."""
    rows = [("Layer (type)", "Output shape", "Params", "Connected to")]
    for name, kind, out, count, links in layer_rows(model):
        rows.append((f"{name} ({kind})", str(out), f"{count:,}", links))
    columns = 4 if any(r[3] for r in rows[1:]) else 3
    widths = [max(len(r[i]) for r in rows) for i in range(columns)]
    line = "-" * (sum(widths) + 3 * (columns - 1))
    fmt = [
        f"{r[0]:<{widths[0]}}   {r[1]:<{widths[1]}}   {r[2]:>{widths[2]}}"
        + (f"   {r[3]}" if columns == 4 else "")
        for r in rows
    ]
    state = _count(model.state)
    trainable = _count(model.trainable_params)
    frozen = model.count_params() - trainable - state  # count_params counts the state too
    text = "\n".join(
        [
            line,
            fmt[0],
            line,
            *fmt[1:],
            line,
            f"Total params: {model.count_params():,} ({model.policy.name}, backend "
            f"{model.backend.name})" + (f"; non-trainable state: {state:,}" if state else ""),
            f"Trainable params: {trainable:,}; frozen params: {frozen:,}",
            line,
        ]
    )
    print_fn(text)
    return text
