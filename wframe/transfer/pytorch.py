"""PyTorch interop: :func:`from_torch` copies a PyTorch twin's ``state_dict`` into a built model,
:func:`to_torch_state_dict` is its exact inverse. torch is imported only where a module object
is passed; files are read as safetensors, never unpickled.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from wframe import layers as wl
from wframe.backends import to_numpy, use_backend
from wframe.layers.combinators import Sequential as Chain
from wframe.model import Sequential
from wframe.saving import io
from wframe.transfer.report import TransferReport
from wframe.transfer.report import const as _const
from wframe.tree import map_at

#: wframe layer -> the PyTorch module kind that holds the same weights.
_TORCH_KINDS = {
    wl.Dense: "Linear",
    wl.Conv2D: "Conv2d",
    wl.BatchNorm: "BatchNorm",
    wl.LayerNorm: "LayerNorm",
    wl.LSTM: "LSTM",
    wl.GRU: "GRU",
    wl.SimpleRNN: "RNN",
}
_RNN_KEYS = {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"}
_FLAT = "NCHW -> NHWC rows (after Flatten)"


# ------------------------------------------------------------------ the model's layers
@dataclass
class _Slot:
    name: str  # flat name of the layer's params/state: "block_0/dense_1"
    torch: str  # the module prefix of an nn.Sequential twin: "2.1"
    layer: wl.Layer
    perm: np.ndarray | None  # perm[i_wframe] = i_torch over the input features, after a Flatten


def _out_shape(layer: wl.Layer, shape: tuple, dtype: str) -> tuple:
    with use_backend("numpy"):  # a throwaway host init: layers do not store their shapes
        return tuple(layer.init(0, shape, dtype=dtype)[2])


def _walk(layer, name, prefix, shape, perm, dtype, out) -> tuple[tuple, Any]:
    """Append the leaf layers of ``layer`` in call order; returns ``(out shape, perm)``."""
    join = lambda a, b: f"{a}/{b}" if a else b  # noqa: E731
    tjoin = lambda a, b: f"{a}.{b}" if a else str(b)  # noqa: E731
    if isinstance(layer, Chain):
        seen, i = set(), 0
        for child in layer.layers:
            if child.name in seen:  # a shared instance: one set of weights, listed once
                shape, perm = _out_shape(child, shape, dtype), None
            else:
                seen.add(child.name)
                at = (join(name, child.name), tjoin(prefix, i))
                shape, perm = _walk(child, *at, shape, perm, dtype, out)
            # A Dense or Conv2D with an activation is two modules in the twin (Linear, ReLU).
            fused = isinstance(child, (wl.Dense, wl.Conv2D)) and child.activation is not None
            i += 1 + (fused and child.activation != "linear")
        return shape, perm
    if layer.children():  # Residual, Concatenate: every child sees the container's input
        for i, (key, child) in enumerate(layer.children()):
            at = (join(name, key), tjoin(prefix, i)) if key else (name, prefix)
            _walk(child, *at, shape, None, dtype, out)
        return _out_shape(layer, shape, dtype), None
    out_shape = _out_shape(layer, shape, dtype)
    if isinstance(layer, wl.Flatten):
        return out_shape, (_nchw_perm(*shape[1:]) if len(shape) == 4 else None)
    features = len(shape) == 2  # per-feature layers keep the permutation of a Flatten
    takes = features and isinstance(layer, (wl.Dense, wl.BatchNorm, wl.LayerNorm))
    out.append(_Slot(name, prefix, layer, perm if takes else None))
    passes = isinstance(layer, (wl.Activation, wl.Dropout, wl.BatchNorm, wl.LayerNorm))
    return out_shape, (perm if features and passes else None)


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


def _shapes(d: Mapping) -> str:
    return ", ".join(f"{k} {tuple(a.shape)}" for k, a in d.items())


# ------------------------------------------------------------------ conversions
def _fields(layer: wl.Layer, perm: np.ndarray | None) -> list[tuple]:
    """``(torch key, wframe name, tree, to wframe, to torch, note)`` of a one-to-one layer."""
    same = lambda a: a  # noqa: E731
    inverse = None if perm is None else np.argsort(perm)
    rows = same if perm is None else lambda a: a[perm]
    unrows = same if perm is None else lambda a: a[inverse]
    note = "" if perm is None else _FLAT
    if isinstance(layer, wl.Dense):
        t = "transposed" + (", " + _FLAT if note else "")
        return [
            ("weight", "W", "params", lambda a: rows(a.T), lambda a: unrows(a).T, t),
            ("bias", "b", "params", same, same, ""),
        ]
    if isinstance(layer, wl.Conv2D):
        return [
            (
                "weight",
                "W",
                "params",
                lambda a: a.transpose(2, 3, 1, 0),
                lambda a: a.transpose(3, 2, 0, 1),
                "OIHW -> HWIO",
            ),
            ("bias", "b", "params", same, same, ""),
        ]
    names = [("weight", "gamma", "params"), ("bias", "beta", "params")]
    if isinstance(layer, wl.BatchNorm):
        names += [("running_mean", "mean", "state"), ("running_var", "var", "state")]
    return [(k, n, tree, rows, unrows, note) for k, n, tree in names]


def _blocks(a: np.ndarray, order: tuple, units: int) -> np.ndarray:
    return np.concatenate([a[k * units : (k + 1) * units] for k in order], axis=0)


def _gates(layer: wl.Layer) -> tuple:
    # PyTorch's GRU gates are r, z, n and wframe's (Keras') z, r, h: a swap, its own inverse.
    # LSTM: i, f, g, o in both.
    return (1, 0, 2) if isinstance(layer, wl.GRU) else tuple(range(layer.gates))


def _rnn_from(t: dict, layer: wl.Layer) -> dict[str, tuple]:
    wi, wh = t["weight_ih_l0"], t["weight_hh_l0"]
    u, order = wh.shape[1], _gates(layer)
    note = "gates r, z, n -> z, r, h" if isinstance(layer, wl.GRU) else "transposed"
    zeros = np.zeros(wi.shape[0], wi.dtype)
    bi, bh = t.get("bias_ih_l0", zeros), t.get("bias_hh_l0", zeros)
    p = {
        "W_x": (_blocks(wi, order, u).T, "weight_ih_l0", note),
        "W_h": (_blocks(wh, order, u).T, "weight_hh_l0", note),
    }
    if isinstance(layer, wl.GRU):  # reset_after: b_hh stays inside r * (h @ W_h + b_h)
        p["b"] = (_blocks(bi, order, u), "bias_ih_l0", note)
        p["b_h"] = (_blocks(bh, order, u), "bias_hh_l0", note)
    else:  # both biases enter the same pre-activation: they add
        p["b"] = (bi + bh, "bias_ih_l0 + bias_hh_l0", "the two biases add")
    return p


def _rnn_to(p: dict, layer: wl.Layer) -> dict[str, np.ndarray]:
    u, order = p["W_h"].shape[0], _gates(layer)
    return {
        "weight_ih_l0": _blocks(p["W_x"].T, order, u),
        "weight_hh_l0": _blocks(p["W_h"].T, order, u),
        "bias_ih_l0": _blocks(p["b"], order, u),
        "bias_hh_l0": _blocks(p["b_h"], order, u) if "b_h" in p else np.zeros_like(p["b"]),
    }


def _kind_of(layer: wl.Layer) -> str | None:
    return next((v for k, v in _TORCH_KINDS.items() if isinstance(layer, k)), None)


def _torch_kind(t: dict) -> str | None:
    """The module kind a group of state-dict entries comes from, or ``None`` if unsupported."""
    keys = set(t)
    if {"weight_ih_l0", "weight_hh_l0"} <= keys <= _RNN_KEYS:
        gates = t["weight_ih_l0"].shape[0] // max(t["weight_hh_l0"].shape[1], 1)
        return {4: "LSTM", 3: "GRU", 1: "RNN"}.get(gates)
    if {"running_mean", "running_var"} <= keys <= {"weight", "bias", "running_mean", "running_var"}:
        return "BatchNorm"
    if "weight" in keys and keys <= {"weight", "bias"}:
        return {4: "Conv2d", 2: "Linear", 1: "LayerNorm"}.get(t["weight"].ndim)
    return None


def _check_module(module: Any, layer: wl.Layer) -> str | None:
    """What a state dict cannot tell but the module can: epsilon, strides, dilation."""
    eps = getattr(module, "eps", None)
    if eps is not None and not math.isclose(eps, layer.epsilon, rel_tol=1e-6):
        return (
            f"its eps={eps} differs from epsilon={layer.epsilon}; build the twins with the same "
            "epsilon (wframe's BatchNorm defaults to 1e-3, PyTorch's to 1e-5)"
        )
    if isinstance(layer, wl.Conv2D):
        got = (tuple(module.stride), tuple(module.dilation), module.groups)
        if got != (layer.strides, layer.dilation_rate, 1):
            return f"its (stride, dilation, groups) {got} differ from the layer's"
        if layer.padding == "valid" and module.padding not in ("valid", (0, 0)):
            return f"its padding={module.padding} differs from padding='valid'"
    return None


def _host(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):  # a torch tensor, converted without importing torch
        v = v.detach().cpu()
        return (v.float() if str(v.dtype) == "torch.bfloat16" else v).numpy()
    return np.asarray(v)


def _natural(key: str) -> list:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", key)]


def _torch_groups(source: Any) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """``({module prefix: {key: host array}}, {prefix: module})``, in module order."""
    modules, ordered = {}, True
    if callable(getattr(source, "state_dict", None)) and hasattr(source, "named_modules"):
        modules, source = dict(source.named_modules()), source.state_dict()
    if isinstance(source, (str, os.PathLike)):
        source, ordered = io.read_safetensors(source)[0], False  # safetensors sorts its names
    if not isinstance(source, Mapping):
        raise TypeError(
            "from_torch: expected a state_dict (a dict of tensors or arrays), a .safetensors "
            f"path or a torch.nn.Module, got {type(source).__name__}"
        )
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key in source if ordered else sorted(source, key=_natural):
        prefix, _, leaf = key.rpartition(".")
        groups.setdefault(prefix, {})[leaf] = _host(source[key])
    return groups, modules


def _from_torch(t: dict, slot: _Slot) -> dict[str, dict[str, tuple]]:
    """``{"params"|"state": {name: (array, torch keys, note)}}`` of one paired module."""
    if isinstance(slot.layer, (wl.LSTM, wl.GRU, wl.SimpleRNN)):
        return {"params": _rnn_from(t, slot.layer), "state": {}}
    new: dict[str, dict[str, tuple]] = {"params": {}, "state": {}}
    for key, ours, tree, to_wframe, _, note in _fields(slot.layer, slot.perm):
        if key in t:
            new[tree][ours] = (to_wframe(t[key]), key, note)
    return new


# ------------------------------------------------------------------ PyTorch
def from_torch(
    model: Sequential,
    state_dict_or_path: Any,
    mapping: Mapping[str, str | None] | None = None,
    *,
    strict: bool = True,
) -> TransferReport:
    """Copy a PyTorch twin's weights into the built ``model``; returns the report.

    State-dict entries are grouped by module prefix (``"features.3.weight"`` -> module
    ``"features.3"``) and paired in order with the model's layers that hold weights (a walk
    through its containers), each pair checked for kind and shapes. Linear weights are
    transposed; Conv2d kernels go OIHW -> HWIO; LSTM, GRU and RNN gates are reordered to
    wframe's (an LSTM's two biases add; a GRU's ``bias_ih`` becomes ``b`` and ``bias_hh``
    ``b_h``, as wframe's GRU is Keras' ``reset_after=True``); BatchNorm's running statistics
    become the state ``mean``/``var`` (both frameworks store the running variance; PyTorch
    updates it with the unbiased batch variance, wframe with the biased one, a difference only
    further training sees) and ``num_batches_tracked`` is skipped. A Dense (or BatchNorm,
    LayerNorm) fed by a Flatten of an (H, W, C) map gets its input rows permuted: PyTorch
    flattens NCHW maps in (C, H, W) order, wframe NHWC maps in (H, W, C) order.

    Args:
      model: a built :class:`wframe.Sequential`.
      state_dict_or_path: a ``state_dict`` (torch tensors or NumPy arrays), a ``.safetensors``
        path (never a pickle), or the ``torch.nn.Module`` itself, which also lets ``eps``,
        strides and dilation be checked. A file keeps no module order (safetensors sorts the
        names), so its modules are taken in natural name order; ``mapping`` fixes the rest.
      mapping: ``{torch module prefix: wframe flat layer name}`` pairs that override the order
        (the other modules pair in order with the other layers); ``None`` skips a module.
      strict: raise when modules are left over on either side (else report them).

    Raises:
      ValueError: naming the torch module, its keys and shapes and the wframe layer it was
        paired with, for a module kind that is not handled or a kind or shape that cannot match.
    """
    groups, modules = _torch_groups(state_dict_or_path)
    report = TransferReport("from_torch")
    groups = _without_counters(groups, report)
    pairs, extra = _pair_modules(groups, _slots(model), mapping, modules, report)
    params, state = _plan(model, pairs, modules, report)  # raises on a pair that cannot match
    if strict and (extra or report.missing):
        raise ValueError(
            f"from_torch: left over: torch modules {extra}, wframe layers {report.missing}; "
            "map a module to None to skip it, or pass strict=False to keep those weights"
        )
    model.params, model.state = params, state
    return report


def _without_counters(groups: dict[str, dict], report: TransferReport) -> dict[str, dict]:
    """``groups`` less BatchNorm's ``num_batches_tracked`` (reported skipped) and empty modules."""
    for prefix, t in groups.items():
        if t.pop("num_batches_tracked", None) is not None:
            report.skipped.append((_join(prefix, "num_batches_tracked"), "a counter"))
    return {p: t for p, t in groups.items() if t}


def _pair_modules(
    groups: dict[str, dict],
    layers: list[_Slot],
    mapping: Mapping[str, str | None] | None,
    modules: dict[str, Any],
    report: TransferReport,
) -> tuple[list[tuple[str, dict, _Slot]], list[str]]:
    """``(pairs, extra)``: ``(prefix, entries, slot)`` of each torch module paired with a layer
    (by ``mapping``, else in order), and the labels of the modules left over; the skipped
    entries and the layers left over (``report.missing``) go into ``report``."""
    slots = {s.name: s for s in layers}
    mapping = dict(mapping or {})
    for p, n in mapping.items():
        if p not in groups or (n is not None and n not in slots):
            raise ValueError(
                f"from_torch: mapping {p!r}: {n!r} names a missing module or layer; the torch "
                f"modules are {list(groups)}, the layers with weights {list(slots)}"
            )
    free = iter([s for s in slots.values() if s.name not in set(mapping.values())])
    pairs, extra = [], []
    for prefix, t in groups.items():
        if prefix in mapping and mapping[prefix] is None:
            report.skipped += [(_join(prefix, k), "mapped to None") for k in t]
            continue
        slot = slots[mapping[prefix]] if prefix in mapping else next(free, None)
        if slot is None:
            extra.append(_torch_label(prefix, t, modules))
            report.skipped += [(_join(prefix, k), "no wframe layer left") for k in t]
        else:
            pairs.append((prefix, t, slot))
    report.missing = [s.name for s in free]
    return pairs, extra


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _torch_label(prefix: str, t: dict, modules: dict) -> str:
    kind = type(modules[prefix]).__name__ if prefix in modules else _torch_kind(t) or "unknown"
    return f"torch module {prefix or '<root>'!r} ({kind}: {_shapes(t)})"


def _plan(model, pairs: list, modules: dict, report: TransferReport) -> tuple[dict, dict]:
    """The model's new params and state, every pair converted and checked first."""
    fns: dict[str, dict[str, Callable]] = {"params": {}, "state": {}}
    for prefix, t, slot in pairs:
        own = {"params": _sub(model.params, slot.name), "state": _sub(model.state, slot.name)}
        kind, want = _torch_kind(t), _kind_of(slot.layer)
        if kind is None:
            why = "its kind is not handled (Linear, Conv2d, BatchNorm, LayerNorm, LSTM/GRU/RNN)"
        elif kind != want:
            why = f"a {kind} cannot fill a {type(slot.layer).__name__}"
        else:
            why = _check_module(modules[prefix], slot.layer) if prefix in modules else None
        new = _from_torch(t, slot) if why is None else {}
        for tree in new:
            got = {k: v[0].shape for k, v in new[tree].items()}
            if got != {k: tuple(a.shape) for k, a in own[tree].items()}:
                why = f"it converts to {tree} {_shapes({k: v[0] for k, v in new[tree].items()})}"
        if why:
            raise ValueError(
                f"from_torch: {_torch_label(prefix, t, modules)} paired with wframe layer "
                f"{slot.name!r} ({type(slot.layer).__name__}: "
                f"{_shapes({**own['params'], **own['state']})}): {why}"
            )
        for tree, entries in new.items():
            for k, (a, src, note) in entries.items():
                ref, keys = own[tree][k], src.split(" + ")
                value = model.backend.asarray(np.ascontiguousarray(a, dtype=str(ref.dtype)))
                fns[tree][f"{slot.name}/{k}"] = _const(value)
                source = " + ".join(_join(prefix, s) for s in keys)
                row = (source, tuple(t[keys[0]].shape), f"{slot.name}/{k}", tuple(ref.shape), note)
                report.loaded.append(row)
    return map_at(model.params, fns["params"]), map_at(model.state, fns["state"])


def to_torch_state_dict(model: Sequential) -> dict[str, np.ndarray]:
    """The PyTorch twin's ``state_dict`` of a built model, as fresh NumPy arrays.

    The exact inverse of :func:`from_torch`: ``from_torch(other, to_torch_state_dict(model))``
    copies the weights bit for bit. Keys are those of an ``nn.Sequential`` twin with one module
    per wframe layer (``"0.weight"``, ``"3.running_var"``, nested chains ``"2.1.weight"``), a
    Dense or Conv2D with an activation counting as two (``nn.Linear`` then ``nn.ReLU``). Load a
    twin with ``twin.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})``; a twin
    that names its modules itself takes ``dict(zip(twin.state_dict(), sd.values()))`` (the same
    order); ``safetensors.numpy.save_file`` writes it. An LSTM/RNN bias goes to ``bias_ih_l0``
    (``bias_hh_l0`` is zero); a BatchNorm gets ``num_batches_tracked = 0``.
    """
    out: dict[str, np.ndarray] = {}
    for slot in _slots(model):
        layer = slot.layer
        if _kind_of(layer) is None:
            raise ValueError(
                f"to_torch_state_dict: {layer.label} ({slot.name!r}) has no PyTorch counterpart "
                f"here; handled: {[k.__name__ for k in _TORCH_KINDS]}"
            )
        p, s = (
            {k: to_numpy(a) for k, a in _sub(tree, slot.name).items()}
            for tree in (model.params, model.state)
        )
        if isinstance(layer, (wl.LSTM, wl.GRU, wl.SimpleRNN)):
            tensors = _rnn_to(p, layer)
        else:
            fields = _fields(layer, slot.perm)
            tensors = {k: back({**p, **s}[n]) for k, n, _, _, back, _ in fields if n in {**p, **s}}
        if isinstance(layer, wl.BatchNorm):
            tensors["num_batches_tracked"] = np.array(0, np.int64)
        out.update({_join(slot.torch, k): np.array(a, order="C") for k, a in tensors.items()})
    return out
