"""Recurrent layers: SimpleRNN, LSTM and GRU over (batch, time, features) inputs.

Every layer holds ``W_x`` (features, gates * units), ``W_h`` (units, gates * units) and ``b``
(gates * units,), the gates concatenated along the last axis, and applies the SAME weights at
every time step. The input projection ``x @ W_x + b`` of all steps is one matmul before the time
loop; the loop itself is the backend's :meth:`~wframe.backends.base.Backend.scan` (``lax.scan``
on JAX, so ``jit`` compiles one loop body instead of unrolling ``T`` copies).

On NumPy/CuPy the step also returns its intermediates (gates, pre-activations) and ``backprop``
runs backprop through time: a reverse loop over the steps that carries ``dh`` (and ``dc``),
collects the gradient of every step's pre-activations, and turns them into ``dW_x``, ``dW_h``,
``db`` and ``dx`` with a few matmuls after the loop. JAX differentiates the forward instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wframe import activations, initializers
from wframe.backends import array_namespace, backend_of
from wframe.layers.base import Layer
from wframe.random import split
from wframe.regularizers import Regularizer
from wframe.types import Array, Key, Params, Shape, State

Carry = tuple[Array, ...]
# Word breaks of a CamelCase name that keep acronyms whole: SimpleRNN -> Simple_RNN.
_WORD_BREAK = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def _sig(x: Array) -> Array:
    # 0.5 + 0.5 tanh(x / 2) is the logistic function exactly, never overflows, and is one
    # transcendental with no branch: the exp/where form costs the JAX cells ~1.8x (issue 10).
    xp = array_namespace(x)
    return 0.5 + 0.5 * xp.tanh(0.5 * x)


def _cols(a: Array, k: int, units: int) -> Array:
    """The ``k``-th block of ``units`` columns of ``a`` (one gate of a concatenated array)."""
    return a[..., k * units : (k + 1) * units]


@dataclass(frozen=True)
class _Recurrent(Layer):
    """Shared machinery of the recurrent layers: init, input checks, the loops, BPTT."""

    units: int
    # Keyword-only, so that a subclass's own first option (SimpleRNN's activation) comes
    # right after ``units`` positionally, as in Keras.
    return_sequences: bool = field(default=False, kw_only=True)
    kernel_init: str | Callable = field(default="glorot_uniform", kw_only=True)
    recurrent_init: str | Callable = field(default="orthogonal", kw_only=True)
    bias_init: str | Callable = field(default="zeros", kw_only=True)
    kernel_regularizer: str | Regularizer | None = field(default=None, kw_only=True)
    recurrent_regularizer: str | Regularizer | None = field(default=None, kw_only=True)
    bias_regularizer: str | Regularizer | None = field(default=None, kw_only=True)

    #: Gates concatenated in ``W_x``/``W_h``/``b`` (1, 4 or 3).
    gates = 1
    #: Arrays in the carry: ``(h,)``, or ``(h, c)`` for LSTM.
    carry_size = 1
    selective_grads = True  # (a frozen layer computes only dx)
    #: Bias params besides ``b`` (GRU's ``b_h``), penalized by ``bias_regularizer`` too.
    _extra_biases = ()

    @property
    def kind(self) -> str:
        """snake_case with acronyms kept whole: ``simple_rnn``, ``lstm``, ``gru`` (as Keras)."""
        return _WORD_BREAK.sub("_", type(self).__name__).lower()

    def __post_init__(self):
        object.__setattr__(self, "units", self.positive_int("units", self.units))
        for init in (self.kernel_init, self.recurrent_init, self.bias_init):
            initializers.get(init)  # fail at construction on unknown names
        self._resolve_regularizers(
            "kernel_regularizer", "recurrent_regularizer", "bias_regularizer"
        )

    def param_regularizers(self):
        biases = {b: "bias_regularizer" for b in ("b", *self._extra_biases)}
        return self._regularizers(W_x="kernel_regularizer", W_h="recurrent_regularizer", **biases)

    # ----------------------------------------------------------------- params
    def init(self, key: Key, in_shape: Shape, *, dtype: str = "float32"):
        self.expect_rank(in_shape, 3, "(batch, time, features)")
        if in_shape[2] is None:
            raise ValueError(f"{self.label} needs a known feature axis, got shape {in_shape}")
        kx, kh, kb = split(key, 3)
        n = self.gates * self.units
        params = {
            "W_x": initializers.get(self.kernel_init)(kx, (in_shape[2], n), dtype),
            "W_h": initializers.get(self.recurrent_init)(kh, (self.units, n), dtype),
            "b": initializers.get(self.bias_init)(kb, (n,), dtype),
        }
        params.update(self._extra_params(kb, dtype))
        if self.return_sequences:
            return params, {}, (in_shape[0], in_shape[1], self.units)
        return params, {}, (in_shape[0], self.units)

    def _extra_params(self, key: Key, dtype: str) -> Params:
        return {}

    # ----------------------------------------------------------------- per-step maths
    def _step(self, params: Params, carry: Carry, zx: Array, full: bool) -> tuple[Carry, Array]:
        """One time step from the input projection ``zx`` (batch, gates * units).

        Returns the new carry and the step's output: ``h``, or with ``full`` the concatenation
        ``[h, intermediates...]`` that :meth:`_step_back` needs.
        """
        raise TypeError(f"{type(self).__name__} does not define _step")

    def _step_back(
        self, params: Params, cache: Array, prev: Carry, dcarry: Carry
    ) -> tuple[Carry, Array, Array]:
        """VJP of one step: ``(d previous carry, d zx, d (h_prev @ W_h [+ b_h]))``."""
        raise TypeError(f"{type(self).__name__} does not define _step_back")

    def _carry_of(self, cache: Array) -> Carry:
        """The carry a step produced, read back from its ``full`` output."""
        return tuple(_cols(cache, k, self.units) for k in range(self.carry_size))

    def _extra_grads(self, drec: Array) -> Params:
        return {}

    # ----------------------------------------------------------------- forward and BPTT
    def _check_input(self, params: Params, x: Array, initial_state: Any) -> Carry:
        n_in = params["W_x"].shape[0]
        if x.ndim != 3:
            raise ValueError(
                f"{self.label} expects 3-D inputs (batch, time, features), got array of shape "
                f"{tuple(x.shape)}; add a time axis, e.g. x[:, None, :] for one step"
            )
        if x.shape[2] != n_in:
            raise ValueError(
                f"{self.label} expects inputs with {n_in} features (batch, time, {n_in}), got "
                f"array of shape {tuple(x.shape)}"
            )
        if x.shape[1] == 0:
            raise ValueError(f"{self.label} needs at least one time step, got shape {x.shape}")
        xp = array_namespace(x)
        batch = x.shape[0]
        if initial_state is None:
            zeros = xp.zeros((batch, self.units), dtype=x.dtype)
            return (zeros,) * self.carry_size
        carry = tuple(initial_state) if isinstance(initial_state, (tuple, list)) else None
        if self.carry_size == 1 and carry is None:
            carry = (initial_state,)
        what = "a tuple (h0, c0) of arrays" if self.carry_size == 2 else "an array h0"
        if carry is None or len(carry) != self.carry_size:
            raise ValueError(
                f"{self.label}: initial_state must be {what} of shape ({batch}, {self.units}), "
                f"got {initial_state!r}"
            )
        for a in carry:
            if tuple(getattr(a, "shape", ())) != (batch, self.units):
                raise ValueError(
                    f"{self.label}: initial_state must be {what} of shape ({batch}, "
                    f"{self.units}), got shape {tuple(getattr(a, 'shape', ()))}"
                )
        return carry

    def forward(
        self,
        params: Params,
        state: State,
        x: Array,
        *,
        train: bool = False,
        key: Any = None,
        initial_state: Array | tuple[Array, Array] | None = None,
        vjp: bool = True,
    ):
        """Run the layer over the time axis of ``x`` (batch, time, features).

        Args:
          params: this layer's params.
          state: unused (empty).
          x: inputs of shape (batch, time, features).
          train: unused (no dropout inside the cell).
          key: unused.
          initial_state: ``h0`` of shape (batch, units) (LSTM: a tuple ``(h0, c0)``);
            zeros by default.
          vjp: whether ``backprop`` will be called; if not, the time loop stores only ``h``.

        Returns:
          ``(y, state, backprop)`` where ``y`` is the last ``h`` (batch, units), or every ``h``
          (batch, time, units) with ``return_sequences``.
        """
        carry0 = self._check_input(params, x, initial_state)
        xp = array_namespace(x)
        backend = backend_of(x)
        batch, steps, n_in = x.shape
        units = self.units
        # One matmul for the input projection of every step, time-major for the scan.
        zx = xp.permute_dims(xp.matmul(x, params["W_x"]) + params["b"], (1, 0, 2))

        def run(full: bool):
            return backend.scan(lambda c, z: self._step(params, c, z, full), carry0, zx)

        # Without backprop (inference, or JAX differentiating the forward) the scan keeps only
        # h; with it, each step also stores the intermediates that its backward reads.
        last, outs = run(vjp)
        hs = _cols(outs, 0, units)  # (time, batch, units)
        y = xp.permute_dims(hs, (1, 0, 2)) if self.return_sequences else last[0]
        if not vjp:
            return y, state, None
        cache = outs

        def backprop(dy, input_grad=True, need=None):
            dcarry = tuple(xp.zeros_like(c) for c in carry0)
            dzx, drec = [None] * steps, [None] * steps
            for t in range(steps - 1, -1, -1):
                if self.return_sequences:
                    dcarry = (dcarry[0] + dy[:, t, :], *dcarry[1:])
                elif t == steps - 1:
                    dcarry = (dcarry[0] + dy, *dcarry[1:])
                prev = carry0 if t == 0 else self._carry_of(cache[t - 1, ...])
                dcarry, dzx[t], drec[t] = self._step_back(params, cache[t, ...], prev, dcarry)
            # Weight sharing: each weight's gradient is the sum over steps, done as one matmul.
            n = self.gates * units
            dz2 = xp.reshape(xp.permute_dims(xp.stack(dzx, axis=0), (1, 0, 2)), (-1, n))
            drec_all = xp.stack(drec, axis=0)  # (time, batch, n)
            h_prev = xp.concat([carry0[0][None, ...], _cols(cache[:-1, ...], 0, units)], axis=0)
            grads = {}
            if need is None or need:  # a frozen layer needs only dx
                grads = {
                    "W_x": xp.matmul(xp.reshape(x, (-1, n_in)).mT, dz2),
                    "W_h": xp.matmul(
                        xp.reshape(h_prev, (-1, units)).mT, xp.reshape(drec_all, (-1, n))
                    ),
                    "b": xp.sum(dz2, axis=0),
                    **self._extra_grads(drec_all),
                }
                if need is not None:
                    grads = {k: g for k, g in grads.items() if k in need}
            dx = None
            if input_grad:
                dx = xp.reshape(xp.matmul(dz2, params["W_x"].mT), (batch, steps, n_in))
            return dx, grads

        return y, state, backprop


@dataclass(frozen=True)
class SimpleRNN(_Recurrent):
    """Fully connected recurrence ``h_t = activation(x_t @ W_x + h_{t-1} @ W_h + b)``.

    Args:
      units: size of the hidden state ``h``.
      activation: a name from :mod:`wframe.activations` or an ``x -> (y, backprop)`` callable.
      return_sequences: return ``h`` at every step (batch, time, units) instead of the last one.
      kernel_init: initializer of ``W_x`` (features, units); Glorot uniform as in Keras.
      recurrent_init: initializer of ``W_h`` (units, units); orthogonal as in Keras.
      bias_init: initializer of ``b`` (units,).
      kernel_regularizer, recurrent_regularizer, bias_regularizer: penalties on ``W_x``,
        ``W_h`` and the biases (:mod:`wframe.regularizers`), added to the training loss.

    ``forward`` also takes ``initial_state=h0`` (batch, units), zeros by default.
    """

    activation: str | Callable = "tanh"
    gates = 1

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "_activation", activations.get(self.activation, self.label))

    def _step(self, params, carry, zx, full):
        xp = array_namespace(zx)
        z = zx + xp.matmul(carry[0], params["W_h"])
        h, _ = self._activation(z)
        return (h,), (xp.concat([h, z], axis=-1) if full else h)

    def _step_back(self, params, cache, prev, dcarry):
        xp = array_namespace(cache)
        z = _cols(cache, 1, self.units)
        dz = self._activation(z)[1](dcarry[0])
        return (xp.matmul(dz, params["W_h"].mT),), dz, dz


@dataclass(frozen=True)
class LSTM(_Recurrent):
    """Long short-term memory, as Keras's ``LSTM`` (sigmoid gates, tanh cell).

    Gates are concatenated in ``W_x``, ``W_h`` and ``b`` in the order **i, f, c, o** (input,
    forget, cell candidate, output), as in Keras; PyTorch's i, f, g, o is the same order::

        i, f, g, o = sigmoid(z_i), sigmoid(z_f), tanh(z_c), sigmoid(z_o)
        c_t = f * c_{t-1} + i * g;   h_t = o * tanh(c_t)

    with ``z = x_t @ W_x + h_{t-1} @ W_h + b``.

    Args:
      units: size of the hidden state ``h`` and the cell state ``c``.
      return_sequences: return ``h`` at every step (batch, time, units) instead of the last one.
      kernel_init: initializer of ``W_x`` (features, 4 * units).
      recurrent_init: initializer of ``W_h`` (units, 4 * units).
      bias_init: initializer of ``b`` (4 * units,).
      kernel_regularizer, recurrent_regularizer, bias_regularizer: penalties on ``W_x``,
        ``W_h`` and the biases (:mod:`wframe.regularizers`), added to the training loss.
      unit_forget_bias: set the forget gate's bias to 1 at init (Keras's default), so the cell
        remembers by default early in training.

    ``forward`` also takes ``initial_state=(h0, c0)``, each (batch, units), zeros by default.
    """

    unit_forget_bias: bool = field(default=True, kw_only=True)
    gates = 4
    carry_size = 2

    def init(self, key, in_shape, *, dtype="float32"):
        params, state, out = super().init(key, in_shape, dtype=dtype)
        if self.unit_forget_bias:
            xp = array_namespace(params["b"])
            b, u = params["b"], self.units
            ones = xp.ones((u,), dtype=b.dtype)
            params["b"] = xp.concat([b[:u], ones, b[2 * u :]], axis=0)
        return params, state, out

    def _step(self, params, carry, zx, full):
        xp = array_namespace(zx)
        h, c = carry
        u = self.units
        z = zx + xp.matmul(h, params["W_h"])
        i, f, o = _sig(_cols(z, 0, u)), _sig(_cols(z, 1, u)), _sig(_cols(z, 3, u))
        g = xp.tanh(_cols(z, 2, u))
        c = f * c + i * g
        tc = xp.tanh(c)
        h = o * tc
        return (h, c), (xp.concat([h, c, i, f, g, o, tc], axis=-1) if full else h)

    def _step_back(self, params, cache, prev, dcarry):
        xp = array_namespace(cache)
        _, _, i, f, g, o, tc = (_cols(cache, k, self.units) for k in range(7))
        dh, dc = dcarry
        dc = dc + dh * o * (1 - tc * tc)
        dz = xp.concat(
            [
                dc * g * i * (1 - i),
                dc * prev[1] * f * (1 - f),
                dc * i * (1 - g * g),
                dh * tc * o * (1 - o),
            ],
            axis=-1,
        )
        return (xp.matmul(dz, params["W_h"].mT), dc * f), dz, dz


@dataclass(frozen=True)
class GRU(_Recurrent):
    """Gated recurrent unit, as Keras 3's ``GRU`` with its default ``reset_after=True``.

    Gates are concatenated in ``W_x``, ``W_h``, ``b`` and ``b_h`` in the order **z, r, h**
    (update, reset, candidate), as in Keras (PyTorch orders them r, z, n)::

        xz, xr, xh = split(x_t @ W_x + b)          # input part, bias b
        hz, hr, hh = split(h_{t-1} @ W_h + b_h)    # recurrent part, bias b_h
        z, r = sigmoid(xz + hz), sigmoid(xr + hr)
        n = tanh(xh + r * hh)                      # reset applied after the matmul
        h_t = z * h_{t-1} + (1 - z) * n

    Because the reset gate multiplies the recurrent projection *including its bias*, the layer
    has two biases: ``b`` (3 * units,) on the input side and ``b_h`` (3 * units,) on the
    recurrent side (Keras stores them together as ``bias`` of shape (2, 3 * units); PyTorch as
    ``bias_ih``/``bias_hh``).

    Args:
      units: size of the hidden state ``h``.
      return_sequences: return ``h`` at every step (batch, time, units) instead of the last one.
      kernel_init: initializer of ``W_x`` (features, 3 * units).
      recurrent_init: initializer of ``W_h`` (units, 3 * units).
      bias_init: initializer of ``b`` and ``b_h`` (3 * units,) each.
      kernel_regularizer, recurrent_regularizer, bias_regularizer: penalties on ``W_x``,
        ``W_h`` and the biases (:mod:`wframe.regularizers`), added to the training loss.

    ``forward`` also takes ``initial_state=h0`` (batch, units), zeros by default.
    """

    gates = 3
    _extra_biases = ("b_h",)

    def _extra_params(self, key, dtype):
        kb_h = split(key, 2)[1]
        return {"b_h": initializers.get(self.bias_init)(kb_h, (3 * self.units,), dtype)}

    def _extra_grads(self, drec):
        xp = array_namespace(drec)
        return {"b_h": xp.sum(drec, axis=(0, 1))}

    def _step(self, params, carry, zx, full):
        xp = array_namespace(zx)
        (h,) = carry
        u = self.units
        rec = xp.matmul(h, params["W_h"]) + params["b_h"]
        hh = _cols(rec, 2, u)
        z = _sig(_cols(zx, 0, u) + _cols(rec, 0, u))
        r = _sig(_cols(zx, 1, u) + _cols(rec, 1, u))
        n = xp.tanh(_cols(zx, 2, u) + r * hh)
        h = z * h + (1 - z) * n
        return (h,), (xp.concat([h, z, r, n, hh], axis=-1) if full else h)

    def _step_back(self, params, cache, prev, dcarry):
        xp = array_namespace(cache)
        _, z, r, n, hh = (_cols(cache, k, self.units) for k in range(5))
        (dh,) = dcarry
        dn = dh * (1 - z) * (1 - n * n)
        dz = dh * (prev[0] - n) * z * (1 - z)
        dr = dn * hh * r * (1 - r)
        dzx = xp.concat([dz, dr, dn], axis=-1)
        drec = xp.concat([dz, dr, dn * r], axis=-1)
        return (dh * z + xp.matmul(drec, params["W_h"].mT),), dzx, drec
