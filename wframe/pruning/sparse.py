"""Sparse inference: :func:`sparsify` turns a pruned model's sparse kernels into sparse products.

Each ``Dense``, ``Conv2D`` and ``Conv1D`` whose kernel is sparse enough becomes the matching
layer of :mod:`wframe.pruning.sparse_layers` (its kernel stored as CSR), in a new model built
from the original's config; the original is not touched. Whether a layer goes sparse is
measured, not guessed: both versions of the layer run on a random batch of its input shape with
``batch_size`` rows (the batch the model will predict on) on the model's backend, under the
BLAS thread setting ``predict`` would use, interleaved, and the faster median wins. Sparse
products pay off at high sparsity and small batches (they are memory-bound, a dense GEMM is
compute-bound), so the answer depends on the batch size and the backend: sparsify for the
batch you serve, on the backend you serve it on (``to_backend`` keeps the choices made).

Measured on a 2-core VM (benchmarks/bench_sparse.py, 784-1024-1024-10 MLP at 95%): NumPy's
SciPy products win at every batch size (1.3x in ``predict`` at batch 1, where predict's own
per-call work weighs most; 2-4x from batch 16 with one BLAS thread); JAX's BCSR on CPU loses
below batch 8 and wins 3-4x from 16 on.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from wframe.backends import to_numpy, use_backend
from wframe.layers.combinators import Sequential as Chain
from wframe.layers.graph import Graph
from wframe.placeholders import shape_only
from wframe.pruning.masks import Selector, check_fraction, selected
from wframe.pruning.sparse_layers import SPARSE_OF
from wframe.saving.config import ConfigError, layer_config
from wframe.tree import flatten

DECISIONS = ("measure", "sparse", "dense")


def sparsify(
    model: Any,
    *,
    batch_size: int = 1,
    decide: str = "measure",
    min_sparsity: float = 0.5,
    include: Selector = None,
    exclude: Selector = None,
    seconds: float = 0.05,
    print_fn: Callable[[str], Any] | None = None,
) -> Any:
    """A copy of ``model`` whose sparse ``Dense``/``Conv2D``/``Conv1D`` kernels run as sparse
    products in ``predict`` and ``evaluate``.

    Outputs equal the dense model's to float rounding (the sums run in another order). The
    copy cannot train (its sparse layers raise in ``fit``): train the pruned dense model, then
    sparsify it again. It saves and loads as any model (the sparse layers are registered).

    Args:
      model: a built ``wf.Sequential`` or graph ``wf.Model`` (float32 or float64), usually
        pruned (:func:`~wframe.pruning.prune`); zeros are what is left out, masks or not.
      batch_size: the rows of the probe batch each layer is timed on.
      decide: ``"measure"`` (the rule above), ``"sparse"`` (every candidate layer sparse, no
        timing) or ``"dense"`` (none: a copy with the report only).
      min_sparsity: kernels with a smaller fraction of zeros stay dense untimed (sparse
        products lose there on every backend measured).
      include, exclude: which kernels (flat names such as ``"dense_0/W"``), as in
        :func:`~wframe.pruning.prune`.
      seconds: the time spent timing each version of each layer (at least 5 runs each).
      print_fn: where to print the report's table (``None``: nowhere).

    Returns:
      The new model. ``new.sparse_layers`` is the report: a dict per candidate layer with
      ``name``, ``kind``, ``kernel`` (shape), ``sparsity``, ``nnz``, ``dense_us`` and
      ``sparse_us`` (median microseconds per call; ``None`` where not timed), ``choice``
      (``"sparse"`` or ``"dense"``) and ``why``.

    Raises:
      ValueError: a bad argument, a mixed-precision model, or a model whose config cannot be
        written (a layer holding a function: give activations and initializers by name).
      TypeError: not a built wframe model.
    """
    _check(model, batch_size, decide, seconds)
    min_sparsity = check_fraction(min_sparsity, "sparsify: min_sparsity")
    kernels = set(selected(model, include, exclude, True, "sparsify"))
    flat = dict(flatten(model.params))
    report, replace, sparse_params = [], {}, {}
    for path, layer, in_shape in _candidates(model, kernels):
        kernel = np.asarray(to_numpy(flat[f"{path}/W"]))
        nnz = int(np.count_nonzero(kernel))
        sparse = SPARSE_OF[type(layer)](layer=layer, nnz=nnz)
        row = {
            "name": path,
            "kind": type(layer).__name__,
            "kernel": tuple(kernel.shape),
            "sparsity": 1 - nnz / kernel.size,
            "nnz": nnz,
            "dense_us": None,
            "sparse_us": None,
        }
        params = _at(model.params, path)
        own = sparse.sparse_params(params, kernel) if row["sparsity"] >= min_sparsity else None
        if own is None:
            choice, why = "dense", f"sparsity below min_sparsity={min_sparsity:g}"
        elif decide != "measure":
            choice, why = decide, f"decide={decide!r}"
        else:
            timed = _race(model, layer, params, sparse, own, in_shape, batch_size, seconds)
            row["dense_us"], row["sparse_us"] = timed
            choice = "sparse" if timed[1] < timed[0] else "dense"
            why = f"{'faster' if choice == 'sparse' else 'slower'} at batch {batch_size}"
        row.update(choice=choice, why=why)
        report.append(row)
        if choice == "sparse":
            replace[path], sparse_params[path] = sparse, own
    new = _rebuilt(model, replace, sparse_params)
    new.sparse_layers = report
    if print_fn is not None:
        print_fn(format_report(report))
    return new


def format_report(rows: list[dict]) -> str:
    """:func:`sparsify`'s report as a table."""
    head = ("layer", "kind", "kernel", "sparsity", "dense us", "sparse us", "choice", "why")

    def us(v):
        return "-" if v is None else f"{v:.1f}"

    cells = [
        (
            r["name"],
            r["kind"],
            "x".join(map(str, r["kernel"])),
            f"{r['sparsity']:.1%}",
            us(r["dense_us"]),
            us(r["sparse_us"]),
            r["choice"],
            r["why"],
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(len(head))]
    lines = ["  ".join(s.ljust(w) for s, w in zip(c, widths, strict=True)) for c in [head, *cells]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- helpers
def _check(model: Any, batch_size: Any, decide: Any, seconds: Any) -> None:
    if not hasattr(model, "require_built") or not hasattr(model, "layers"):
        raise TypeError(
            f"sparsify takes a built wf.Sequential or wf.Model, got {type(model).__name__}"
        )
    model.require_built("sparsify")
    if model.policy.mixed:
        raise ValueError(
            f"sparsify: {model.label} computes in {model.compute_dtype} (policy "
            f"{model.policy.name!r}); sparse products run in float32 or float64: sparsify a "
            "model made with dtype='float32'"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"sparsify: batch_size must be an int >= 1, got {batch_size!r}")
    if decide not in DECISIONS:
        raise ValueError(f"sparsify: decide must be one of {DECISIONS}, got {decide!r}")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(f"sparsify: seconds must be a number > 0, got {seconds!r}")


def _join(path: str, key: str | None) -> str:
    return path if key is None else (f"{path}/{key}" if path else key)


def _walk(layer: Any, in_shape: Any, dtype: str, path: str) -> Iterator[tuple[str, Any, Any]]:
    """``(params path, layer, input shape)`` of ``layer``'s descendants, in call order (a
    chain feeds each layer the last one's output, a graph its node's inputs, other containers
    their own input)."""
    if isinstance(layer, Graph):
        for _, node, arg, _, _, _ in layer.walk(0, in_shape, dtype):
            child = layer.get_layer(node.layer)
            yield _join(path, node.layer), child, arg
            yield from _walk(child, arg, dtype, _join(path, node.layer))
    elif isinstance(layer, Chain):
        shape = in_shape
        for child in layer.layers:
            yield _join(path, child.name), child, shape
            yield from _walk(child, shape, dtype, _join(path, child.name))
            shape = child.init(0, shape, dtype=dtype)[2]
    else:
        for key, child in layer.children():
            yield _join(path, key), child, in_shape
            yield from _walk(child, in_shape, dtype, _join(path, key))


def _candidates(model: Any, kernels: set[str]) -> list[tuple[str, Any, Any]]:
    """The layers to consider, once each: a ``Dense``/``Conv2D``/``Conv1D`` (exactly: a
    subclass may compute otherwise) whose ``W`` is selected."""
    with use_backend("numpy"), shape_only():  # shapes only: nothing is drawn
        walked = list(_walk(model, model.input_shape, model.dtype, ""))
    seen, out = set(), []
    for path, layer, shape in walked:
        if type(layer) in SPARSE_OF and f"{path}/W" in kernels and path not in seen:
            seen.add(path)
            out.append((path, layer, shape))
    return out


def _at(tree: dict, path: str) -> Any:
    for key in path.split("/"):
        tree = tree[key]
    return tree


def _race(model, layer, params, sparse, own, in_shape, batch_size, seconds):
    """Median microseconds per call of the dense ``layer`` and of ``sparse``, timed in turns
    on a random probe batch, under ``predict``'s thread setting."""
    backend = model.backend
    shape = (batch_size, *tuple(in_shape)[1:])
    rng = np.random.default_rng(0)
    x = backend.asarray(rng.standard_normal(shape).astype(model.dtype))

    def runner(lay, p):
        fn = backend.jit(lambda p, x: lay.apply(p, {}, x, train=False, vjp=False)[0])
        return lambda: backend.synchronize(fn(p, x))

    runs = (runner(layer, params), runner(sparse, own))
    times: tuple[list, list] = ([], [])
    with backend.host_threads(model.count_params() * batch_size):
        for run in runs:  # compile (JAX), fill caches
            run()
            run()
        spent, start = 0.0, time.perf_counter()
        while len(times[0]) < 5 or spent < 2 * seconds:
            for run, got in zip(runs, times, strict=True):
                t = time.perf_counter()
                run()
                got.append(time.perf_counter() - t)
            spent = time.perf_counter() - start
    return tuple(1e6 * statistics.median(t) for t in times)


def _rebuilt(model: Any, replace: dict[str, Any], sparse_params: dict[str, dict]) -> Any:
    """A new model of ``model``'s config with the layers at the paths of ``replace`` swapped,
    on its backend, holding copies of its arrays (the swapped layers' params replaced)."""
    config = _swapped_config(model, replace)
    backend = model.backend
    with use_backend(backend):
        new = type(model).from_config(config)
        new.to_backend(backend)
        if not new.built:
            new.build(model.input_shape)
    params = backend.copy(model.params)
    for path, p in sparse_params.items():
        *up, last = path.split("/")
        parent = _at(params, "/".join(up)) if up else params
        parent[last] = p
    new.params = params
    new.state = backend.copy(model.state)
    kept = dict(flatten(new.params))
    masks = {
        k: m
        for k, m in (model.masks or {}).items()
        if k in kept and tuple(kept[k].shape) == tuple(m.shape)
    }
    new.masks = masks or None
    new.loss, new.compiled_metrics = model.loss, model.compiled_metrics
    # The CSR structure is not a weight (JAX refuses to differentiate integers): frozen, so
    # fit reaches the sparse layers' own error, and the summary counts only values as weights.
    structure = {f"{path}/{k}" for path in sparse_params for k in ("indices", "indptr")}
    new.set_frozen(frozenset(model.frozen & kept.keys()) | structure)
    return new


def _swap(layer: Any, path: str, replace: dict[str, Any]) -> Any:
    """``layer`` with its descendants at the paths of ``replace`` swapped (containers are
    immutable dataclasses: a changed one is a new instance with the new children)."""
    swapped = replace.get(path)
    if swapped is not None and swapped.layer is layer:  # (a Residual shares its child's path)
        return swapped
    kids = layer.children()
    new = {id(child): _swap(child, _join(path, key), replace) for key, child in kids}
    if all(new[id(child)] is child for _, child in kids):
        return layer
    fields = {}
    for f in dataclasses.fields(layer):
        value = getattr(layer, f.name)
        if id(value) in new:
            fields[f.name] = new[id(value)]
        elif isinstance(value, tuple) and any(id(v) in new for v in value):
            fields[f.name] = tuple(new.get(id(v), v) for v in value)
    return dataclasses.replace(layer, **fields)


def _swapped_config(model: Any, replace: dict[str, Any]) -> dict:
    """``model.get_config()`` with its top-level layers swapped (:func:`_swap`); shared
    instances (``{"same_as": i}`` entries) stay shared."""
    try:
        config = model.get_config()
        entries = list(config["layers"])
        for i, (entry, child) in enumerate(zip(entries, model.layers, strict=True)):
            if "same_as" not in entry:
                entries[i] = layer_config(_swap(child, child.name, replace))
    except ConfigError as e:
        raise ValueError(
            f"sparsify builds the new model from {model.label}'s config, which cannot be "
            f"written: {e}. Give activations and initializers by name"
        ) from None
    config["layers"] = entries
    return config
