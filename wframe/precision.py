"""Mixed precision: dtype policies (Keras' names) and dynamic loss scaling.

A :class:`Policy` says in which dtype a model keeps its variables (params, optimizer state,
running statistics: always float32 for the mixed policies) and in which it computes.
``Sequential(..., dtype="mixed_bfloat16")`` casts params and inputs to bfloat16 at the model's
boundary, runs every layer in bfloat16 and casts the output back to float32, so the softmax, the
loss, the metrics and the optimizer see float32; normalization layers compute their statistics
in float32 (:func:`in_float32`). ``"mixed_float16"`` does the same in float16 and adds dynamic
loss scaling (:class:`DynamicLossScale`), whose state (:class:`LossScaleState`) lives in the
train state beside the optimizer's and is checkpointed with it.

On NumPy, bfloat16 is ml_dtypes' type, and half-precision matmuls and sums run in float32 on
half-precision inputs and round the result back: bfloat16 storage with float32 accumulation,
which is what GPUs and XLA do (see :mod:`wframe.backends.numpy_xp`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from wframe.backends import array_namespace
from wframe.tree import tree_map
from wframe.types import Array

#: dtype names a model accepts: plain float32/float64 and Keras' mixed policies.
POLICIES = ("float32", "float64", "mixed_float16", "mixed_bfloat16")
_HALF = ("float16", "bfloat16")


class LossScaleState(NamedTuple):
    """The dynamic loss scale's arrays, in the train state and its checkpoints.

    Attributes:
      scale: what the loss is multiplied by before the backward pass (float32, 0-d).
      counter: consecutive finite steps since the scale last changed (int32, 0-d).
    """

    scale: Array
    counter: Array


@dataclass(frozen=True)
class DynamicLossScale:
    """Dynamic loss scaling (Keras 3 ``LossScaleOptimizer``'s defaults, jmp's floor).

    The loss is multiplied by ``scale`` before the backward pass, so small float16 gradients do
    not flush to zero, and the gradients are divided by it (in float32) before clipping and the
    optimizer. A step whose gradients are not finite is skipped (params, optimizer and layer
    state unchanged) and halves the scale; ``period`` finite steps in a row double it. At
    ``minimum`` non-finite gradients are no longer an overflow of the scaling: that step is a
    non-finite step like any other, and ``fit`` stops with the last finite weights.

    Args:
      initial: the first scale (2**15, as Keras and jmp).
      period: finite steps in a row before the scale doubles (2000, as Keras).
      factor: what the scale is multiplied or divided by (2).
      minimum: the smallest scale (1, as jmp; Keras has none).
    """

    initial: float = 2.0**15
    period: int = 2000
    factor: float = 2.0
    minimum: float = 1.0

    def __post_init__(self):
        for what in ("initial", "factor", "minimum"):
            value = getattr(self, what)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or value <= 0:
                raise ValueError(
                    f"DynamicLossScale: {what} must be a positive finite number, got {value!r}"
                )
        if self.factor <= 1:
            raise ValueError(f"DynamicLossScale: factor must be > 1, got {self.factor!r}")
        if self.initial < self.minimum:
            raise ValueError(
                f"DynamicLossScale: initial ({self.initial}) must be >= minimum ({self.minimum})"
            )
        if isinstance(self.period, bool) or not isinstance(self.period, int) or self.period < 1:
            raise ValueError(f"DynamicLossScale: period must be an int >= 1, got {self.period!r}")

    def init(self, backend: Any) -> LossScaleState:
        """The starting state, as arrays of ``backend``."""
        xp = backend.xp
        return LossScaleState(
            xp.asarray(self.initial, dtype=xp.float32), xp.asarray(0, dtype=xp.int32)
        )

    def adjust(self, state: LossScaleState, grads_finite: Array) -> LossScaleState:
        """The state after a step whose gradients were (``grads_finite``) or were not finite."""
        xp = array_namespace(state.scale)
        grow = grads_finite & (state.counter >= self.period - 1)
        shrunk = xp.maximum(state.scale / self.factor, xp.asarray(self.minimum, dtype=xp.float32))
        scale = xp.where(
            grads_finite, xp.where(grow, state.scale * self.factor, state.scale), shrunk
        )
        counter = xp.where(grads_finite & ~grow, state.counter + 1, xp.zeros_like(state.counter))
        return LossScaleState(scale, counter)

    def judge(
        self,
        state: LossScaleState,
        loss: Array,
        spread: Array,
        allowed: Array,
        guard: bool,
        backend: Any,
    ) -> tuple[Array, Array, LossScaleState]:
        """``(ok, apply, new state)`` of a train step: whether the step is finite (``ok``),
        whether its update applies, and the loss scale after it.

        ``loss`` is the step's loss, ``spread`` a sum that is finite exactly where the
        gradients are (their global norm or total); ``allowed`` is False after a non-finite step.
        Overflowing gradients of a finite loss are the scaled float16 backward pass, not the
        model: the update is skipped (guarded or not) and the step stays ``ok`` unless the
        scale is at its minimum. With ``guard`` a step that is not ``ok`` changes nothing, its
        loss scale included (unguarded callers replay such steps guarded).
        """
        xp = backend.xp
        grads_ok = xp.isfinite(spread)
        ok = xp.isfinite(loss) & (grads_ok | (state.scale > self.minimum)) & allowed
        new = self.adjust(state, grads_ok)
        if not guard:
            return ok, grads_ok, new
        new = backend.cond(ok, lambda a, b: a, lambda a, b: b, new, state)
        return ok, grads_ok & ok, new


@dataclass(frozen=True)
class Policy:
    """A dtype policy: the dtype variables live in and the dtype layers compute in.

    Args:
      name: ``"float32"``, ``"float64"``, ``"mixed_float16"`` or ``"mixed_bfloat16"``.
      loss_scale: for ``"mixed_float16"`` only: its :class:`DynamicLossScale` (default: Keras'
        settings); ``None`` elsewhere.
    """

    name: str
    loss_scale: DynamicLossScale | None = None
    param_dtype: str = field(init=False)
    compute_dtype: str = field(init=False)

    def __post_init__(self):
        if self.name not in POLICIES:
            raise ValueError(f"Policy: name must be one of {POLICIES}, got {self.name!r}")
        mixed = self.name.startswith("mixed_")
        object.__setattr__(self, "param_dtype", "float32" if mixed else self.name)
        object.__setattr__(self, "compute_dtype", self.name[6:] if mixed else self.name)
        if self.name == "mixed_float16" and self.loss_scale is None:
            object.__setattr__(self, "loss_scale", DynamicLossScale())
        elif self.name != "mixed_float16" and self.loss_scale is not None:
            raise ValueError(
                f"Policy: loss_scale applies to 'mixed_float16' only (bfloat16 has float32's "
                f"range and needs none), got it with {self.name!r}"
            )
        if self.loss_scale is not None and not isinstance(self.loss_scale, DynamicLossScale):
            raise TypeError(
                "Policy: loss_scale must be a wf.precision.DynamicLossScale, got "
                f"{type(self.loss_scale).__name__}"
            )

    @property
    def mixed(self) -> bool:
        """Whether layers compute in another dtype than the variables'."""
        return self.compute_dtype != self.param_dtype


def get(dtype: Any) -> Policy:
    """The :class:`Policy` a model's ``dtype=`` names (a Policy is returned as it is).

    Args:
      dtype: a policy name from :data:`POLICIES` (any case), a NumPy dtype (or type) of one of
        the plain float policies, or a :class:`Policy`.

    Raises:
      ValueError: for any other name, listing the accepted ones (and pointing float16 and
        bfloat16 at their mixed policies).
    """
    if isinstance(dtype, Policy):
        return dtype
    name = dtype.lower() if isinstance(dtype, str) else _dtype_name(dtype)
    if name in POLICIES:
        return Policy(name)
    if name in _HALF:
        why = {
            "float16": "its range overflows Adam's second moment within a few steps",
            "bfloat16": "its 8-bit mantissa loses small weight updates",
        }[name]
        raise ValueError(
            f"dtype {name} is not supported for training: {why}. Use dtype='float32' (the "
            f"default), or dtype='mixed_{name}' to compute in {name} with float32 weights and "
            "optimizer state"
        )
    raise ValueError(f"dtype must be one of {POLICIES} or a wf.precision.Policy, got {dtype!r}")


def _dtype_name(dtype: Any) -> str | None:
    try:
        return np.dtype(dtype).name
    except (TypeError, ValueError):
        return None


def is_half(dtype: Any) -> bool:
    """Whether ``dtype`` is float16 or bfloat16 (of any backend).

    Args:
      dtype: a dtype object (read by its ``itemsize`` and ``name``; a string is never half).
    """
    return getattr(dtype, "itemsize", 0) == 2 and getattr(dtype, "name", "") in _HALF


@functools.cache
def dtype_in(xp: Any, name: str) -> Any:
    """The dtype object namespace ``xp`` uses for ``name``: its own, or ml_dtypes' bfloat16
    where the namespace has none (NumPy).

    Raises:
      ValueError: when the namespace cannot hold arrays of that dtype (CuPy and bfloat16).
    """
    found = getattr(xp, name, None)
    if found is not None:
        return found
    if name != "bfloat16":
        raise ValueError(f"the array namespace {xp.__name__} has no dtype {name}")
    try:
        import ml_dtypes
    except ModuleNotFoundError:
        raise ValueError(
            "bfloat16 on this backend needs the ml_dtypes package: pip install ml_dtypes"
        ) from None
    try:  # NumPy holds ml_dtypes' arrays; CuPy does not (each namespace fails its own way)
        xp.astype(xp.zeros(1, dtype=xp.float32), ml_dtypes.bfloat16)
    except Exception as e:
        raise ValueError(f"the array namespace {xp.__name__} cannot hold bfloat16: {e}") from None
    return ml_dtypes.bfloat16


def check_backend(policy: Policy, backend: Any) -> None:
    """Refuse a backend that cannot compute in ``policy``'s compute dtype, naming the fix.

    Args:
      policy: the model's :class:`Policy`; the plain float policies always pass.
      backend: the backend the model lives on, or is moving to.

    Raises:
      ValueError: e.g. CuPy with ``"mixed_bfloat16"``.
    """
    if not policy.mixed:
        return
    try:
        dtype_in(backend.xp, policy.compute_dtype)
    except ValueError as e:
        raise ValueError(
            f"dtype={policy.name!r} computes in {policy.compute_dtype}, which backend "
            f"'{backend.name}' cannot hold ({e}); use another backend (jax runs both mixed "
            "policies) or dtype='float32'"
        ) from None


def quietly(fn: Any) -> Any:
    """``fn`` with NumPy's overflow and invalid-value warnings off: a mixed_float16 train step,
    where an overflowing float16 backward pass is expected and handled (the step is skipped),
    and a non-finite loss is reported by ``fit`` itself. No effect on traced (JAX) code.

    Args:
      fn: the function to wrap; it is called with positional arguments only.
    """

    def run(*args):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return fn(*args)

    return run


def _cast(xp: Any, tree: Any, dtype: Any) -> Any:
    return tree_map(lambda a: xp.astype(a, dtype), tree)


def _cast_floats(xp: Any, x: Any, dtype: Any) -> Any:
    """An input (or a tuple of them) with its floating arrays cast; integer ids are kept."""
    if isinstance(x, tuple):
        return tuple(_cast_floats(xp, a, dtype) for a in x)
    return x if x is None or xp.isdtype(x.dtype, ("integral", "bool")) else xp.astype(x, dtype)


def mixed_forward(policy: Policy, forward: Any, params, state, x, *, train, key, vjp):
    """``forward`` (a chain's, taking ``vjp`` and a backprop ``need``) run in ``policy``'s
    compute dtype: params and ``x`` cast to it, the output cast back to the params' dtype.

    The backprop takes the float32 output gradient, casts it to the compute dtype, runs the
    layers' backprop there and returns the gradients in the params' dtype and ``dx`` in ``x``'s.
    On JAX, autodiff through the same casts does the same. Layer state keeps its dtype.

    Args:
      policy: a mixed :class:`Policy` (its ``compute_dtype`` and ``param_dtype``).
      forward: ``forward(params, state, x, *, train, key, vjp) -> (y, new_state, backprop)``.
      params, state: the layer's params (in the param dtype) and state (kept as they are).
      x: the input, or a tuple of them; integer inputs (ids) are not cast.
      train, key, vjp: passed on to ``forward``; ``vjp=False`` returns no backprop.

    Returns:
      ``(y, new_state, backprop)`` with ``y`` in the param dtype.
    """
    xp = array_namespace(x[0] if isinstance(x, tuple) else x)
    low, high = dtype_in(xp, policy.compute_dtype), dtype_in(xp, policy.param_dtype)
    y, new_state, back = forward(
        _cast(xp, params, low), state, _cast_floats(xp, x, low), train=train, key=key, vjp=vjp
    )
    # Running statistics stay float32 (normalization layers keep them so; this is a guard).
    new_state = tree_map(lambda a: xp.astype(a, high) if is_half(a.dtype) else a, new_state)
    y = _cast(xp, y, high)
    if back is None:
        return y, new_state, None

    def backprop(dy, input_grad=True, need=None):
        dx, grads = back(_cast(xp, dy, low), input_grad=input_grad, need=need)
        return (None if dx is None else _cast_floats(xp, dx, high)), _cast(xp, grads, high)

    return y, new_state, backprop


def in_float32(forward: Any, params, state, x, **options):
    """``forward`` of a normalization layer run in float32 on half-precision ``x``: its mean
    and variance are float32 (half precision loses them: float16 overflows on squares, bfloat16
    keeps 8 bits), the output and ``dx`` come back in ``x``'s dtype, each gradient in its
    param's.

    Args:
      forward: the layer's forward, called as ``forward(params, state, x, **options)`` and
        returning ``(y, new_state, backprop)``.
      params, state, x: its params (a flat dict of arrays, cast to float32), state and input.
      **options: passed on to ``forward`` (``train``, ``key``, ...).
    """
    xp = array_namespace(x)
    f32, low = xp.float32, x.dtype
    up = {k: xp.astype(a, f32) for k, a in params.items()}
    y, new_state, back = forward(up, state, xp.astype(x, f32), **options)

    def backprop(dy, input_grad=True):
        dx, grads = back(xp.astype(dy, f32), input_grad=input_grad)
        grads = {k: xp.astype(g, params[k].dtype) for k, g in grads.items()}
        return (None if dx is None else xp.astype(dx, low)), grads

    return xp.astype(y, low), new_state, backprop
