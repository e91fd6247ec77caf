"""Per-layer conversions between a PyTorch module's ``state_dict`` entries and wframe params.

One module's entries ``t`` (``{"weight": array, ...}``, host NumPy arrays keyed by their leaf
names) convert to ``{"params"|"state": {flat name: (array, torch keys, note)}}`` of one wframe
layer (:func:`from_torch`), and back (:func:`to_torch`). A recurrent module with
``num_layers > 1`` holds several wframe layers: :func:`rnn_layers` splits its entries per
layer (``weight_ih_l1``, ``weight_ih_l1_reverse``, ...) and each part pairs with one recurrent
layer or one :class:`~wframe.layers.Bidirectional`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from wframe import layers as wl
from wframe.layers import Conv1D, Embedding, MultiHeadAttention

__all__ = [
    "KINDS",
    "check_module",
    "from_torch",
    "kind_of",
    "module_kind",
    "rnn_layers",
    "to_torch",
    "torch_kinds",
]

Entries = dict[str, dict[str, tuple]]  # {"params"|"state": {flat name: (array, keys, note)}}

#: wframe layer -> the PyTorch module kind that holds the same weights.
KINDS = {
    wl.Dense: "Linear",
    wl.Conv2D: "Conv2d",
    Conv1D: "Conv1d",
    Embedding: "Embedding",
    wl.BatchNorm: "BatchNorm",
    wl.LayerNorm: "LayerNorm",
    wl.RMSNorm: "RMSNorm",
    MultiHeadAttention: "MultiheadAttention",
    wl.LSTM: "LSTM",
    wl.GRU: "GRU",
    wl.SimpleRNN: "RNN",
}
_RECURRENT = (wl.LSTM, wl.GRU, wl.SimpleRNN)
_RNN_KEY = re.compile(r"(weight|bias)_(ih|hh)_l(\d+)(_reverse)?")
_MHA_KEYS = {
    "in_proj_weight",
    "in_proj_bias",
    "q_proj_weight",
    "k_proj_weight",
    "v_proj_weight",
    "out_proj.weight",
    "out_proj.bias",
}
_FLAT = "NCHW -> NHWC rows (after Flatten)"


# ------------------------------------------------------------------ kinds
def kind_of(layer: wl.Layer) -> str | None:
    """The PyTorch module kind holding ``layer``'s weights (``"bidirectional GRU"`` for a
    Bidirectional of two GRUs), or ``None`` if there is none."""
    if isinstance(layer, wl.Bidirectional):
        (_, fwd), (_, bwd) = layer.children()
        same = type(fwd) is type(bwd) and isinstance(fwd, _RECURRENT) and fwd.units == bwd.units
        return f"bidirectional {kind_of(fwd)}" if same else None
    return next((v for k, v in KINDS.items() if isinstance(layer, k)), None)


def torch_kinds(t: Mapping[str, np.ndarray]) -> tuple[str, ...]:
    """The module kinds a group of entries may come from (several where the entries alone
    cannot tell: a bias-free Linear and an Embedding), or ``()`` if unsupported."""
    keys = set(t)
    if keys and all(_RNN_KEY.fullmatch(k) for k in keys):
        return _rnn_kind(t)
    if "out_proj.weight" in keys and keys <= _MHA_KEYS:
        return ("MultiheadAttention",)
    if {"running_mean", "running_var"} <= keys <= {"weight", "bias", "running_mean", "running_var"}:
        return ("BatchNorm",)
    if "weight" in keys and keys <= {"weight", "bias"}:
        ndim = t["weight"].ndim
        if ndim == 2:
            return ("Linear",) if "bias" in keys else ("Linear", "Embedding")
        if ndim == 1:  # nn.LayerNorm(bias=False) has a weight only too
            return ("LayerNorm",) if "bias" in keys else ("RMSNorm", "LayerNorm")
        return {4: ("Conv2d",), 3: ("Conv1d",)}.get(ndim, ())
    return ()


def rnn_layers(t: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """``t`` split per layer of a recurrent module (``[t]`` for any other module)."""
    matches = {k: _RNN_KEY.fullmatch(k) for k in t}
    if not t or not all(matches.values()):
        return [t]
    layers: dict[int, dict[str, np.ndarray]] = {}
    for k, m in matches.items():
        layers.setdefault(int(m.group(3)), {})[k] = t[k]
    return [layers[i] for i in sorted(layers)]


def _rnn_kind(t: Mapping[str, np.ndarray]) -> tuple[str, ...]:
    found = [_RNN_KEY.fullmatch(k) for k in t]
    layers, directions = {m.group(3) for m in found}, {m.group(4) or "" for m in found}
    sfx = f"_l{min(layers)}"
    try:
        gates = {
            t[f"weight_ih{sfx}{d}"].shape[0] // max(t[f"weight_hh{sfx}{d}"].shape[1], 1)
            for d in directions
        }
    except KeyError:  # a direction without both weights
        return ()
    kind = {4: "LSTM", 3: "GRU", 1: "RNN"}.get(gates.pop()) if len(gates) == 1 else None
    if kind is None or len(layers) != 1:
        return ()
    return (f"bidirectional {kind}" if "_reverse" in directions else kind,)


def module_kind(module: Any) -> str | None:
    """The kind of a torch module by its class (``BatchNorm2d`` -> ``"BatchNorm"``, a
    bidirectional ``nn.GRU`` -> ``"bidirectional GRU"``), ``None`` for other classes."""
    name = re.sub(r"[123]d$", "", type(module).__name__)
    name = "Linear" if name == "NonDynamicallyQuantizableLinear" else name
    if name in ("LSTM", "GRU", "RNN") and getattr(module, "bidirectional", False):
        return f"bidirectional {name}"
    return name if name in (*KINDS.values(), "Conv") else None


def check_module(module: Any, layer: wl.Layer, in_shape: tuple | None = None) -> str | None:
    """What a state dict cannot tell but the module can: epsilon, strides, dilation, padding
    (against the layer's input shape ``in_shape`` where a stride makes it matter), heads."""
    if hasattr(module, "eps") and hasattr(layer, "epsilon"):
        # nn.RMSNorm's eps=None is the input dtype's machine epsilon
        eps = float(np.finfo(np.float32).eps) if module.eps is None else module.eps
        if not math.isclose(eps, layer.epsilon, rel_tol=1e-6):
            return (
                f"its eps={module.eps} differs from epsilon={layer.epsilon}; build the twins "
                "with the same epsilon (wframe's BatchNorm defaults to 1e-3, PyTorch's to 1e-5)"
            )
    if isinstance(layer, (wl.Conv2D, Conv1D)):
        got = (tuple(module.stride), tuple(module.dilation), module.groups)
        if got != (tuple(layer.strides), tuple(layer.dilation_rate), 1):
            return f"its (stride, dilation, groups) {got} differ from the layer's"
        return _padding_mismatch(module, layer, in_shape)
    if isinstance(layer, wl.SimpleRNN) and module.nonlinearity != layer.activation:
        return f"its nonlinearity={module.nonlinearity!r} differs from {layer.activation!r}"
    if isinstance(layer, wl.Bidirectional):
        return check_module(module, layer.children()[0][1], in_shape)
    if isinstance(layer, Embedding) and module.max_norm is not None:
        return f"its max_norm={module.max_norm} renormalizes rows, which Embedding does not"
    if isinstance(layer, MultiHeadAttention):
        if module.num_heads != layer.num_heads:
            return f"its num_heads={module.num_heads} differs from {layer.num_heads}"
        if module.bias_k is not None or module.add_zero_attn:
            return "its add_bias_kv / add_zero_attn have no wframe counterpart"
    return None


def _padding_mismatch(module: Any, layer: wl.Layer, in_shape: tuple | None) -> str | None:
    pads = module.padding
    padded = pads == "same" or (pads != "valid" and any(pads))
    mode = getattr(module, "padding_mode", "zeros")
    if padded and mode != "zeros":
        return f"its padding_mode={mode!r} differs from the layer's zeros"
    if layer.padding == "valid" and padded:
        return f"its padding={pads} differs from padding='valid'"
    if layer.padding == "causal":  # PyTorch's idiom: pad span on both sides, keep the first T
        span = module.dilation[0] * (module.kernel_size[0] - 1)
        if pads == "same" or (pads == "valid" and span) or (pads != "valid" and pads[0] != span):
            return (
                f"its padding={pads} differs from padding='causal' (PyTorch's causal "
                f"convolution pads {span} on both sides and keeps the first steps)"
            )
        return None
    if layer.padding != "same" or pads == "same":
        return None
    if all(s == 1 for s in layer.strides):
        # stride 1: TensorFlow's "same" pads span - 1 split with the odd one on the right,
        # PyTorch's int padding p pads p on both sides
        spans = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size, strict=True)]
        if pads == "valid" or any(s % 2 or p != s // 2 for s, p in zip(spans, pads, strict=True)):
            return f"its padding={pads} differs from padding='same' (PyTorch: padding='same')"
        return None
    return _strided_same_mismatch(module, layer, in_shape)


def _strided_same_mismatch(module: Any, layer: wl.Layer, in_shape: tuple | None) -> str | None:
    """With a stride, TensorFlow's "same" pads by where the input's size falls in it (for a
    3x3 kernel, stride 2: 0 before and 1 after on an even size, 1 and 1 on an odd one): the
    windows are PyTorch's only where its padding before is that and the output sizes agree."""
    sizes = None if in_shape is None else in_shape[1:-1]
    if module.padding == "valid" or not sizes or any(n is None for n in sizes):
        return (
            f"its padding={module.padding} cannot be checked against padding='same' with "
            f"strides {tuple(layer.strides)} on inputs of unknown size"
        )
    kernel, dilation, strides = module.kernel_size, module.dilation, layer.strides
    parts = zip(sizes, kernel, dilation, strides, module.padding, strict=True)
    for n, k, d, s, p in parts:
        span = d * (k - 1) + 1
        total = max((-(-n // s) - 1) * s + span - n, 0)
        if total // 2 != p or (n + 2 * p - span) // s + 1 != -(-n // s):
            return (
                f"its padding={module.padding} pads {p} before each side, where padding='same' "
                f"with stride {s} pads {total // 2} before and {total - total // 2} after an "
                f"input of {n}: the windows differ (build the twin for an input size where "
                "they agree, or give the torch module padding that matches)"
            )
    return None


# ------------------------------------------------------------------ one-to-one layers
def _fields(layer: wl.Layer, perm: np.ndarray | None) -> list[tuple]:
    """``(torch key, wframe name, tree, to wframe, to torch, note)`` of a one-to-one layer."""
    same = lambda a: a  # noqa: E731
    inverse = None if perm is None else np.argsort(perm)
    rows = same if perm is None else lambda a: a[perm]
    unrows = same if perm is None else lambda a: a[inverse]
    note = "" if perm is None else _FLAT
    bias = ("bias", "b", "params", same, same, "")
    if isinstance(layer, wl.Dense):
        t = "transposed" + (", " + _FLAT if note else "")
        return [("weight", "W", "params", lambda a: rows(a.T), lambda a: unrows(a).T, t), bias]
    if isinstance(layer, wl.Conv2D):
        to = (lambda a: a.transpose(2, 3, 1, 0), lambda a: a.transpose(3, 2, 0, 1))
        return [("weight", "W", "params", *to, "OIHW -> HWIO"), bias]
    if isinstance(layer, Conv1D):
        flip = lambda a: a.transpose(2, 1, 0)  # noqa: E731 (its own inverse)
        return [("weight", "W", "params", flip, flip, "(out, in, k) -> (k, in, out)"), bias]
    if isinstance(layer, Embedding):
        return [("weight", "embeddings", "params", same, same, "")]
    if isinstance(layer, wl.RMSNorm):
        return [("weight", "scale", "params", rows, unrows, note)]
    names = [("weight", "gamma", "params"), ("bias", "beta", "params")]
    if isinstance(layer, wl.BatchNorm):
        names += [("running_mean", "mean", "state"), ("running_var", "var", "state")]
    return [(k, n, tree, rows, unrows, note) for k, n, tree in names]


# ------------------------------------------------------------------ recurrent layers
def _blocks(a: np.ndarray, order: tuple, units: int) -> np.ndarray:
    return np.concatenate([a[k * units : (k + 1) * units] for k in order], axis=0)


def _gates(layer: wl.Layer) -> tuple:
    # PyTorch's GRU gates are r, z, n and wframe's (Keras') z, r, h: a swap, its own inverse.
    # LSTM: i, f, g, o in both.
    return (1, 0, 2) if isinstance(layer, wl.GRU) else tuple(range(layer.gates))


def _rnn_from(t: dict, layer: wl.Layer, sfx: str) -> dict[str, tuple]:
    """One direction of one layer (``sfx``: ``"_l0"``, ``"_l1_reverse"``...) of a module."""
    wi, wh = t[f"weight_ih{sfx}"], t[f"weight_hh{sfx}"]
    u, order = wh.shape[1], _gates(layer)
    note = "gates r, z, n -> z, r, h" if isinstance(layer, wl.GRU) else "transposed"
    zeros = np.zeros(wi.shape[0], wi.dtype)
    bi, bh = t.get(f"bias_ih{sfx}", zeros), t.get(f"bias_hh{sfx}", zeros)
    p = {
        "W_x": (_blocks(wi, order, u).T, f"weight_ih{sfx}", note),
        "W_h": (_blocks(wh, order, u).T, f"weight_hh{sfx}", note),
    }
    if isinstance(layer, wl.GRU):  # reset_after: b_hh stays inside r * (h @ W_h + b_h)
        p["b"] = (_blocks(bi, order, u), f"bias_ih{sfx}", note)
        p["b_h"] = (_blocks(bh, order, u), f"bias_hh{sfx}", note)
    else:  # both biases enter the same pre-activation: they add
        p["b"] = (bi + bh, f"bias_ih{sfx} + bias_hh{sfx}", "the two biases add")
    return p


def _rnn_to(p: dict, layer: wl.Layer, sfx: str) -> dict[str, np.ndarray]:
    u, order = p["W_h"].shape[0], _gates(layer)
    return {
        f"weight_ih{sfx}": _blocks(p["W_x"].T, order, u),
        f"weight_hh{sfx}": _blocks(p["W_h"].T, order, u),
        f"bias_ih{sfx}": _blocks(p["b"], order, u),
        f"bias_hh{sfx}": _blocks(p["b_h"], order, u) if "b_h" in p else np.zeros_like(p["b"]),
    }


def _directions(layer: wl.Layer, sfx: str) -> list[tuple[str, wl.Layer, str]]:
    """``(params prefix, recurrent layer, torch suffix)`` of each direction of ``layer``."""
    if isinstance(layer, wl.Bidirectional):
        (_, fwd), (_, bwd) = layer.children()
        return [("forward/", fwd, sfx), ("backward/", bwd, f"{sfx}_reverse")]
    return [("", layer, sfx)]


# ------------------------------------------------------------------ multi-head attention
_QKV = ("query", "key", "value")


def _mha_from(t: dict, layer: MultiHeadAttention) -> dict[str, tuple]:
    h, p = layer.num_heads, {}
    if "in_proj_weight" in t:  # rows [q; k; v] of one (3E, E) matrix
        ws = np.split(t["in_proj_weight"], 3, axis=0)
        src = [("in_proj_weight", f"rows of {n}, transposed, heads split") for n in "qkv"]
    else:  # kdim or vdim differ from E: three matrices
        ws = [t[f"{n}_proj_weight"] for n in "qkv"]
        src = [(f"{n}_proj_weight", "transposed, heads split") for n in "qkv"]
    for name, w, (key, note) in zip(_QKV, ws, src, strict=True):
        p[f"{name}/W"] = (w.T.reshape(w.shape[1], h, -1), key, note)
    if "in_proj_bias" in t:
        for name, n, b in zip(_QKV, "qkv", np.split(t["in_proj_bias"], 3), strict=True):
            p[f"{name}/b"] = (b.reshape(h, -1), "in_proj_bias", f"part of {n}, heads split")
    wo = t["out_proj.weight"]
    p["output/W"] = (wo.T.reshape(h, -1, wo.shape[0]), "out_proj.weight", "transposed, heads")
    if "out_proj.bias" in t:
        p["output/b"] = (t["out_proj.bias"], "out_proj.bias", "")
    return p


def _mha_to(p: dict) -> dict[str, np.ndarray]:
    ws = [p[f"{n}/W"].reshape(p[f"{n}/W"].shape[0], -1).T for n in _QKV]
    if all(w.shape == ws[0].shape for w in ws) and ws[0].shape[0] == ws[0].shape[1]:
        out = {"in_proj_weight": np.concatenate(ws, axis=0)}
    else:  # as torch stores them when kdim or vdim differ from embed_dim
        out = {f"{n}_proj_weight": w for n, w in zip("qkv", ws, strict=True)}
    if "query/b" in p:
        out["in_proj_bias"] = np.concatenate([p[f"{n}/b"].ravel() for n in _QKV])
    wo = p["output/W"]
    out["out_proj.weight"] = wo.reshape(-1, wo.shape[-1]).T
    if "output/b" in p:
        out["out_proj.bias"] = p["output/b"]
    return out


# ------------------------------------------------------------------ both ways
def from_torch(t: dict, layer: wl.Layer, perm: np.ndarray | None) -> Entries:
    """``{"params"|"state": {flat name: (array, torch keys, note)}}`` of one module's entries
    ``t`` (one layer's, for a recurrent module) for ``layer``."""
    if isinstance(layer, (*_RECURRENT, wl.Bidirectional)):
        sfx = "_l" + _RNN_KEY.fullmatch(next(iter(t))).group(3)
        params = {
            f"{prefix}{k}": v
            for prefix, child, s in _directions(layer, sfx)
            for k, v in _rnn_from(t, child, s).items()
        }
        return {"params": params, "state": {}}
    if isinstance(layer, MultiHeadAttention):
        return {"params": _mha_from(t, layer), "state": {}}
    new: Entries = {"params": {}, "state": {}}
    for key, ours, tree, to_wframe, _, note in _fields(layer, perm):
        if key in t:
            new[tree][ours] = (to_wframe(t[key]), key, note)
    return new


def to_torch(p: dict, s: dict, layer: wl.Layer, perm: np.ndarray | None) -> dict[str, np.ndarray]:
    """The module entries of ``layer`` from its flat params ``p`` and state ``s`` (host
    arrays), in PyTorch's order; a recurrent layer as layer 0 of its own module."""
    if isinstance(layer, (*_RECURRENT, wl.Bidirectional)):
        out = {}
        for prefix, child, sfx in _directions(layer, "_l0"):
            sub = {k.removeprefix(prefix): a for k, a in p.items() if k.startswith(prefix)}
            out.update(_rnn_to(sub, child, sfx))
        return out
    if isinstance(layer, MultiHeadAttention):
        return _mha_to(p)
    both = {**p, **s}
    out = {k: back(both[n]) for k, n, _, _, back, _ in _fields(layer, perm) if n in both}
    if isinstance(layer, wl.BatchNorm):
        out["num_batches_tracked"] = np.array(0, np.int64)
    return out
