"""Schedules of one shape: constant, polynomial (linear), piecewise constant or interpolated,
exponential and cosine decay."""

from __future__ import annotations

import math
from itertools import pairwise

from wframe.schedules.common import Schedule, as_count, check, floor_div, sorted_scales


def constant_schedule(value: float) -> Schedule:
    """``value`` at every step.

    Args:
      value: the constant.
    """

    def schedule(count):
        xp, c, dt = as_count(count)
        return xp.full(c.shape, value, dtype=dt)

    return schedule


def polynomial_schedule(
    init_value: float,
    end_value: float,
    power: float,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    """``(init_value - end_value) * (1 - t / transition_steps) ** power + end_value``.

    Args:
      init_value: the value at step 0 and up to ``transition_begin``.
      end_value: the value from ``transition_begin + transition_steps`` on.
      power: >= 0, the power of the polynomial.
      transition_steps: the length of the transition; <= 0 holds ``init_value`` (as optax).
      transition_begin: the first step of the transition; < 0 counts as 0 (as optax).
    """
    check(power >= 0, "polynomial_schedule", "power >= 0", power=power)  # inf at the end
    if transition_steps <= 0:
        return constant_schedule(init_value)
    transition_begin = max(transition_begin, 0)

    def schedule(count):
        xp, c, dt = as_count(count)
        frac = 1 - xp.clip(c - transition_begin, 0, transition_steps) / transition_steps
        frac = xp.maximum(frac, 0.0)  # -1e-8 at the end under jit: NaN for a fractional power
        return xp.asarray((init_value - end_value) * (frac**power) + end_value, dtype=dt)

    return schedule


def linear_schedule(
    init_value: float, end_value: float, transition_steps: int, transition_begin: int = 0
) -> Schedule:
    """:func:`polynomial_schedule` with ``power=1``: ``init_value`` at step 0.

    Args:
      init_value: the value at step 0 and up to ``transition_begin``.
      end_value: the value from ``transition_begin + transition_steps`` on.
      transition_steps: the length of the transition; <= 0 holds ``init_value``.
      transition_begin: the first step of the transition; < 0 counts as 0.
    """
    return polynomial_schedule(init_value, end_value, 1, transition_steps, transition_begin)


def piecewise_constant_schedule(
    init_value: float, boundaries_and_scales: dict[int, float] | None = None
) -> Schedule:
    """``init_value`` (at step 0) times every scale whose boundary is ``<= count``.

    Args:
      init_value: the value before the first boundary.
      boundaries_and_scales: ``{step: scale}``, scales >= 0, each multiplied in from its step.
    """
    boundaries, scales = sorted_scales("piecewise_constant_schedule", boundaries_and_scales)

    def schedule(count):
        xp, c, dt = as_count(count)
        v = xp.full(c.shape, init_value, dtype=dt)
        for boundary, scale in zip(boundaries, scales, strict=True):
            v = xp.where(c < boundary, v, v * scale)
        return v

    return schedule


def piecewise_interpolate_schedule(
    interpolate_type: str, init_value: float, boundaries_and_scales: dict[int, float] | None = None
) -> Schedule:
    """Interpolate, ``"linear"`` or ``"cosine"``, between the running products of the scales.

    Args:
      interpolate_type: ``"linear"`` or ``"cosine"``.
      init_value: the value at step 0.
      boundaries_and_scales: ``{step: scale}``, scales >= 0; the value reaches
        ``init_value * prod(scales up to step)`` at ``step``.
    """
    fn = "piecewise_interpolate_schedule"
    ok = interpolate_type in ("cosine", "linear")
    check(ok, fn, "'cosine' or 'linear'", interpolate_type=interpolate_type)
    boundaries, scales = sorted_scales(fn, boundaries_and_scales)
    bounds = (0, *boundaries)

    def interpolate(xp, start, end, pct):
        if interpolate_type == "linear":
            return (end - start) * pct + start
        return end + (start - end) / 2.0 * (xp.cos(math.pi * pct) + 1)

    def schedule(count):
        xp, c, dt = as_count(count)
        values = [xp.asarray(init_value, dtype=dt)]
        for scale in scales:
            values.append(values[-1] * scale)
        v = xp.where(c >= bounds[-1], values[-1], 0.0)  # 0 before step 0, as optax
        for i, (lo, hi) in enumerate(pairwise(bounds)):
            pct = (c - lo) / max(hi - lo, 1)
            inside = (c >= lo) & (c < hi)
            v = xp.where(inside, interpolate(xp, values[i], values[i + 1], pct), v)
        return xp.asarray(v, dtype=dt)

    return schedule


def exponential_decay(
    init_value: float,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: float | None = None,
) -> Schedule:
    """``init_value * decay_rate ** ((count - transition_begin) / transition_steps)``.

    Args:
      init_value: the value at step 0 and up to ``transition_begin``.
      transition_steps: the steps per factor ``decay_rate``; <= 0 holds ``init_value`` (as optax).
      decay_rate: >= 0; 0 holds ``init_value`` (as optax).
      transition_begin: the first step of the decay; < 0 counts as 0 (as optax).
      staircase: decay by whole factors (the exponent is floored).
      end_value: a lower bound when ``decay_rate < 1``, else an upper bound.
    """
    # optax takes a negative rate, which gives NaN (or alternating signs with staircase).
    check(decay_rate >= 0, "exponential_decay", "decay_rate >= 0", decay_rate=decay_rate)
    if transition_steps <= 0 or decay_rate == 0:
        return constant_schedule(init_value)
    transition_begin = max(transition_begin, 0)

    def schedule(count):
        xp, c, dt = as_count(count)
        decreased = c - transition_begin
        if staircase:
            p = floor_div(xp, decreased, transition_steps)
        else:
            p = decreased / transition_steps
        v = xp.where(decreased <= 0, init_value, init_value * decay_rate**p)
        if end_value is not None:
            v = (xp.maximum if decay_rate < 1.0 else xp.minimum)(v, end_value)
        return xp.asarray(v, dtype=dt)

    return schedule


def cosine_decay_schedule(
    init_value: float, decay_steps: int, alpha: float = 0.0, exponent: float = 1.0
) -> Schedule:
    """``init_value * ((1 - alpha) * (0.5 * (1 + cos(pi t / decay_steps))) ** exponent + alpha)``.

    Args:
      init_value: the value at step 0.
      decay_steps: > 0; ``alpha * init_value`` holds from this step on.
      alpha: the final value as a fraction of ``init_value``.
      exponent: the power of the cosine factor.
    """
    check(decay_steps > 0, "cosine_decay_schedule", "decay_steps > 0", decay_steps=decay_steps)

    def schedule(count):
        xp, c, dt = as_count(count)
        c = xp.minimum(c, float(decay_steps))
        cosine = 0.5 * (1 + xp.cos(math.pi * c / decay_steps))
        return xp.asarray(init_value * ((1 - alpha) * cosine**exponent + alpha), dtype=dt)

    return schedule
