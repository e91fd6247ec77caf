"""The building blocks of Adagrad, Adamax, Lion and Adafactor: the sum of squares, the infinity
moment, Lion's signed momentum, an exponential moving average, per-block clipping and scaling,
and Adafactor's factored second moment, as in optax's ``transform``, ``clipping`` and
``factorized`` (same state classes, fields and nesting, so states interchange leaf-wise).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wframe.backends import array_namespace
from wframe.optimizers.base import (
    EmaState,
    FactoredState,
    GradientTransformation,
    ScaleByAdamState,
    ScaleByLionState,
    ScaleByRssState,
    astype,
    cast,
    count_as_float,
    empty_init,
    full_like,
    per_dtype,
    safe_increment,
    zero_count,
    zeros_like,
)
from wframe.tree import tree_map


def scale_by_rss(
    initial_accumulator_value: float = 0.1, eps: float = 1e-7
) -> GradientTransformation:
    """Divide updates by the root of the sum of all squared updates so far (Adagrad).

    Args:
      initial_accumulator_value: the sum's starting value.
      eps: added to the sum inside the square root.

    Returns:
      A :class:`GradientTransformation` with :class:`ScaleByRssState`.
    """

    def init_fn(params):
        return ScaleByRssState(sum_of_squares=full_like(params, initial_accumulator_value))

    def update_fn(updates, state, params=None):
        del params
        sums = tree_map(lambda g, t: g * g + t, updates, state.sum_of_squares)

        def scaled(g, t):
            xp = array_namespace(t)
            return xp.where(t > 0, 1 / xp.sqrt(t + eps), xp.zeros_like(t)) * g

        return tree_map(scaled, updates, sums), ScaleByRssState(sum_of_squares=sums)

    return GradientTransformation(init_fn, update_fn)


def _debiased(count: Any, decay: Any) -> Callable[[Any], Any]:
    # dtype -> 1 - decay**count in that dtype (computed once per dtype): a bias correction.
    return per_dtype(
        lambda dt: cast(array_namespace(count), dt, 1 - decay ** count_as_float(count, dt))[0]
    )


def scale_by_adamax(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> GradientTransformation:
    """Rescale updates by Adamax's bias-corrected first moment over its infinity moment
    ``max(|g| + eps, b2 * nu)`` (Kingma & Ba, 2014, section 7).

    Args:
      b1: decay of the first moment.
      b2: decay of the infinity moment.
      eps: added to ``|g|`` inside the max, so the denominator is never zero.

    Returns:
      A :class:`GradientTransformation` with :class:`ScaleByAdamState` (``nu``: the infinity
      moment), as optax's.
    """

    def init_fn(params):
        return ScaleByAdamState(
            count=zero_count(params), mu=zeros_like(params), nu=zeros_like(params)
        )

    def update_fn(updates, state, params=None):
        del params
        count = safe_increment(state.count)
        mu = tree_map(lambda g, m: (1 - b1) * g + b1 * m, updates, state.mu)
        nu = tree_map(
            lambda g, v: array_namespace(v).maximum(array_namespace(g).abs(g) + eps, b2 * v),
            updates,
            state.nu,
        )
        correction = _debiased(count, b1)
        updates = tree_map(lambda m, v: m / correction(m.dtype) / v, mu, nu)
        return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)

    return GradientTransformation(init_fn, update_fn)


def scale_by_lion(
    b1: float = 0.9, b2: float = 0.99, mu_dtype: Any = None
) -> GradientTransformation:
    """Lion's update ``sign((1 - b1) g + b1 mu)``, with ``mu`` an average of rate ``b2``
    (Chen et al., 2023).

    Args:
      b1: how much of the momentum the sign takes.
      b2: the momentum's decay.
      mu_dtype: dtype of the momentum, ``None`` to follow the params.

    Returns:
      A :class:`GradientTransformation` with :class:`ScaleByLionState`.
    """

    def init_fn(params):
        mu = _zeros(params, mu_dtype)
        return ScaleByLionState(count=zero_count(params), mu=mu)

    def update_fn(updates, state, params=None):
        del params
        signed = tree_map(
            lambda g, m: array_namespace(g).sign((1 - b1) * g + b1 * m), updates, state.mu
        )
        mu = tree_map(lambda g, m: astype((1 - b2) * g + b2 * m, m.dtype), updates, state.mu)
        return signed, ScaleByLionState(count=safe_increment(state.count), mu=mu)

    return GradientTransformation(init_fn, update_fn)


def ema(decay: float, debias: bool = True, accumulator_dtype: Any = None) -> GradientTransformation:
    """An exponential moving average of the updates, ``ema = (1 - decay) g + decay ema``,
    divided by ``1 - decay**t`` when ``debias``.

    Args:
      decay: the average's decay.
      debias: divide by the bias correction.
      accumulator_dtype: dtype of the stored average (a dtype or its name), ``None`` to follow
        the params.

    Returns:
      A :class:`GradientTransformation` with :class:`EmaState`.
    """

    def init_fn(params):
        return EmaState(count=zero_count(params), ema=_zeros(params, accumulator_dtype))

    def update_fn(updates, state, params=None):
        del params
        new = tree_map(lambda g, t: (1 - decay) * g + decay * t, updates, state.ema)
        count = safe_increment(state.count)
        updates = new
        if debias:
            correction = _debiased(count, decay)
            updates = tree_map(lambda t: t / correction(t.dtype), new)
        stored = tree_map(lambda t, old: astype(t, old.dtype), new, state.ema)
        return updates, EmaState(count=count, ema=stored)

    return GradientTransformation(init_fn, update_fn)


def clip_by_block_rms(threshold: float) -> GradientTransformation:
    """Scale each leaf of the updates down so that its root mean square is at most
    ``threshold``.

    Args:
      threshold: the largest root mean square a leaf keeps.
    """

    def update_fn(updates, state, params=None):
        del params

        def clipped(u):
            xp = array_namespace(u)
            rms = xp.sqrt(xp.mean(u * u)) / threshold
            return u / xp.maximum(xp.ones_like(rms), rms)

        return tree_map(clipped, updates), state

    return GradientTransformation(empty_init, update_fn)


def scale_by_param_block_rms(min_scale: float = 1e-3) -> GradientTransformation:
    """Multiply each leaf of the updates by its param's root mean square (at least
    ``min_scale``), as Adafactor's ``multiply_by_parameter_scale``.

    Args:
      min_scale: the smallest factor applied (for params near zero).
    """

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                "scale_by_param_block_rms needs params: call update(updates, state, params)"
            )

        def scaled(u, p):
            xp = array_namespace(p)
            rms = xp.sqrt(xp.mean(p * p))
            return u * xp.where(rms <= min_scale, xp.asarray(min_scale, dtype=rms.dtype), rms)

        return tree_map(scaled, updates, params), state

    return GradientTransformation(empty_init, update_fn)


def decay_rate_pow(count: Any, exponent: float = 0.8) -> Any:
    """Adafactor's second-moment decay at step ``count`` (from 0): ``1 - (count + 1)**-exponent``,
    in float32 as optax's."""
    xp = array_namespace(count)
    t = xp.astype(count + 1, xp.float32)
    return 1.0 - t ** (-exponent)


def scale_by_factored_rms(
    factored: bool = True,
    decay_rate: float = 0.8,
    step_offset: int = 0,
    min_dim_size_to_factor: int = 128,
    epsilon: float = 1e-30,
    decay_rate_fn: Callable[[Any, Any], Any] = decay_rate_pow,
) -> GradientTransformation:
    """Divide updates by Adafactor's estimate of their root mean square (Shazeer & Stern, 2018):
    for a leaf with two axes of at least ``min_dim_size_to_factor``, the outer product of its
    row and column means (the two largest axes), else a full moving average.

    Args:
      factored: factor the second moment where the shape allows.
      decay_rate: the exponent of the decay schedule ``decay_rate_fn(step, decay_rate)``.
      step_offset: subtracted from the step count (to restart the schedule when fine-tuning).
      min_dim_size_to_factor: the smallest axis size that is factored.
      epsilon: added to the squared updates.
      decay_rate_fn: ``(step, decay_rate) -> decay``.

    Returns:
      A :class:`GradientTransformation` with :class:`FactoredState`.
    """

    def dims(shape: tuple) -> tuple[int, int] | None:
        # The two largest axes (as numpy.argsort orders them), or None where not factored.
        if not factored or len(shape) < 2:
            return None
        order = sorted(range(len(shape)), key=lambda i: shape[i])
        if shape[order[-2]] < min_dim_size_to_factor:
            return None
        return order[-2], order[-1]

    def init_fn(params):
        out = tree_map(lambda p: _init_leaf(p, dims(tuple(p.shape))), params)
        return _to_state(zero_count(params), out)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                "scale_by_factored_rms needs params: call update(updates, state, params)"
            )
        decay = decay_rate_fn(state.count - step_offset, decay_rate)

        def leaf(g, v_row, v_col, v, p):
            return _update_leaf(g, v_row, v_col, v, p, decay, epsilon, dims(tuple(p.shape)))

        out = tree_map(leaf, updates, state.v_row, state.v_col, state.v, params)
        return tree_map(lambda o: o.update, out), _to_state(safe_increment(state.count), out)

    return GradientTransformation(init_fn, update_fn)


# --- helpers ------------------------------------------------------------------------------------


def _zeros(params: Any, dtype: Any) -> Any:
    # zeros_like(params, dtype), a dtype name resolved in each leaf's namespace ("float32").
    if not isinstance(dtype, str):
        return zeros_like(params, dtype)
    return tree_map(
        lambda p: array_namespace(p).zeros_like(p, dtype=getattr(array_namespace(p), dtype)), params
    )


class _Leaf:
    """One leaf's results, opaque to tree_map (no ``shape``, not a container), as optax's
    ``_UpdateResult``."""

    __slots__ = ("update", "v", "v_col", "v_row")

    def __init__(self, update: Any, v_row: Any, v_col: Any, v: Any):
        self.update, self.v_row, self.v_col, self.v = update, v_row, v_col, v


def _init_leaf(p: Any, factored: tuple[int, int] | None) -> _Leaf:
    # The unused moments are (1,) zeros, as optax's.
    xp = array_namespace(p)
    shape = tuple(p.shape)
    if factored is None:
        return _Leaf(None, _one(xp, p.dtype), _one(xp, p.dtype), xp.zeros_like(p))
    d1, d0 = factored
    row = xp.zeros(shape[:d0] + shape[d0 + 1 :], dtype=p.dtype)
    col = xp.zeros(shape[:d1] + shape[d1 + 1 :], dtype=p.dtype)
    return _Leaf(None, row, col, _one(xp, p.dtype))


def _update_leaf(g, v_row, v_col, v, p, decay, eps, factored) -> _Leaf:
    xp = array_namespace(p)
    dtype = p.dtype
    grad_sqr = g * g + eps
    if factored is None:
        new_v = astype(decay * v + (1.0 - decay) * grad_sqr, dtype)
        return _Leaf(g * new_v**-0.5, _one(xp, dtype), _one(xp, dtype), new_v)
    d1, d0 = factored
    new_row = astype(decay * v_row + (1.0 - decay) * xp.mean(grad_sqr, axis=d0), dtype)
    new_col = astype(decay * v_col + (1.0 - decay) * xp.mean(grad_sqr, axis=d1), dtype)
    reduced_d1 = d1 - 1 if d1 > d0 else d1
    row_factor = (new_row / xp.mean(new_row, axis=reduced_d1, keepdims=True)) ** -0.5
    col_factor = new_col**-0.5
    update = g * xp.expand_dims(row_factor, axis=d0) * xp.expand_dims(col_factor, axis=d1)
    return _Leaf(update, new_row, new_col, _one(xp, dtype))


def _one(xp: Any, dtype: Any) -> Any:
    return xp.zeros((1,), dtype=dtype)


def _to_state(count: Any, out: Any) -> FactoredState:
    # Three trees shaped like params from a tree of _Leaf.
    return FactoredState(
        count=count,
        v_row=tree_map(lambda o: o.v_row, out),
        v_col=tree_map(lambda o: o.v_col, out),
        v=tree_map(lambda o: o.v, out),
    )
