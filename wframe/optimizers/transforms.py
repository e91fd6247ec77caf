"""The building blocks the named optimizers chain: scaling, momentum, Adam's and RMSProp's
moments, weight decay and clipping, as in optax's ``transforms``.
"""

from __future__ import annotations

from typing import Any

from wframe.backends import array_namespace
from wframe.optimizers.base import (
    EmptyState,
    GradientTransformation,
    MaskedState,
    ScalarOrSchedule,
    ScaleByAdamState,
    ScaleByRmsState,
    ScaleByRmsWithCountState,
    ScaleByRStdDevState,
    ScaleByRStdDevWithCountState,
    ScaleByScheduleState,
    Schedule,
    TraceState,
    WeightDecaySchedule,
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
from wframe.tree import tree_leaves, tree_map


def scale(step_size: float) -> GradientTransformation:
    """Multiply updates by a constant ``step_size``.

    Args:
      step_size: the factor (a float).
    """

    def update_fn(updates, state, params=None):
        del params
        return tree_map(lambda g: step_size * g, updates), state

    return GradientTransformation(empty_init, update_fn)


def scale_by_schedule(step_size_fn: Schedule) -> GradientTransformation:
    """Multiply updates by ``step_size_fn(count)``, counting steps from 0.

    Args:
      step_size_fn: a schedule, ``step -> factor`` (:mod:`wframe.schedules`).

    Returns:
      A :class:`GradientTransformation` with :class:`ScaleByScheduleState`.
    """

    def update_fn(updates, state, params=None):
        del params
        step_size = step_size_fn(state.count)
        xp = array_namespace(state.count)
        get = per_dtype(lambda dtype: xp.asarray(step_size, dtype=dtype))
        updates = tree_map(lambda g: get(g.dtype) * g, updates)
        return updates, ScaleByScheduleState(count=safe_increment(state.count))

    return GradientTransformation(lambda p: ScaleByScheduleState(zero_count(p)), update_fn)


def scale_by_learning_rate(
    learning_rate: ScalarOrSchedule, *, flip_sign: bool = True
) -> GradientTransformation:
    """Scale by ``-learning_rate`` (a float or a ``step -> value`` schedule).

    Args:
      learning_rate: a float or a ``step -> value`` schedule.
      flip_sign: negate the factor (default), so that adding the updates descends.
    """
    m = -1 if flip_sign else 1
    if callable(learning_rate):
        return scale_by_schedule(lambda count: m * learning_rate(count))
    return scale(m * learning_rate)


def trace(
    decay: float, nesterov: bool = False, accumulator_dtype: Any = None
) -> GradientTransformation:
    """Momentum: ``trace = g + decay * trace``; Nesterov returns ``g + decay * trace``.

    Args:
      decay: the momentum coefficient.
      nesterov: return ``g + decay * new_trace`` (Nesterov) instead of the trace.
      accumulator_dtype: dtype of the stored trace, ``None`` to follow the params.

    Returns:
      A :class:`GradientTransformation` with :class:`TraceState`.
    """

    def update_fn(updates, state, params=None):
        del params
        new_trace = tree_map(lambda g, t: g + decay * t, updates, state.trace)
        out = tree_map(lambda g, t: g + decay * t, updates, new_trace) if nesterov else new_trace
        if accumulator_dtype is not None:
            new_trace = tree_map(lambda t: astype(t, accumulator_dtype), new_trace)
        return out, TraceState(trace=new_trace)

    return GradientTransformation(
        lambda p: TraceState(trace=zeros_like(p, accumulator_dtype)), update_fn
    )


def scale_by_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    """Rescale updates by Adam's bias-corrected moments (Kingma & Ba, 2014).

    Args:
      b1: decay of the first moment.
      b2: decay of the second moment.
      eps: added to the denominator outside the square root.
      eps_root: added to the second moment inside the square root.
      mu_dtype: dtype of the first moment, ``None`` to follow the params.
      nesterov: use Nesterov momentum (NAdam).

    Returns:
      A :class:`GradientTransformation` with :class:`ScaleByAdamState`.
    """

    # The add is skipped for a literal eps_root of 0 only (an injected one is an array).
    rooted = not (isinstance(eps_root, (int, float)) and eps_root == 0)

    def init_fn(params):
        mu, nu = zeros_like(params, mu_dtype), zeros_like(params)
        return ScaleByAdamState(count=zero_count(params), mu=mu, nu=nu)

    def update_fn(updates, state, params=None):
        del params
        count = safe_increment(state.count)

        get = per_dtype(lambda dtype: _adam_scalars(count, dtype, b1, b2, eps, eps_root, nesterov))

        def scaled(g, m, v):
            eps_t, root_t, *m_scales = get(m.dtype)
            xp = array_namespace(v)
            den = xp.sqrt(v + root_t if rooted else v) + eps_t
            num = m_scales[0] * m + m_scales[1] * g if nesterov else m_scales[0] * m
            return num / den

        mu = tree_map(lambda g, m: (1 - b1) * g + b1 * m, updates, state.mu)
        nu = tree_map(lambda g, v: (1 - b2) * (g * g) + b2 * v, updates, state.nu)
        updates = tree_map(scaled, updates, mu, nu)
        if mu_dtype is not None:
            mu = tree_map(lambda t: astype(t, mu_dtype), mu)
        nu = tree_map(lambda t, old: astype(t, old.dtype), nu, state.nu)
        return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)

    return GradientTransformation(init_fn, update_fn)


def _adam_scalars(count, dtype, b1, b2, eps, eps_root, nesterov) -> list:
    # The bias corrections fold into per-step scalars (Kingma & Ba, section 2):
    # mu/c1 / (sqrt(nu/c2 + eps_root) + eps) = (r/c1) mu / (sqrt(nu + c2 eps_root) + r eps)
    # with c_i = 1 - b_i**t and r = sqrt(c2): no per-leaf bias-correction pass.
    t = count_as_float(count, dtype)
    xp = array_namespace(t)
    c2 = 1 - b2**t
    r = xp.sqrt(c2)
    if nesterov:  # optax's NAdam: b1 mu/(1 - b1**(t+1)) + (1 - b1) g/(1 - b1**t)
        m_scales = (b1 * r / (1 - b1 ** (t + 1)), (1 - b1) * r / (1 - b1**t))
    else:
        m_scales = (r / (1 - b1**t),)
    return cast(xp, dtype, eps * r, eps_root * c2, *m_scales)


def _scale_by_moments(decay, eps, initial_scale, eps_in_sqrt, bias_correction, centered):
    # scale_by_rms and scale_by_stddev differ only in tracking (and subtracting) the mean.
    plain, counted = (
        (ScaleByRStdDevState, ScaleByRStdDevWithCountState)
        if centered
        else (ScaleByRmsState, ScaleByRmsWithCountState)
    )

    def init_fn(params):
        moments = {"nu": full_like(params, initial_scale)}
        if centered:
            moments["mu"] = zeros_like(params)
        if bias_correction:
            return counted(count=zero_count(params), **moments)
        return plain(**moments)

    def update_fn(updates, state, params=None):
        del params
        new = {"nu": tree_map(lambda g, n: (1 - decay) * (g * g) + decay * n, updates, state.nu)}
        if centered:
            new["mu"] = tree_map(lambda g, m: (1 - decay) * g + decay * m, updates, state.mu)
        if bias_correction:
            count = safe_increment(state.count)
            xp_c = array_namespace(count)
            # Divided, not multiplied by an inverse: centered, nu_hat - mu_hat**2 cancels on the
            # first steps and amplifies any rounding difference from optax.
            bc = per_dtype(lambda dt: cast(xp_c, dt, 1 - decay ** count_as_float(count, dt))[0])

        def scaled(g, n, m=None):
            xp = array_namespace(n)
            if bias_correction:  # one scalar per step, not one power per leaf
                c = bc(n.dtype)
                n, m = n / c, (None if m is None else m / c)
            var = n if m is None else n - m * m
            return g / (xp.sqrt(var + eps) if eps_in_sqrt else xp.sqrt(var) + eps)

        if centered:
            updates = tree_map(scaled, updates, new["nu"], new["mu"])
        else:
            updates = tree_map(scaled, updates, new["nu"])
        return updates, (counted(count=count, **new) if bias_correction else plain(**new))

    return GradientTransformation(init_fn, update_fn)


def scale_by_rms(
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> GradientTransformation:
    """Divide updates by the root of a moving average of squared updates (RMSProp).

    Args:
      decay: decay of the moving averages.
      eps: added to the denominator for numerical stability.
      initial_scale: the initial value of the squared-update average ``nu``.
      eps_in_sqrt: add ``eps`` inside the square root (default) rather than after it.
      bias_correction: divide the averages by ``1 - decay**t``, as Adam does (the state then
        counts steps).
    """
    return _scale_by_moments(decay, eps, initial_scale, eps_in_sqrt, bias_correction, False)


def scale_by_stddev(
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> GradientTransformation:
    """Divide updates by a moving estimate of their standard deviation (centered RMSProp).

    Args:
      decay: decay of the moving averages.
      eps: added to the denominator for numerical stability.
      initial_scale: the initial value of the squared-update average ``nu``.
      eps_in_sqrt: add ``eps`` inside the square root (default) rather than after it.
      bias_correction: divide the averages by ``1 - decay**t``, as Adam does (the state then
        counts steps).
    """
    return _scale_by_moments(decay, eps, initial_scale, eps_in_sqrt, bias_correction, True)


def add_decayed_weights(
    weight_decay: ScalarOrSchedule = 0.0, mask: Any = None
) -> GradientTransformation:
    """Add ``weight_decay * params`` to updates, where ``mask`` (a bool tree or callable) is true.

    Args:
      weight_decay: a float or a ``step -> value`` schedule.
      mask: ``None`` (all params), a tree of bools like the params, or ``params -> tree``.

    Returns:
      A :class:`GradientTransformation`; its state is wrapped in :class:`MaskedState` when
      ``mask`` is given, as optax's ``masked`` does.
    """
    scheduled = callable(weight_decay)

    def init_fn(params):
        inner = WeightDecaySchedule(zero_count(params)) if scheduled else EmptyState()
        return inner if mask is None else MaskedState(inner_state=inner)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                "add_decayed_weights needs params: call update(updates, state, params)"
            )
        inner = state if mask is None else state.inner_state
        if scheduled:  # the value in each leaf's dtype, as scale_by_schedule
            value, xp = weight_decay(inner.count), array_namespace(inner.count)
            s = per_dtype(lambda dtype: xp.asarray(value, dtype=dtype))
            inner = WeightDecaySchedule(safe_increment(inner.count))
        else:
            s = lambda dtype: weight_decay  # noqa: E731
        keep = mask(params) if callable(mask) else mask
        if keep is None:
            updates = tree_map(lambda g, p: g + s(p.dtype) * p, updates, params)
        else:
            updates = tree_map(
                lambda g, p, k: g + s(p.dtype) * p if k else g, updates, params, keep
            )
        return updates, (inner if mask is None else MaskedState(inner_state=inner))

    return GradientTransformation(init_fn, update_fn)


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """Rescale updates so that their global L2 norm is at most ``max_norm``.

    Args:
      max_norm: the largest global L2 norm (over every leaf together) let through.
    """

    def update_fn(updates, state, params=None):
        del params
        leaves = tree_leaves(updates)
        if not leaves:
            return updates, state
        xp = array_namespace(leaves[0])
        g_norm = xp.sqrt(sum(xp.sum(g * g) for g in leaves))
        updates = tree_map(
            lambda t: xp.where(g_norm < max_norm, t, t / xp.astype(g_norm, t.dtype) * max_norm),
            updates,
        )
        return updates, state

    return GradientTransformation(empty_init, update_fn)
