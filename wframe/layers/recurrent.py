"""Recurrent layers: SimpleRNN, LSTM and GRU over (batch, time, features) inputs.

Every layer holds ``W_x`` (features, gates * units), ``W_h`` (units, gates * units) and ``b``
(gates * units,), the gates concatenated along the last axis, and applies the SAME weights at
every time step. The input projection ``x @ W_x + b`` of all steps is one matmul before the time
loop.

On a traced backend (JAX: ``Backend.traced``) the loop is the backend's
:meth:`~wframe.backends.base.Backend.scan` (``lax.scan``: ``jit`` compiles one loop body instead of
unrolling ``T`` copies) over :meth:`_Recurrent._step`, written for autodiff, which differentiates
it. On NumPy/CuPy the layer unrolls a fused step itself (one matmul and one ``tanh`` for all gates)
and, when backprop is asked for, keeps what backprop through time reads: a reverse loop that carries
``dh`` (and ``dc``) and collects the gradient of every step's pre-activations, which become
``dW_x``, ``dW_h``, ``db`` and ``dx`` with one matmul each after the loop. The cells' arithmetic is
in :mod:`wframe.layers.recurrent_cells`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wframe import activations, initializers
from wframe.backends import array_namespace, backend_of
from wframe.layers import recurrent_cells as cells
from wframe.layers.base import Layer
from wframe.random import split
from wframe.regularizers import Regularizer
from wframe.types import Array, Key, Params, Shape, State

Carry = tuple[Array, ...]
# Word breaks of a CamelCase name that keep acronyms whole: SimpleRNN -> Simple_RNN.
_WORD_BREAK = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


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

    # ----------------------------------------------------------------- per-cell maths
    def _scan_inputs(self, params: Params, zx: Array) -> tuple[Array, Any]:
        """``(xs, consts)``: what :meth:`_step` scans over, from the input projection ``zx``
        (batch, time, gates * units), and what it reads at every step."""
        xp = array_namespace(zx)
        return xp.permute_dims(zx, (1, 0, 2)), params["W_h"]

    def _step(self, consts: Any, carry: Carry, z: Array) -> tuple[Carry, Array]:
        """One time step: the new carry and ``h``."""
        raise TypeError(f"{type(self).__name__} does not define _step")

    def _unroll(self, params: Params, x_tm: Array, carry0: Carry, steps: int, keep: bool):
        """The loop without a backend scan, on time-major inputs ``x_tm`` (time * batch,
        features); with ``keep``, keeping what backprop through time reads.

        Returns ``(hs, last carry, back)``: ``hs`` (time, batch, units), and (with ``keep``)
        ``back(dh_in) -> (dzx, drec, extra)``, the gradients of every step's input projection
        and recurrent projection (time, batch, gates * units) given ``dh_in(t)``, the gradient
        arriving at step ``t``'s ``h`` from above (or ``None``), and ``{name: () -> grad}``
        for params besides ``W_x``, ``W_h`` and ``b``.
        """
        raise TypeError(f"{type(self).__name__} does not define _unroll")

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
          vjp: whether ``backprop`` will be called; if not, the time loop keeps nothing for
            a backward pass.

        Returns:
          ``(y, state, backprop)`` where ``y`` is the last ``h`` (batch, units), or every ``h``
          (batch, time, units) with ``return_sequences``.
        """
        carry0 = self._check_input(params, x, initial_state)
        xp = array_namespace(x)
        backend = backend_of(x)
        seq = self.return_sequences
        if backend.traced:  # one loop body under jit, not T unrolled copies
            # A backprop closure asked of the scan (tests, symmetry) runs the unrolled forward
            # again when called.
            y, kept = self._scanned(backend, xp, params, x, carry0), None
        else:
            kept = self._unrolled(xp, params, x, carry0, vjp)
            hs, last = kept[1], kept[2]
            y = xp.permute_dims(hs, (1, 0, 2)) if seq else last[0]
        if not vjp:
            return y, state, None
        return y, state, self._bptt(xp, params, x, carry0, kept)

    def _scanned(self, backend, xp, params: Params, x: Array, carry0: Carry) -> Array:
        """``y`` from :meth:`_step`, written for autodiff, in the backend's scan (one loop body)."""
        seq = self.return_sequences
        xs, consts = self._scan_inputs(params, xp.matmul(x, params["W_x"]) + params["b"])

        def body(carry, z):
            carry, h = self._step(consts, carry, z)
            return carry, (h if seq else None)

        last, hs = backend.scan(body, carry0, xs)
        return xp.permute_dims(hs, (1, 0, 2)) if seq else last[0]

    def _unrolled(self, xp, params: Params, x: Array, carry0: Carry, keep: bool) -> tuple:
        """``(x_tm, hs, last carry, back)``: :meth:`_unroll` over ``x``'s time-major rows."""
        batch, steps, n_in = x.shape
        # Time-major rows, so that every step's slice and the weight gradients' matmuls
        # read contiguous blocks.
        x_tm = xp.reshape(xp.permute_dims(x, (1, 0, 2)), (steps * batch, n_in))
        return (x_tm, *self._unroll(params, x_tm, carry0, steps, keep))

    def _bptt(self, xp, params: Params, x: Array, carry0: Carry, kept: tuple | None):
        """The ``backprop`` of :meth:`forward`: backprop through time from what the unrolled
        forward ``kept`` (``None``: unroll again when called)."""
        batch, steps, n_in = x.shape
        seq = self.return_sequences

        def backprop(dy, input_grad=True, need=None):
            x_tm, hs, _, back = (
                kept if kept is not None else self._unrolled(xp, params, x, carry0, True)
            )
            if seq:
                dzx, drec, extra = back(lambda t: dy[:, t, :])
            else:
                dzx, drec, extra = back(lambda t: dy if t == steps - 1 else None)
            n = dzx.shape[-1]
            dzx2 = xp.reshape(dzx, (steps * batch, n))
            grads = {}
            if need is None or need:  # a frozen layer needs only dx
                # Weight sharing: each weight's gradient is the sum over steps, one matmul.
                def d_W_h():
                    h_prev = xp.concat([carry0[0][None, ...], hs[:-1, ...]], axis=0)
                    h_prev = xp.reshape(h_prev, (steps * batch, self.units))
                    return xp.matmul(h_prev.mT, xp.reshape(drec, (steps * batch, n)))

                terms = {
                    "W_x": lambda: xp.matmul(x_tm.mT, dzx2),
                    "W_h": d_W_h,
                    "b": lambda: xp.sum(dzx2, axis=0),
                    **extra,
                }
                grads = {k: f() for k, f in terms.items() if need is None or k in need}
            dx = None
            if input_grad:
                dx = xp.reshape(xp.matmul(dzx2, params["W_x"].mT), (steps, batch, n_in))
                dx = xp.permute_dims(dx, (1, 0, 2))
            return dx, grads

        return backprop


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
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).

    ``forward`` also takes ``initial_state=h0`` (batch, units), zeros by default.
    """

    activation: str | Callable = "tanh"
    gates = 1

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "_activation", activations.get(self.activation, self.label))

    def _step(self, W_h, carry, z):
        xp = array_namespace(z)
        h, _ = self._activation(z + xp.matmul(carry[0], W_h))
        return (h,), h

    def _unroll(self, params, x_tm, carry0, steps, keep):
        xp = array_namespace(x_tm)
        zx = xp.reshape(xp.matmul(x_tm, params["W_x"]) + params["b"], (steps, -1, self.units))
        hs, last, backs = cells.simple_unroll(zx, carry0, params["W_h"], self._activation, keep)

        def back(dh_in):
            dz = cells.simple_backward(backs, params["W_h"], dh_in)
            return dz, dz, {}

        return hs, last, back


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
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).

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

    def _step(self, W_h, carry, z):
        return cells.lstm_step(carry, z, W_h)

    def _unroll(self, params, x_tm, carry0, steps, keep):
        xp = array_namespace(x_tm)
        u, sig = self.units, (0, 1, 3)  # the sigmoid gates i, f, o
        W_x, b, W_h = (cells.half_gates(params[k], u, sig) for k in ("W_x", "b", "W_h"))
        zx = xp.reshape(xp.matmul(x_tm, W_x) + b, (steps, -1, 4 * u))
        hs, last, cache = cells.lstm_unroll(zx, carry0, W_h, u, keep)

        def back(dh_in):
            dz = cells.lstm_backward(cache, carry0, params["W_h"], dh_in, u)
            return dz, dz, {}

        return hs, last, back


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
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).

    ``forward`` also takes ``initial_state=h0`` (batch, units), zeros by default.
    """

    gates = 3
    _extra_biases = ("b_h",)

    def _extra_params(self, key, dtype):
        kb_h = split(key, 2)[1]
        return {"b_h": initializers.get(self.bias_init)(kb_h, (3 * self.units,), dtype)}

    def _scan_inputs(self, params, zx):
        xp = array_namespace(zx)
        return xp.permute_dims(zx, (1, 0, 2)), (params["W_h"], params["b_h"])

    def _step(self, consts, carry, z):
        return cells.gru_step(carry, z, *consts)

    def _unroll(self, params, x_tm, carry0, steps, keep):
        xp = array_namespace(x_tm)
        u, sig = self.units, (0, 1)  # the sigmoid gates z, r
        W_x, b, W_h, b_h = (cells.half_gates(params[k], u, sig) for k in ("W_x", "b", "W_h", "b_h"))
        zx = xp.reshape(xp.matmul(x_tm, W_x) + b, (steps, -1, 3 * u))
        hs, last, cache = cells.gru_unroll(zx, carry0, W_h, b_h, u, keep)

        def back(dh_in):
            dzx, drec = cells.gru_backward(cache, carry0, hs, params["W_h"], dh_in, u)
            return dzx, drec, {"b_h": lambda: xp.sum(drec, axis=(0, 1))}

        return hs, last, back
