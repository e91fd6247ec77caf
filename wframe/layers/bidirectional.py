"""Bidirectional: a recurrent layer run over the sequence both ways, outputs merged (Keras 3).

The forward copy reads ``x`` as it is; the backward copy reads it reversed along time. With
``return_sequences`` the backward outputs are reversed back before merging, so that step ``t``
of the result holds what the forward copy saw up to ``t`` and what the backward copy saw from
the end down to ``t``. Without it the backward half is the backward copy's last output, its
state after reading the whole reversed sequence (PyTorch's ``h_n`` of the reverse direction,
which is ``output[:, 0, H:]`` of a bidirectional ``nn.GRU``, not ``output[:, -1, H:]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wframe.backends import array_namespace
from wframe.layers.base import Layer
from wframe.random import fold_in, split
from wframe.types import Array, Params, State

_MERGE_MODES = ("concat", "sum", "mul", "ave", None)
_EMPTY: dict = {}


def _child_back(child: Layer, back: Any, dy: Any, input_grad: bool, need: Any):
    """``child``'s backprop asked only for the gradients in ``need`` (``None``: all)."""
    if need is None:
        return back(dy, input_grad=input_grad)
    if not need and not input_grad:  # a frozen child below no input gradient: nothing to do
        return None, {}
    if child.selective_grads:
        return back(dy, input_grad=input_grad, need=need)
    dx, grads = back(dy, input_grad=input_grad)
    return dx, {k: g for k, g in grads.items() if k in need}


@dataclass(frozen=True)
class Bidirectional(Layer):
    """A recurrent layer run forwards and backwards over time, its two outputs merged.

    Params nest as ``{"forward": {...}, "backward": {...}}`` (flattened
    ``"bidirectional_0/forward/W_x"``); each copy gets its own freshly initialized weights.

    Args:
      layer: the recurrent layer to run both ways (``SimpleRNN``, ``LSTM``, ``GRU``, or any
        layer over (batch, time, features) inputs with a ``return_sequences`` attribute).
        It is copied for the forward direction (named ``forward_<name>``).
      merge_mode: how the two outputs combine: ``"concat"`` (along the last axis, the
        default), ``"sum"``, ``"mul"``, ``"ave"``, or ``None`` (return both, as a tuple
        ``(forward, backward)``).
      backward_layer: the layer for the backward direction (default: a copy of ``layer``);
        it must have the same ``return_sequences``. Unlike Keras, it takes no
        ``go_backwards``: the wrapper reverses its input (and, with ``return_sequences``, its
        output) itself.
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).

    ``forward`` also takes ``initial_state``: a list whose first half goes to the forward copy
    and second half to the backward one (``[h_f, h_b]``; LSTM ``[h_f, c_f, h_b, c_b]``).
    """

    layer: Layer
    merge_mode: str | None = "concat"
    backward_layer: Layer | None = None

    selective_grads = True

    def __post_init__(self):
        for what, layer in (("layer", self.layer), ("backward_layer", self.backward_layer)):
            if layer is None and what == "backward_layer":
                continue
            if not isinstance(layer, Layer) or not hasattr(layer, "return_sequences"):
                raise ValueError(
                    f"{self.label}: {what} must be a recurrent wframe layer (SimpleRNN, LSTM, "
                    f"GRU, or a Layer with return_sequences), got {layer!r}"
                )
        if self.merge_mode not in _MERGE_MODES:
            raise ValueError(
                f"{self.label}: merge_mode must be one of {list(_MERGE_MODES)}, got "
                f"{self.merge_mode!r}"
            )
        back = self.layer if self.backward_layer is None else self.backward_layer
        if back.return_sequences != self.layer.return_sequences:
            raise ValueError(
                f"{self.label}: backward_layer has return_sequences={back.return_sequences} "
                f"but layer has return_sequences={self.layer.return_sequences}; give both the "
                "same value"
            )
        object.__setattr__(self, "_forward", self.layer.named(_child_name("forward", self.layer)))
        object.__setattr__(self, "_backward", back.named(_child_name("backward", back)))

    @property
    def return_sequences(self) -> bool:
        """Whether the output has a time axis (the wrapped layer's ``return_sequences``)."""
        return self.layer.return_sequences

    @property
    def uses_key(self) -> bool:
        return self._forward.uses_key or self._backward.uses_key

    def children(self):
        return (("forward", self._forward), ("backward", self._backward))

    def init(self, key, in_shape, *, dtype="float32"):
        self.expect_rank(in_shape, 3, "(batch, time, features)")
        kf, kb = split(key, 2)
        pf, sf, of = self._forward.init(kf, in_shape, dtype=dtype)
        pb, sb, ob = self._backward.init(kb, in_shape, dtype=dtype)
        if self.merge_mode is None:
            out = (tuple(of), tuple(ob))
        elif self.merge_mode == "concat":
            out = (*of[:-1], of[-1] + ob[-1])
        elif tuple(of) != tuple(ob):
            raise ValueError(
                f"{self.label}: merge_mode={self.merge_mode!r} needs both directions to give "
                f"the same shape, got {tuple(of)} forward and {tuple(ob)} backward; use "
                "merge_mode='concat' or the same units"
            )
        else:
            out = tuple(of)
        params = {"forward": pf, "backward": pb}
        state = {k: s for k, s in (("forward", sf), ("backward", sb)) if s}
        return params, state, out

    def forward(
        self,
        params: Params,
        state: State,
        x: Array,
        *,
        train: bool = False,
        key: Any = None,
        initial_state: Any = None,
        vjp: bool = True,
    ):
        """Run both directions over ``x`` (batch, time, features) and merge their outputs.

        Args:
          params: ``{"forward": ..., "backward": ...}``.
          state: the children's states (empty for the recurrent layers).
          x: inputs of shape (batch, time, features).
          train: passed to both children.
          key: folded per child for children that draw random numbers.
          initial_state: ``None`` (zeros), or a list: first half for the forward copy, second
            half for the backward copy.
          vjp: whether ``backprop`` will be called.

        Returns:
          ``(y, state, backprop)``: ``y`` merged by ``merge_mode`` (a tuple for ``None``).
        """
        xp = array_namespace(x)
        seq = self.return_sequences
        states = self._split_state(initial_state)
        outs, backs, new_state = [], [], {}
        for i, (name, child) in enumerate(self.children()):
            options = {} if states is None else {"initial_state": states[i]}
            k = fold_in(key, i) if key is not None and child.uses_key else None
            xi = x if i == 0 else xp.flip(x, axis=1)
            y, s, back = child.apply(
                params.get(name, _EMPTY),
                state.get(name, _EMPTY),
                xi,
                train=train,
                key=k,
                vjp=vjp,
                **options,
            )
            outs.append(xp.flip(y, axis=1) if i == 1 and seq else y)
            backs.append(back)
            if s:
                new_state[name] = s
        yf, yb = outs
        y = self._merge(xp, yf, yb)
        if not vjp:
            return y, new_state, None
        return y, new_state, self._backprop(xp, params, yf, yb, backs)

    def _split_state(self, initial_state: Any) -> tuple | None:
        if initial_state is None:
            return None
        states = list(initial_state) if isinstance(initial_state, (list, tuple)) else None
        if not states or len(states) % 2:
            raise ValueError(
                f"{self.label}: initial_state must be a list of an even number of arrays (first "
                "half for the forward layer, second half for the backward one: [h_f, h_b], LSTM "
                f"[h_f, c_f, h_b, c_b]), got {initial_state!r}"
            )
        half = len(states) // 2
        return tuple(tuple(p) if len(p) > 1 else p[0] for p in (states[:half], states[half:]))

    def _merge(self, xp, yf: Array, yb: Array) -> Any:
        mode = self.merge_mode
        if mode == "concat":
            return xp.concat([yf, yb], axis=-1)
        if mode == "sum":
            return yf + yb
        if mode == "ave":
            return 0.5 * (yf + yb)
        if mode == "mul":
            return yf * yb
        return yf, yb

    def _split_grad(self, xp, dy: Any, yf: Array, yb: Array) -> tuple[Array, Array]:
        """The gradients of the two (time-aligned) outputs from that of the merged one."""
        mode = self.merge_mode
        if mode == "concat":
            u = yf.shape[-1]
            return dy[..., :u], dy[..., u:]
        if mode == "sum":
            return dy, dy
        if mode == "ave":
            return 0.5 * dy, 0.5 * dy
        if mode == "mul":
            return dy * yb, dy * yf
        dyf, dyb = dy  # merge_mode None: one gradient per output (None: that output unused)
        return (
            xp.zeros_like(yf) if dyf is None else dyf,
            xp.zeros_like(yb) if dyb is None else dyb,
        )

    def _backprop(self, xp, params: Params, yf: Array, yb: Array, backs: list):
        seq = self.return_sequences

        def backprop(dy, input_grad=True, need=None):
            dys = self._split_grad(xp, dy, yf, yb)
            dx, grads = None, {}
            for i, (name, child) in enumerate(self.children()):
                d = xp.flip(dys[i], axis=1) if i == 1 and seq else dys[i]
                sub = None if need is None else need.get(name, _EMPTY)
                dxi, g = _child_back(child, backs[i], d, input_grad, sub)
                if g or need is None:
                    grads[name] = g
                if input_grad:
                    dxi = dxi if i == 0 else xp.flip(dxi, axis=1)
                    dx = dxi if dx is None else dx + dxi
            return dx, {k: grads[k] for k in params if k in grads}

        return backprop


def _child_name(direction: str, layer: Layer) -> str:
    """``forward_gru``: Keras' names of the two copies (``direction`` + the layer's name)."""
    base = layer.name or layer.kind
    return f"{direction}_{base.removeprefix(direction + '_')}"
