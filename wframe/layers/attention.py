"""MultiHeadAttention: Keras 3's layer, its weight layout and its masking, with a hand-written VJP.

The arithmetic runs on (batch, heads, time, head_dim) arrays: the projections are one GEMM each
on the (batch * time, features) rows, and the two attention products are batched ``matmul``s over
(batch, heads), which NumPy and CuPy hand to BLAS matrix by matrix without copies.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from wframe import initializers
from wframe.backends import array_namespace
from wframe.layers.base import Layer
from wframe.layers.core import Dropout
from wframe.random import split

# The input projections, in the order the forward keeps their rows.
_PROJ = ("query", "key", "value")


def _heads(z, batch: int, steps: int, heads: int):
    """(batch * steps, heads * d) rows -> a (batch, heads, steps, d) view."""
    xp = array_namespace(z)
    return xp.permute_dims(xp.reshape(z, (batch, steps, heads, -1)), (0, 2, 1, 3))


def _rows(z):
    """(batch, heads, steps, d) -> (batch * steps, heads * d) rows (one copy)."""
    xp = array_namespace(z)
    b, h, t, d = z.shape
    return xp.reshape(xp.permute_dims(z, (0, 2, 1, 3)), (b * t, h * d))


def _dense(rows, p):
    """``rows @ W + b`` with ``W`` flattened to (in, heads * d) (or (heads * d, out))."""
    xp = array_namespace(rows)
    W = p["W"]
    z = xp.matmul(rows, xp.reshape(W, (rows.shape[1], -1)))
    return z + xp.reshape(p["b"], (-1,)) if "b" in p else z


def _dense_back(dz, rows, p, need, input_grad: bool):
    """``(d rows, grads)`` of :func:`_dense` for the params named in ``need`` (None: all)."""
    xp = array_namespace(dz)
    W = p["W"]
    grads = {}
    if need is None or "W" in need:
        grads["W"] = xp.reshape(xp.matmul(rows.mT, dz), W.shape)
    if "b" in p and (need is None or "b" in need):
        grads["b"] = xp.reshape(xp.sum(dz, axis=0), p["b"].shape)
    drows = xp.matmul(dz, xp.reshape(W, (rows.shape[1], -1)).mT) if input_grad else None
    return drows, grads


def _mask(xp, mask, causal: bool, tq: int, tk: int):
    """The boolean (batch or 1, 1, tq, tk) mask of allowed (query, key) pairs, or None."""
    allowed = None
    if mask is not None:
        if mask.dtype != xp.bool:
            mask = mask != xp.asarray(0, dtype=mask.dtype)  # Keras casts to bool: nonzero attends
        allowed = xp.reshape(mask, (-1, 1, tq, tk))
    if causal:  # Keras: query i attends keys j <= i (top-left aligned when tq != tk)
        rows = xp.reshape(xp.arange(tq), (tq, 1))
        lower = xp.reshape(rows >= xp.reshape(xp.arange(tk), (1, tk)), (1, 1, tq, tk))
        allowed = lower if allowed is None else xp.logical_and(allowed, lower)
    return allowed


def _masked_softmax(scores, allowed, zero_masked: bool):
    """Keras' ``Softmax(mask=...)``: masked scores become a large negative number, the softmax
    is max-shifted, and (``zero_masked``) masked weights are set to 0, so a fully masked row
    gets all-zero weights rather than a uniform distribution."""
    xp = array_namespace(scores)
    dt = scores.dtype
    if allowed is not None:
        # Keras writes -1e9 (-3e4 in float16) into masked scores; adding it instead (an
        # additive bias over (batch, 1, tq, tk), broadcast over the heads) is one cheap pass,
        # and the weights are the same: exp of either underflows to exactly 0.
        half = getattr(dt, "name", None) == "float16"
        fill = xp.asarray(-3e4 if half else -1e9, dtype=dt)
        scores = scores + xp.where(allowed, xp.asarray(0, dtype=dt), fill)
    e = xp.exp(scores - xp.max(scores, axis=-1, keepdims=True))
    p = e * (1.0 / xp.sum(e, axis=-1, keepdims=True))
    if allowed is not None and zero_masked:
        p = p * xp.astype(allowed, dt)
    return p


@dataclass(frozen=True)
class MultiHeadAttention(Layer):
    """Multi-head scaled dot-product attention (Keras 3 ``MultiHeadAttention``).

    ``Q = query @ Wq + bq``, ``K = key @ Wk + bk``, ``V = value @ Wv + bv`` per head,
    ``weights = softmax(Q K^T / sqrt(key_dim))`` over the keys (masked), dropout on the weights
    in training, ``y = concat_heads(weights V) @ Wo + bo``. Inputs are 3-D, (batch, time,
    features); the output is (batch, query time, ``output_shape`` or the query's features).

    Called on symbolic tensors as Keras, ``mha(query, value, key=None, attention_mask=None,
    use_causal_mask=False)``: ``forward`` then gets ``x = (query, value, key)`` (``key`` is
    ``value`` when not given) plus the mask as a fourth entry, and ``use_causal_mask`` as a
    keyword; ``backprop`` returns ``(dquery, dvalue, dkey[, None])``. A single array ``x`` (in
    a plain chain) is self-attention, ``query = value = key = x``, and gets one gradient.

    Keras 3 -> wframe: the ``EinsumDense`` sublayers ``query``/``key``/``value``/
    ``attention_output`` are ``params["query"|"key"|"value"|"output"]``, each ``{"W", "b"}``
    with Keras' kernel and bias shapes: ``query/W`` (query features, heads, key_dim),
    ``query/b`` (heads, key_dim), ``key/W`` (key features, heads, key_dim), ``value/W`` (value
    features, heads, value_dim), ``value/b`` (heads, value_dim), ``output/W`` (heads, value_dim,
    out), ``output/b`` (out,): Keras weights copy over as they are. The query is scaled by
    ``1 / sqrt(key_dim)`` after its projection, as Keras. ``kernel_initializer`` and
    ``bias_initializer`` are ``kernel_init`` and ``bias_init`` (drawn per kernel with Keras'
    fans: glorot_uniform of (d, heads, key_dim) has fan_in = d * heads, fan_out = d * key_dim).
    Not supported: ``attention_axes`` (attention runs over the time axis), ``output_shape`` of
    more than one axis, ``return_attention_scores``, Keras' implicit ``query_mask``/
    ``value_mask``, regularizers, constraints and ``seed`` (dropout draws from the model's key).

    Masking follows Keras' explicit-scores path: ``attention_mask`` (batch or 1, query time,
    key time), bool or numbers (nonzero = attend), is combined (and) with the causal mask;
    masked scores become -1e9 (-3e4 in float16) before the max-shifted softmax, and masked
    weights are then set to 0, so a query row with no allowed key gets all-zero weights
    (output = the output bias). PyTorch gives NaN there.

    Dropout draws its mask from the array key as :class:`~wframe.layers.Dropout` does (one key,
    the same mask on NumPy, CuPy and JAX); the layer takes a key only when ``dropout > 0``.

    Args:
      num_heads: number of attention heads.
      key_dim: size of each head of the query and key projections.
      value_dim: size of each head of the value projection (default ``key_dim``).
      dropout: dropout rate on the attention weights in training, in [0, 1).
      use_bias: add biases to the four projections.
      output_shape: features of the output (an int, or a one-int tuple as Keras); default the
        query's features.
      kernel_init: initializer of the four kernels (name or callable).
      bias_init: initializer of the biases.
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).
    """

    num_heads: int
    key_dim: int
    value_dim: int | None = None
    dropout: float = 0.0
    use_bias: bool = True
    output_shape: int | None = None
    kernel_init: str | Callable = "glorot_uniform"
    bias_init: str | Callable = "zeros"

    selective_grads = True

    def __post_init__(self):
        object.__setattr__(self, "num_heads", self.positive_int("num_heads", self.num_heads))
        object.__setattr__(self, "key_dim", self.positive_int("key_dim", self.key_dim))
        value_dim = self.key_dim if self.value_dim is None else self.value_dim
        object.__setattr__(self, "value_dim", self.positive_int("value_dim", value_dim))
        out = self.output_shape
        if isinstance(out, (tuple, list)):
            if len(out) != 1:
                raise ValueError(
                    f"{self.label}: output_shape must be an int (or a tuple of one int), got "
                    f"{out!r}; project to a flat size and reshape after the layer"
                )
            out = out[0]
        if out is not None:
            object.__setattr__(self, "output_shape", self.positive_int("output_shape", out))
        rate = self.dropout
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ValueError(f"{self.label}: dropout must be a number in [0, 1), got {rate!r}")
        if not isinstance(self.use_bias, bool):
            raise ValueError(f"{self.label}: use_bias must be a bool, got {self.use_bias!r}")
        initializers.get(self.kernel_init)
        initializers.get(self.bias_init)
        object.__setattr__(self, "_dropout", Dropout(rate) if rate > 0 else None)

    @property
    def uses_key(self) -> bool:
        return self.dropout > 0

    def call_args(
        self,
        query: Any = None,
        value: Any = None,
        key: Any = None,
        *extra: Any,
        attention_mask: Any = None,
        use_causal_mask: bool = False,
        **unsupported: Any,
    ) -> tuple[Any, dict[str, Any]]:
        """Keras' call ``(query, value, key=None, attention_mask=None, use_causal_mask=False)``
        as ``((query, value, key or value[, attention_mask]), {"use_causal_mask": bool})``."""
        if query is None or value is None or extra or unsupported:
            raise TypeError(
                f"{self.label} is called as mha(query, value, key=None, attention_mask=None, "
                f"use_causal_mask=False) (self-attention: mha(x, x)); got "
                f"{'no value, ' if value is None else ''}{len(extra)} extra positional and "
                f"unsupported keyword arguments {sorted(unsupported)}"
            )
        if not isinstance(use_causal_mask, bool):
            raise TypeError(
                f"{self.label}: use_causal_mask must be a bool, got {use_causal_mask!r}"
            )
        inputs = (query, value, value if key is None else key)
        if attention_mask is not None:
            inputs = (*inputs, attention_mask)
        return inputs, {"use_causal_mask": use_causal_mask}

    def _shapes(self, in_shape) -> tuple:
        """``(query, value, key, mask or None)`` shapes, checked."""
        shapes = tuple(tuple(s) for s in in_shape) if _is_tuple_of_shapes(in_shape) else None
        if shapes is None:
            shapes = (tuple(in_shape),) * 3
        if len(shapes) not in (3, 4):
            raise ValueError(
                f"{self.label} takes (query, value, key) or (query, value, key, attention_mask) "
                f"shapes, got {len(shapes)} shapes {shapes}"
            )
        for what, shape in zip(("query", "value", "key"), shapes[:3], strict=True):
            self.expect_rank(shape, 3, f"(batch, time, features) as {what}")
            if shape[-1] is None:
                raise ValueError(f"{self.label} needs known {what} features, got shape {shape}")
        q, v, k = shapes[:3]
        if None not in (v[1], k[1]) and v[1] != k[1]:
            raise ValueError(
                f"{self.label}: value and key must have the same time axis, got value shape "
                f"{v} and key shape {k}"
            )
        mask = shapes[3] if len(shapes) == 4 else None
        if mask is not None and (len(mask) != 3 or not _fits(mask[1:], (q[1], v[1]))):
            raise ValueError(
                f"{self.label}: attention_mask must have shape (batch, {q[1]}, {v[1]}) "
                f"(query time, key time), got {mask}"
            )
        return q, v, k, mask

    def init(self, key, in_shape, *, dtype="float32"):
        q, v, k, _ = self._shapes(in_shape)
        h, out = self.num_heads, self.output_shape or q[-1]
        kernel, bias = initializers.get(self.kernel_init), initializers.get(self.bias_init)
        shapes = {
            "query": ((q[-1], h, self.key_dim), (h, self.key_dim)),
            "key": ((k[-1], h, self.key_dim), (h, self.key_dim)),
            "value": ((v[-1], h, self.value_dim), (h, self.value_dim)),
            "output": ((h, self.value_dim, out), (out,)),
        }
        params = {}
        for (name, (w_shape, b_shape)), sub_key in zip(shapes.items(), split(key, 4), strict=True):
            kw, kb = split(sub_key)
            params[name] = {"W": kernel(kw, w_shape, dtype)}
            if self.use_bias:
                params[name]["b"] = bias(kb, b_shape, dtype)
        return params, {}, (q[0], q[1], out)

    def _inputs(self, params, x) -> tuple:
        """``(query, value, key, mask or None)`` from ``x``, checked against ``params``."""
        if not isinstance(x, (tuple, list)):
            x = (x, x, x)
        if len(x) not in (3, 4):
            raise ValueError(
                f"{self.label} takes one array (self-attention) or a tuple (query, value, key"
                f"[, attention_mask]), got a tuple of {len(x)} arrays"
            )
        q, v, k = x[:3]
        mask = x[3] if len(x) == 4 else None
        for what, a in (("query", q), ("value", v), ("key", k)):
            d = params[what]["W"].shape[0]
            if a.ndim != 3 or a.shape[-1] != d or a.shape[0] != q.shape[0]:
                raise ValueError(
                    f"{self.label} expects {what} of shape ({q.shape[0]}, time, {d}), got array "
                    f"of shape {tuple(a.shape)}"
                )
        if k.shape[1] != v.shape[1]:
            raise ValueError(
                f"{self.label}: value and key must have the same time axis, got value shape "
                f"{tuple(v.shape)} and key shape {tuple(k.shape)}"
            )
        want = (q.shape[1], v.shape[1])
        if mask is not None and (
            tuple(mask.shape[-2:]) != want
            or mask.ndim not in (2, 3)
            or (mask.ndim == 3 and mask.shape[0] not in (1, q.shape[0]))
        ):
            raise ValueError(
                f"{self.label}: attention_mask must have shape ({q.shape[0]}, {want[0]}, "
                f"{want[1]}) (batch, query time, key time), got {tuple(mask.shape)}"
            )
        return q, v, k, mask

    def forward(self, params, state, x, *, train=False, key=None, vjp=True, use_causal_mask=False):
        q, v, k, mask = self._inputs(params, x)
        xp = array_namespace(q)
        h, (b, tq, _), tk = self.num_heads, q.shape, v.shape[1]
        rows = tuple(xp.reshape(a, (b * a.shape[1], a.shape[2])) for a in (q, k, v))
        # The query is scaled after its projection, as Keras does.
        Q = _heads(_dense(rows[0], params["query"]), b, tq, h) * (1.0 / math.sqrt(self.key_dim))
        K = _heads(_dense(rows[1], params["key"]), b, tk, h)
        V = _heads(_dense(rows[2], params["value"]), b, tk, h)
        allowed = _mask(xp, mask, use_causal_mask, tq, tk)
        # Without an attention_mask no row is fully masked (causal row i keeps key 0), and the
        # masked weights are exact zeros already: the zeroing pass is skipped.
        P = _masked_softmax(xp.matmul(Q, K.mT), allowed, zero_masked=mask is not None)
        Pd, drop_back = P, None
        if train and self._dropout is not None:
            if key is None:
                raise ValueError(
                    f"{self.label} draws a dropout mask when train=True and needs an array key "
                    "(wframe.random.array_key(seed, step); Sequential.fit passes one), got None"
                )
            Pd, _, drop_back = self._dropout.forward({}, {}, P, train=True, key=key)
        C = _rows(xp.matmul(Pd, V))
        y = xp.reshape(_dense(C, params["output"]), (b, tq, -1))
        if not vjp:
            return y, state, None
        saved = _Saved(rows, Q, K, V, P, Pd, C, drop_back)
        shapes = (q.shape, k.shape, v.shape)
        single = not isinstance(x, (tuple, list))

        def backprop(dy, input_grad=True, need=None):
            dxs, grads = self._backprop(params, saved, dy, input_grad, need)
            if dxs is None:
                return None, grads
            dq, dk, dv = (xp.reshape(d, s) for d, s in zip(dxs, shapes, strict=True))
            if single:
                return dq + dk + dv, grads
            return ((dq, dv, dk) if mask is None else (dq, dv, dk, None)), grads

        return y, state, backprop

    def _backprop(self, params, saved: _Saved, dy, input_grad: bool, need):
        """``((d query rows, d key rows, d value rows) or None, grads)``."""
        xp = array_namespace(dy)
        rows, Q, K, V, P, Pd, C, drop_back = saved
        b, h, tq, _ = Q.shape
        grads = {}
        dO, grads["output"] = _dense_back(
            xp.reshape(dy, (b * tq, -1)), C, params["output"], _part(need, "output"), True
        )
        dO = _heads(dO, b, tq, h)
        wanted = [input_grad or _part(need, n) != {} for n in _PROJ]
        dP = xp.matmul(dO, V.mT) if wanted[0] or wanted[1] else None
        if dP is not None and drop_back is not None:
            dP = drop_back(dP)[0]
        dS = None
        if dP is not None:  # softmax VJP; masked entries of P are 0, so theirs vanish
            t = dP * P
            dS = t - P * xp.sum(t, axis=-1, keepdims=True)
        scale = 1.0 / math.sqrt(self.key_dim)
        dheads = (
            xp.matmul(dS, K) * scale if wanted[0] else None,
            xp.matmul(dS.mT, Q) if wanted[1] else None,  # Q is already scaled
            xp.matmul(Pd.mT, dO) if wanted[2] else None,
        )
        dxs = []
        for name, r, dz in zip(_PROJ, rows, dheads, strict=True):
            if dz is None:
                dxs.append(None)
                continue
            dr, g = _dense_back(_rows(dz), r, params[name], _part(need, name), input_grad)
            dxs.append(dr)
            if g:
                grads[name] = g
        if not grads["output"]:
            del grads["output"]
        return (tuple(dxs) if input_grad else None), grads


class _Saved(NamedTuple):
    """What the forward keeps for the backward: the input rows (query, key, value), the
    projected heads (Q scaled), the softmax weights before and after dropout, the merged
    heads (C) and the dropout's backprop."""

    rows: tuple
    Q: Any
    K: Any
    V: Any
    P: Any
    Pd: Any
    merged: Any
    drop_back: Any


def _part(need, name: str):
    """The part of ``need`` for sublayer ``name``: None (all), or a dict ({}: nothing)."""
    return None if need is None else need.get(name, {})


def _is_tuple_of_shapes(in_shape) -> bool:
    return len(in_shape) > 0 and all(isinstance(s, (tuple, list)) for s in in_shape)


def _fits(shape, want) -> bool:
    """Whether the known sizes of ``shape`` agree with those of ``want``."""
    return all(a is None or w is None or a == w for a, w in zip(shape, want, strict=True))
