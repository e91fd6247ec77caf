"""PyTorch interop: :func:`from_torch` copies a PyTorch twin's ``state_dict`` into a built model,
:func:`to_torch_state_dict` is its exact inverse. torch is imported only where a module object
is passed; files are read as safetensors, never unpickled. The per-layer conversions are in
:mod:`wframe.transfer.torch_layers`.

Recurrent modules: LSTM, GRU and RNN gates are reordered to wframe's (an LSTM's two biases
add; a GRU's ``bias_ih`` becomes ``b`` and ``bias_hh`` ``b_h``, as wframe's GRU is Keras'
``reset_after=True``). A module with ``num_layers=n`` fills the next ``n`` layers (its ``_l0``,
``_l1``... weights), each a recurrent layer with ``return_sequences=True`` but maybe the last;
with ``bidirectional=True`` each of them is a :class:`~wframe.layers.Bidirectional` whose
``forward`` takes ``*_lk`` and ``backward`` ``*_lk_reverse``, with ``merge_mode="concat"``
(PyTorch concatenates the directions). Outputs correspond so: ``return_sequences=True`` gives
torch's ``output``; ``False`` gives ``torch.cat([h_n[-2], h_n[-1]], -1)``: the backward half is
the backward direction's state after the whole reversed sequence (torch's ``output[:, 0, H:]``),
not ``output[:, -1, H:]``.

``nn.MultiheadAttention`` (``in_proj_weight`` rows [q; k; v], ``in_proj_bias``, ``out_proj``;
or ``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight`` where ``kdim``/``vdim`` differ)
fills a :class:`~wframe.layers.MultiHeadAttention` with ``key_dim = embed_dim / num_heads``:
each kernel transposed and split per head, ``query/W`` (E, H, dh), ``output/W`` (H, dh, E).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from wframe import layers as wl
from wframe.backends import to_numpy, use_backend
from wframe.layers.combinators import Sequential as Chain
from wframe.layers.graph import Graph
from wframe.model import Sequential
from wframe.placeholders import shape_only
from wframe.saving import io
from wframe.saving.errors import capped
from wframe.saving.values import check_values, short
from wframe.transfer import torch_layers as tl
from wframe.transfer import torch_source as ts
from wframe.transfer.report import TransferReport
from wframe.transfer.report import const as _const
from wframe.tree import flatten, map_at

#: Layers that become two modules in an ``nn.Sequential`` twin when they have an activation.
_FUSED = (wl.Dense, wl.Conv2D, wl.Conv1D)
#: Layers whose input features a Flatten's permutation reaches (and passes on, for the norms).
_PER_FEATURE = (wl.Dense, wl.BatchNorm, wl.LayerNorm, wl.RMSNorm)
_HANDLED = (
    ", ".join(tl.KINDS.values()).replace("LSTM, GRU, RNN", "LSTM/GRU/RNN")
    + " (bidirectional: Bidirectional; num_layers > 1: consecutive layers)"
)


# ------------------------------------------------------------------ the model's layers
@dataclass
class _Slot:
    name: str  # flat name of the layer's params/state: "block_0/dense_1"
    torch: str  # the module prefix of an nn.Sequential twin: "2.1"
    layer: wl.Layer
    perm: np.ndarray | None  # perm[i_wframe] = i_torch over the input features, after a Flatten
    in_shape: tuple | None = None  # the layer's input shape (a convolution's padding depends on it)


def _walk(layer, name, prefix, shape, perm, dtype, out) -> tuple[tuple, Any]:
    """Append the leaf layers of ``layer`` in call order; returns ``(out shape, perm)``."""
    join = lambda a, b: f"{a}/{b}" if a else b  # noqa: E731
    tjoin = lambda a, b: f"{a}.{b}" if a else str(b)  # noqa: E731
    if isinstance(layer, Chain):
        seen, i = set(), 0
        for child in layer.layers:
            if child.name in seen:  # a shared instance: one set of weights, listed once
                shape, perm = child.compute_output_shape(shape, dtype), None
            else:
                seen.add(child.name)
                at = (join(name, child.name), tjoin(prefix, i))
                shape, perm = _walk(child, *at, shape, perm, dtype, out)
            # A Dense or Conv with an activation is two modules in the twin (Linear, ReLU).
            i += 1 + (isinstance(child, _FUSED) and child.activation not in (None, "linear"))
        return shape, perm
    if isinstance(layer, Graph):
        return _walk_graph(layer, name, prefix, shape, dtype, out), None
    # Residual, Concatenate: every child sees the container's input. A Bidirectional is one
    # module in the twin (an nn.GRU with bidirectional=True).
    if layer.children() and not isinstance(layer, wl.Bidirectional):
        for i, (key, child) in enumerate(layer.children()):
            at = (join(name, key), tjoin(prefix, i)) if key else (name, prefix)
            _walk(child, *at, shape, None, dtype, out)
        return layer.compute_output_shape(shape, dtype), None
    out_shape = layer.compute_output_shape(shape, dtype)
    if isinstance(layer, wl.Flatten):
        return out_shape, (_nchw_perm(*shape[1:]) if len(shape) == 4 else None)
    features = len(shape) == 2  # per-feature layers keep the permutation of a Flatten
    takes = features and isinstance(layer, _PER_FEATURE)
    out.append(_Slot(name, prefix, layer, perm if takes else None, tuple(shape)))
    passes = isinstance(layer, (wl.Activation, wl.Dropout, *_PER_FEATURE[1:]))
    return out_shape, (perm if features and passes else None)


def _walk_graph(graph: Graph, name: str, prefix: str, shape: Any, dtype: str, out: list) -> Any:
    """Append the leaf layers of a graph in the order of their first calls (a twin's module
    ``i`` is the ``i``-th of them); returns the graph's output shape."""
    with use_backend("numpy"), shape_only():  # the shapes each layer is first called on
        calls = {n.layer: arg for _, n, arg, *_ in graph.walk(0, shape, dtype)}
    for i, (key, arg) in enumerate(calls.items()):  # (dicts keep the first call's position)
        at = (f"{name}/{key}" if name else key, f"{prefix}.{i}" if prefix else str(i))
        _walk(graph.get_layer(key), *at, arg, None, dtype, out)
    return graph.compute_output_shape(shape, dtype)


def _nchw_perm(h: int, w: int, c: int) -> np.ndarray | None:
    """The (C, H, W) flat index of each (H, W, C) feature (``None`` where they agree)."""
    perm = np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).ravel()
    return None if c == 1 or h * w == 1 else perm


def _slots(model) -> list[_Slot]:
    """The layers of a built model that hold params or state, in call order."""
    params, state, out = model.params, model.state, []  # model.params raises if unbuilt
    _walk(model, "", "", model.input_shape, None, model.dtype, out)
    return [s for s in out if _sub(params, s.name) or _sub(state, s.name)]


def _sub(tree: dict, name: str) -> dict:
    for part in name.split("/"):
        tree = tree.get(part, {})
    return tree


def _shapes(d: Mapping, limit: int = 8) -> str:
    rows = [f"{short(k)} {tuple(a.shape)}" for k, a in list(d.items())[: limit + 1]]
    more = len(d) - limit
    return ", ".join(rows[:limit] + ([f"... and {more} more"] if more > 0 else []))


# ------------------------------------------------------------------ PyTorch
def from_torch(
    model: Sequential,
    state_dict_or_path: Any,
    mapping: Mapping[str, str | Sequence[str] | None] | None = None,
    *,
    strict: bool = True,
    allow_nonfinite: bool = False,
) -> TransferReport:
    """Copy a PyTorch twin's weights into the built ``model``; returns the report.

    State-dict entries are grouped by module prefix (``"features.3.weight"`` -> module
    ``"features.3"``) and paired in order with the model's layers that hold weights (a walk
    through its containers), each pair checked for kind and shapes. Linear weights are
    transposed; Conv2d kernels go OIHW -> HWIO and Conv1d kernels (out, in, k) -> (k, in, out);
    an Embedding's ``weight`` is ``embeddings`` as it is; LayerNorm's ``weight``/``bias`` are
    ``gamma``/``beta``, RMSNorm's ``weight`` is ``scale``; recurrent and attention modules go
    as the module's docstring says; BatchNorm's running statistics become the state
    ``mean``/``var`` (both frameworks store the running variance; PyTorch updates it with the
    unbiased batch variance, wframe with the biased one, a difference only further training
    sees) and ``num_batches_tracked`` is skipped. A Dense (or a norm) fed by a Flatten of an
    (H, W, C) map gets its input rows permuted: PyTorch flattens NCHW maps in (C, H, W) order,
    wframe NHWC maps in (H, W, C) order.

    Args:
      model: a built :class:`wframe.Sequential` (or graph ``wf.Model``, its layers in the
        order of their first calls).
      state_dict_or_path: a ``state_dict`` (torch tensors or NumPy arrays), a ``.safetensors``
        path (never a pickle), or the ``torch.nn.Module`` itself, which also lets ``eps``,
        strides, dilation, heads and an RNN's nonlinearity be checked. A file keeps no module
        order (safetensors sorts the names), so its modules are taken in natural name order;
        ``mapping`` fixes the rest.
      mapping: ``{torch module prefix: wframe flat layer name}`` pairs that override the order
        (the other modules pair in order with the other layers); ``None`` skips a module; a
        recurrent module of ``n`` layers takes a list of ``n`` names.
      strict: raise when modules are left over on either side (else report them).
      allow_nonfinite: copy NaN and inf values (to debug a diverged twin); by default they
        are refused.

    Every value copied is checked first (:func:`wframe.saving.values.check_values`): the
    model changes only when all pass.

    Raises:
      ValueError: naming the torch module, its keys and shapes and the wframe layer it was
        paired with, for a module kind that is not handled or a kind or shape that cannot
        match; naming each parameter whose values cannot be loaded: NaN or inf, finite values
        that overflow the model's dtype (float64 1e300 for a float32 model), a negative
        BatchNorm ``running_var``; and for modules left over (``strict``). From a file, a
        :class:`~wframe.saving.io.WeightsFileError` naming it.
      TypeError: naming the entry, for one that is not floating-point (integer, bool, complex:
        a cast would change the values silently), a sparse, meta or quantized tensor, or no
        array at all (a file's: a ``WeightsFileError``).
    """
    if not isinstance(allow_nonfinite, (bool, np.bool_)):
        raise TypeError(
            f"from_torch: allow_nonfinite must be True or False, got {allow_nonfinite!r}"
        )
    path = ts.path_of(state_dict_or_path)
    groups, modules = ts.torch_groups(state_dict_or_path)
    report = TransferReport("from_torch")
    groups = _without_counters(groups, report)
    pairs, extra = _pair_modules(groups, _slots(model), mapping, modules, report)
    params, state = _plan(model, pairs, modules, report, path=path, finite=not allow_nonfinite)
    if strict and (extra or report.missing):
        raise ValueError(
            f"from_torch: left over: torch modules {_listed(extra)}, wframe layers "
            f"{_listed(report.missing)}; map a module to None to skip it, or pass strict=False "
            "to keep those weights"
        )
    model.params, model.state = params, state
    return report


def _listed(names: list[str], limit: int = 10) -> str:
    """``names`` as a list, the first ``limit`` of them then how many more."""
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"[{', '.join(short(repr(n), 120) for n in names[:limit])}]{more}"


def _without_counters(groups: dict[str, dict], report: TransferReport) -> dict[str, dict]:
    """``groups`` less BatchNorm's ``num_batches_tracked`` (reported skipped) and empty modules."""
    for prefix, t in groups.items():
        if t.pop("num_batches_tracked", None) is not None:
            report.skipped.append((_join(prefix, "num_batches_tracked"), "a counter"))
    return {p: t for p, t in groups.items() if t}


def _mapped_names(groups: dict, mapping: dict, slots: dict) -> dict[str, list | None]:
    """``mapping`` checked, as ``{prefix: [one name per layer of the module] or None}``."""
    out = {}
    for p, n in mapping.items():
        names = None if n is None else [n] if isinstance(n, str) else list(n)
        parts = len(tl.rnn_layers(groups[p])) if p in groups else 0
        if not parts or (names is not None and not set(names) <= set(slots)):
            raise ValueError(
                f"from_torch: mapping {short(p)!r}: {short(repr(n))} names a missing module or "
                f"layer; the torch modules are {_listed(list(groups))}, the layers with weights "
                f"{_listed(list(slots))}"
            )
        if names is not None and len(names) != parts:
            raise ValueError(
                f"from_torch: mapping {p!r}: {n!r} gives {len(names)} layer names, but the "
                f"module holds {parts} layers; give a list of {parts} names"
            )
        out[p] = names
    return out


def _pair_modules(
    groups: dict[str, dict],
    layers: list[_Slot],
    mapping: Mapping[str, Any] | None,
    modules: dict[str, Any],
    report: TransferReport,
) -> tuple[list[tuple[str, dict, _Slot]], list[str]]:
    """``(pairs, extra)``: ``(prefix, entries, slot)`` of each torch module (each layer of a
    multi-layer recurrent module) paired with a layer (by ``mapping``, else in order), and the
    labels of the modules left over; the skipped entries and the layers left over
    (``report.missing``) go into ``report``."""
    slots = {s.name: s for s in layers}
    mapped = _mapped_names(groups, dict(mapping or {}), slots)
    taken = {n for names in mapped.values() for n in names or ()}
    free = iter([s for s in slots.values() if s.name not in taken])
    pairs, extra = [], []
    for prefix, whole in groups.items():
        if prefix in mapped and mapped[prefix] is None:
            report.skipped += [(_join(prefix, k), "mapped to None") for k in whole]
            continue
        for i, t in enumerate(tl.rnn_layers(whole)):
            slot = slots[mapped[prefix][i]] if prefix in mapped else next(free, None)
            if slot is None:
                extra.append(_torch_label(prefix, t, modules))
                report.skipped += [(_join(prefix, k), "no wframe layer left") for k in t]
            else:
                pairs.append((prefix, t, slot))
    report.missing = [s.name for s in free]
    return pairs, extra


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _torch_label(prefix: str, t: dict, modules: dict, want: str | None = None) -> str:
    kinds = tl.torch_kinds(t)  # (the kind wanted, where the entries cannot tell it apart)
    kinds = want if want in kinds else " or ".join(kinds) or "unknown"
    kind = type(modules[prefix]).__name__ if prefix in modules else kinds
    return f"torch module {prefix or '<root>'!r} ({kind}: {_shapes(t)})"


def _mismatch(prefix: str, t: dict, slot: _Slot, modules: dict) -> str | None:
    """Why module ``prefix``'s entries ``t`` cannot fill ``slot`` (``None``: they can)."""
    kinds, want = tl.torch_kinds(t), tl.kind_of(slot.layer)
    known = tl.module_kind(modules[prefix]) if prefix in modules else None
    kinds = (known,) if known in kinds else kinds  # a module tells Linear from Embedding
    if not kinds:
        return f"its kind is not handled ({_HANDLED})"
    if want not in kinds:
        return f"a {' or '.join(kinds)} cannot fill a {type(slot.layer).__name__}"
    if prefix not in modules:
        return None
    return tl.check_module(modules[prefix], slot.layer, slot.in_shape)


def _plan(
    model, pairs: list, modules: dict, report: TransferReport, *, path: str | None, finite: bool
) -> tuple[dict, dict]:
    """The model's new params and state, every pair converted and checked first: kinds and
    shapes (raising at the first pair that cannot match), then dtypes and values (every
    problem collected, raised together by :func:`_refuse`)."""
    fns: dict[str, dict[str, Callable]] = {"params": {}, "state": {}}
    dtypes: list[str] = []  # entries that are not floating-point
    values: list[str] = []  # values the model cannot take
    for prefix, t, slot in pairs:
        own = {tree: dict(flatten(_sub(getattr(model, tree), slot.name))) for tree in fns}
        why = _mismatch(prefix, t, slot, modules)
        new = tl.from_torch(t, slot.layer, slot.perm) if why is None else {}
        for tree in new:
            got = {k: v[0].shape for k, v in new[tree].items()}
            if got != {k: tuple(a.shape) for k, a in own[tree].items()}:
                why = f"it converts to {tree} {_shapes({k: v[0] for k, v in new[tree].items()})}"
        if why:
            raise ValueError(
                f"from_torch: {_torch_label(prefix, t, modules, tl.kind_of(slot.layer))} "
                f"paired with wframe layer "
                f"{slot.name!r} ({type(slot.layer).__name__}: "
                f"{_shapes({**own['params'], **own['state']})}): {why}"
            )
        wrong = [ts.dtype_problem(_join(prefix, k), a, slot.name) for k, a in t.items()]
        dtypes += [w for w in wrong if w]
        if dtypes:
            continue  # (no conversion is worth checking until every dtype is right)
        for tree, entries in new.items():
            for k, (a, src, note) in entries.items():
                ref, keys = own[tree][k], src.split(" + ")
                source = " + ".join(_join(prefix, s) for s in keys)
                name = ("@state/" if tree == "state" else "") + f"{slot.name}/{k}"
                found = check_values(name, a, allow_nonfinite=not finite, dtype=str(ref.dtype))
                values += [f"torch {short(source)!r}: {p}" for p in found]
                if found or values:
                    continue
                value = model.backend.asarray(np.ascontiguousarray(a, dtype=str(ref.dtype)))
                fns[tree][f"{slot.name}/{k}"] = _const(value)
                if keys[0] not in t:  # a module without biases (bias=False): zeros
                    source, note = f"{_join(prefix, keys[0])} (absent: zeros)", "bias=False"
                shape = tuple(t[keys[0]].shape) if keys[0] in t else tuple(a.shape)
                row = (source, shape, f"{slot.name}/{k}", tuple(ref.shape), note)
                report.loaded.append(row)
    if dtypes or values:
        _refuse(dtypes or values, path, TypeError if dtypes else ValueError)
    return map_at(model.params, fns["params"]), map_at(model.state, fns["state"])


def _refuse(problems: list[str], path: str | None, kind: type) -> NoReturn:
    """Raise ``kind`` (a file's: :class:`~wframe.saving.io.WeightsFileError`) listing
    ``problems``, capped."""
    if path is not None:
        raise io.file_error(f"from_torch: cannot load {path!r}:", path, capped(problems))
    raise kind("\n  ".join(["from_torch: cannot copy these weights:", *capped(problems)]))


def to_torch_state_dict(model: Sequential) -> dict[str, np.ndarray]:
    """The PyTorch twin's ``state_dict`` of a built model, as fresh NumPy arrays.

    The exact inverse of :func:`from_torch`: ``from_torch(other, to_torch_state_dict(model))``
    copies the weights bit for bit. Keys are those of an ``nn.Sequential`` twin with one module
    per wframe layer (``"0.weight"``, ``"3.running_var"``, nested chains ``"2.1.weight"``), a
    Dense or Conv with an activation counting as two (``nn.Linear`` then ``nn.ReLU``). Load a
    twin with ``twin.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})``; a twin
    that names its modules itself takes ``dict(zip(twin.state_dict(), sd.values()))`` (the same
    order: consecutive recurrent layers give ``_l0`` entries of one module each, in the order of
    one ``nn.GRU(num_layers=n)``'s ``_l0``, ``_l1``..., and a Bidirectional gives ``*_l0`` then
    ``*_l0_reverse`` as torch does); ``safetensors.numpy.save_file`` writes it. An LSTM/RNN
    bias goes to ``bias_ih_l0`` (``bias_hh_l0`` is zero); a BatchNorm gets
    ``num_batches_tracked = 0``.

    Args:
      model: a built ``wf.Sequential`` whose layers all have a PyTorch counterpart.

    Raises:
      ValueError: for a layer with none, naming it and the layers handled.
    """
    out: dict[str, np.ndarray] = {}
    for slot in _slots(model):
        layer = slot.layer
        if tl.kind_of(layer) is None:
            raise ValueError(
                f"to_torch_state_dict: {layer.label} ({slot.name!r}) has no PyTorch counterpart "
                f"here; handled: {_HANDLED}"
            )
        p, s = (
            {k: to_numpy(a) for k, a in flatten(_sub(tree, slot.name))}
            for tree in (model.params, model.state)
        )
        tensors = tl.to_torch(p, s, layer, slot.perm)
        out.update({_join(slot.torch, k): np.array(a, order="C") for k, a in tensors.items()})
    return out
