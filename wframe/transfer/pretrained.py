"""Transfer between wframe models and files: :func:`load_pretrained` copies params and state by
flat name, :func:`replace_head` swaps the last layers and keeps the body's weights."""

from __future__ import annotations

import fnmatch
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from wframe import layers as wl
from wframe.backends import to_numpy
from wframe.model import Sequential
from wframe.saving import io, sparse_pack
from wframe.transfer.report import TransferReport
from wframe.transfer.report import const as _const
from wframe.tree import flatten, map_at


def replace_head(
    model: Sequential,
    new_layers: wl.Layer | Sequence[wl.Layer],
    keep: int | None = None,
    *,
    seed: int | None = None,
) -> Sequential:
    """A new model: the first ``keep`` layers of the built ``model`` with their current
    weights (copied), then ``new_layers`` (fresh), built for the same inputs on its backend.

    It packages ``wf.Sequential([*model.layers[:keep], *new_layers])`` plus a copy of the kept
    layers' params, state and pruning masks by flat name. The copy is the point: a layer object
    carries no weights (they live in the model), so that list alone starts from fresh weights;
    only a *built model* nested in another brings its current weights along, which is why
    ``wf.Sequential([model, head])`` keeps all of ``model``, its old head included.

    Args:
      model: a built :class:`wframe.Sequential`.
      new_layers: a layer or a list of layers appended after the kept ones.
      keep: how many leading layers to keep (negative: counted from the end); default all but
        the last.
      seed: seed of the new layers' initial weights; default ``model.seed``.
    """
    n = len(model.layers)
    k = n - 1 if keep is None else keep
    k = k + n if isinstance(k, int) and k < 0 else k
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= n:
        raise ValueError(f"replace_head: keep must select 1 to {n} layers, got keep={keep!r}")
    new_layers = [new_layers] if isinstance(new_layers, wl.Layer) else list(new_layers)
    seed = model.seed if seed is None else seed
    new = Sequential([*model.layers[:k], *new_layers], seed=seed, dtype=model.dtype)
    new.to_backend(model.backend).build(model.input_shape)
    names, xp = {layer.name for layer in model.layers[:k]}, model.backend.xp

    def kept(tree: dict) -> dict[str, Callable]:  # fresh copies: the models share no arrays
        return {
            name: _const(xp.asarray(a, copy=True))
            for name, a in flatten(tree)
            if name.split("/")[0] in names
        }

    new.params = map_at(new.params, kept(model.params))
    new.state = map_at(new.state, kept(model.state))
    if model.masks:
        new.masks = {m: fn(None) for m, fn in kept(model.masks).items()}
    return new


class _Spec(NamedTuple):
    """A file tensor's dtype and shape, from the header (its data is read only if it loads)."""

    dtype: np.dtype
    shape: tuple[int, ...]


def _source(source: Any) -> list[tuple[str, str, Any, str]]:
    """``(source key, flat name, host array or _Spec, "params" | "state" | "masks" | "any")``
    entries; a file's come from its header alone."""
    if isinstance(source, (str, os.PathLike)):
        out = []
        for key, (dtype, shape) in sparse_pack.shapes(io.read_header(source)).items():
            kind = "params" if not key.startswith("@") else None
            for k, prefix in (("state", io.STATE_PREFIX), ("masks", io.MASK_PREFIX)):
                kind = k if key.startswith(prefix) else kind
            name = key if kind == "params" else key.partition("/")[2]
            out.append((key, name, _Spec(dtype, shape), kind or "other"))
        return out
    if hasattr(source, "params") and hasattr(source, "state"):
        trees = {"params": source.params, "state": source.state}
        return [(n, n, to_numpy(a), k) for k, tree in trees.items() for n, a in flatten(tree)]
    if isinstance(source, Mapping):
        return [(n, n, to_numpy(a), "any") for n, a in flatten(dict(source))]
    raise TypeError(
        "load_pretrained: expected a weights file path, a built wf.Sequential or a dict of "
        f"arrays, got {type(source).__name__}"
    )


def _matches(name: str, pattern: str) -> bool:
    """A glob on a flat name or on one of its ``/``-prefixes (``"block_*"`` takes a block)."""
    parts = name.split("/")
    return any(fnmatch.fnmatchcase("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1))


def _renamer(rename: Mapping[str, str] | Callable | None) -> Callable[[str], str | None]:
    if rename is None or callable(rename):
        return rename or (lambda n: n)

    def by_prefix(name: str) -> str:
        parts = name.split("/")
        for i in range(len(parts), 0, -1):  # the longest matching prefix wins
            if (head := "/".join(parts[:i])) in rename:
                return "/".join([rename[head], *parts[i:]])
        return name

    return by_prefix


def load_pretrained(
    model: Sequential,
    path_or_model: Any,
    *,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    rename: Mapping[str, str] | Callable[[str], str | None] | None = None,
) -> TransferReport:
    """Copy params and state into the built ``model`` by flat name; returns the report.

    Args:
      model: the built :class:`wframe.Sequential` to fill.
      path_or_model: a safetensors file written by :mod:`wframe.saving.io` (params under their flat
        names, state under io's prefix; pruning masks are skipped), a built model, or a dict
        of arrays keyed by flat name (nested dicts such as ``model.params`` flatten).
      include: globs on the source's flat names or their ``/``-prefixes (``"dense_0"`` takes
        the layer); only matches load. A pattern matching nothing warns, listing the names.
      exclude: globs whose matches do not load.
      rename: ``{source prefix: model prefix}`` (the longest matching prefix wins) or a
        callable ``name -> new name`` (``None`` skips it), applied after the filters.

    Returns:
      The report: what loaded, what was skipped and why (filtered, renamed to ``None``, not in
      the model, shape mismatch: never an error) and the model's names that got nothing.
    """
    entries = _source(path_or_model)
    include = [include] if isinstance(include, str) else list(include or [])
    exclude = [exclude] if isinstance(exclude, str) else list(exclude or [])
    names = sorted({e[1] for e in entries})
    for pattern in include:
        if not any(_matches(n, pattern) for n in names):
            warnings.warn(
                f"load_pretrained: include pattern {pattern!r} matches no name; the source has "
                f"{names}",
                stacklevel=2,
            )
    rename_fn = _renamer(rename)
    targets = {"params": dict(flatten(model.params)), "state": dict(flatten(model.state))}
    report = TransferReport("load_pretrained")
    plan = []
    for key, name, a, kind in entries:
        target = rename_fn(name) if kind in ("params", "state", "any") else None
        if kind == "any":  # a dict's entry: the model's names say params or state
            kind = "state" if target in targets["state"] else "params"
        ref = targets.get(kind, {}).get(target)
        why = _skip_reason(name, a, kind, target, ref, include, exclude)
        if why:
            report.skipped.append((key, why))
        else:
            plan.append((key, a, kind, target, ref))
    # A file's data is read only once its header shows that something loads.
    stored = io.read_safetensors(path_or_model) if plan and isinstance(plan[0][1], _Spec) else {}
    if stored:  # packed tensors unpacked (those that load: their shapes fit)
        stored = sparse_pack.unpack(*stored, path_or_model, names=[p[0] for p in plan])
    fns: dict[str, dict[str, Callable]] = {"params": {}, "state": {}}
    for key, a, kind, target, ref in plan:
        # A copy: on numpy the source model's (or dict's) arrays would otherwise be shared,
        # and training one model would change the other.
        value = stored[key] if isinstance(a, _Spec) else a
        fns[kind][target] = _const(model.backend.asarray(np.array(value, dtype=str(ref.dtype))))
        note = "" if str(a.dtype) == str(ref.dtype) else f"{a.dtype} -> {ref.dtype}"
        report.loaded.append((key, tuple(a.shape), target, tuple(ref.shape), note))
    report.missing = [n for kind in fns for n in targets[kind] if n not in fns[kind]]
    params, state = map_at(model.params, fns["params"]), map_at(model.state, fns["state"])
    model.params, model.state = params, state
    return report


def _skip_reason(name, a, kind, target, ref, include, exclude) -> str | None:
    if kind not in ("params", "state"):
        return "a pruning mask" if kind == "masks" else "not params or state"
    if include and not any(_matches(name, p) for p in include):
        return "not matched by include"
    if any(_matches(name, p) for p in exclude):
        return "matched by exclude"
    if target is None:
        return "renamed to None"
    if ref is None:
        return f"no {kind} {target!r} in the model"
    if tuple(a.shape) != tuple(ref.shape):
        return f"shape {tuple(a.shape)} != the model's {tuple(ref.shape)}"
    return None
