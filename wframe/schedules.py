"""Hyper-parameter schedules: plain ``step -> value`` callables, as in optax.

A schedule maps a step count (a Python number, or an integer or floating array) to a floating
array of the count's namespace, in that namespace's default float dtype (float32 on JAX, float64
on NumPy and CuPy); ``float(schedule(17))`` gives the host value. Each is written once against
the array API, so the same object works on every backend and inside optax, which calls it with a
``jnp.int32`` count. On JAX it is evaluated inside the compiled train step: the count is a traced
array and every branch is an ``xp.where``, so a changing count never retraces.

Names, signatures and numerics follow ``optax.schedules`` (0.2.8); :func:`cyclical_schedule`
(Smith, 2017) is added. Arguments that optax would turn into silently wrong values raise
``ValueError`` here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise

import numpy as np

from wframe.backends import array_namespace
from wframe.types import Array

__all__ = [
    "constant_schedule",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "cyclical_schedule",
    "exponential_decay",
    "get",
    "join_schedules",
    "linear_onecycle_schedule",
    "linear_schedule",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "polynomial_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
]

Schedule = Callable[[Array], Array]
_MODES = ("triangular", "triangular2", "exp_range")


def _count(count):
    """The count's namespace, the count in that namespace's default float dtype, the dtype."""
    if isinstance(count, (int, float, np.generic)):  # a host call such as schedule(17)
        count = np.asarray(count)
    xp = array_namespace(count)
    dt = xp.asarray(0.0).dtype  # float32 on JAX unless x64 is on
    return xp, xp.astype(count, dt), dt


def _check(ok: bool, fn: str, expected: str, **received) -> None:
    if not ok:
        got = ", ".join(f"{k}={v!r}" for k, v in received.items())
        raise ValueError(f"{fn}: expected {expected}. Received: {got}.")


def _floor_div(xp, a, b):
    # floor(a / b), exact at multiples of b under jax.jit too, where XLA turns a division by a
    # constant into a product with its rounded reciprocal (optax's staircase then steps late).
    q = xp.floor(a / b)
    q = xp.where(q * b > a, q - 1, q)
    return xp.where((q + 1) * b <= a, q + 1, q)


def _scales(fn: str, boundaries_and_scales) -> tuple[tuple, tuple]:
    if not boundaries_and_scales:
        return (), ()
    boundaries, scales = zip(*sorted(boundaries_and_scales.items()), strict=True)
    ok = all(s >= 0.0 for s in scales)
    _check(ok, fn, "scales >= 0", boundaries_and_scales=boundaries_and_scales)
    return boundaries, scales


def constant_schedule(value: float) -> Schedule:
    """``value`` at every step."""

    def schedule(count):
        xp, c, dt = _count(count)
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
    _check(power >= 0, "polynomial_schedule", "power >= 0", power=power)  # inf at the end
    if transition_steps <= 0:
        return constant_schedule(init_value)
    transition_begin = max(transition_begin, 0)

    def schedule(count):
        xp, c, dt = _count(count)
        frac = 1 - xp.clip(c - transition_begin, 0, transition_steps) / transition_steps
        frac = xp.maximum(frac, 0.0)  # -1e-8 at the end under jit: NaN for a fractional power
        return xp.asarray((init_value - end_value) * (frac**power) + end_value, dtype=dt)

    return schedule


def linear_schedule(
    init_value: float, end_value: float, transition_steps: int, transition_begin: int = 0
) -> Schedule:
    """:func:`polynomial_schedule` with ``power=1``: ``init_value`` at step 0."""
    return polynomial_schedule(init_value, end_value, 1, transition_steps, transition_begin)


def piecewise_constant_schedule(
    init_value: float, boundaries_and_scales: dict[int, float] | None = None
) -> Schedule:
    """``init_value`` (at step 0) times every scale whose boundary is ``<= count``.

    Args:
      init_value: the value before the first boundary.
      boundaries_and_scales: ``{step: scale}``, scales >= 0, each multiplied in from its step.
    """
    boundaries, scales = _scales("piecewise_constant_schedule", boundaries_and_scales)

    def schedule(count):
        xp, c, dt = _count(count)
        v = xp.full(c.shape, init_value, dtype=dt)
        for boundary, scale in zip(boundaries, scales, strict=True):
            v = xp.where(c < boundary, v, v * scale)
        return v

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
    _check(decay_rate >= 0, "exponential_decay", "decay_rate >= 0", decay_rate=decay_rate)
    if transition_steps <= 0 or decay_rate == 0:
        return constant_schedule(init_value)
    transition_begin = max(transition_begin, 0)

    def schedule(count):
        xp, c, dt = _count(count)
        decreased = c - transition_begin
        if staircase:
            p = _floor_div(xp, decreased, transition_steps)
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
    _check(decay_steps > 0, "cosine_decay_schedule", "decay_steps > 0", decay_steps=decay_steps)

    def schedule(count):
        xp, c, dt = _count(count)
        c = xp.minimum(c, float(decay_steps))
        cosine = 0.5 * (1 + xp.cos(math.pi * c / decay_steps))
        return xp.asarray(init_value * ((1 - alpha) * cosine**exponent + alpha), dtype=dt)

    return schedule


def warmup_cosine_decay_schedule(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    decay_steps: int,
    end_value: float = 0.0,
    exponent: float = 1.0,
) -> Schedule:
    """Linear warmup from ``init_value`` (step 0) to ``peak_value``, then cosine to ``end_value``.

    ``decay_steps`` includes the warmup: the cosine lasts ``decay_steps - warmup_steps`` steps.
    """
    _check(
        decay_steps > warmup_steps,
        "warmup_cosine_decay_schedule",
        "decay_steps > warmup_steps (decay_steps includes the warmup)",
        decay_steps=decay_steps,
        warmup_steps=warmup_steps,
    )
    alpha = 0.0 if peak_value == 0.0 else end_value / peak_value
    warmup = linear_schedule(init_value, peak_value, warmup_steps)
    decay = cosine_decay_schedule(peak_value, decay_steps - warmup_steps, alpha, exponent)
    return join_schedules([warmup, decay], [warmup_steps])


def warmup_exponential_decay_schedule(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: float | None = None,
) -> Schedule:
    """Linear warmup from ``init_value`` (step 0) to ``peak_value``, then
    :func:`exponential_decay` of ``peak_value``, its steps counted from the warmup's end."""
    warmup = linear_schedule(init_value, peak_value, warmup_steps)
    decay = exponential_decay(
        peak_value, transition_steps, decay_rate, transition_begin, staircase, end_value
    )
    return join_schedules([warmup, decay], [warmup_steps])


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
    _check(ok, fn, "'cosine' or 'linear'", interpolate_type=interpolate_type)
    boundaries, scales = _scales(fn, boundaries_and_scales)
    bounds = (0, *boundaries)

    def interpolate(xp, start, end, pct):
        if interpolate_type == "linear":
            return (end - start) * pct + start
        return end + (start - end) / 2.0 * (xp.cos(math.pi * pct) + 1)

    def schedule(count):
        xp, c, dt = _count(count)
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


def cosine_onecycle_schedule(
    transition_steps: int,
    peak_value: float,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """One cycle (Smith, 2018), cosine: from ``peak_value / div_factor`` at step 0 up to
    ``peak_value`` at ``pct_start * transition_steps``, then down to
    ``peak_value / (div_factor * final_div_factor)`` at ``transition_steps``."""
    fn = "cosine_onecycle_schedule"
    _check(transition_steps > 0, fn, "transition_steps > 0", transition_steps=transition_steps)
    _check(0 <= pct_start < 1, fn, "0 <= pct_start < 1", pct_start=pct_start)
    scales = {
        int(pct_start * transition_steps): div_factor,
        int(transition_steps): 1.0 / (div_factor * final_div_factor),
    }
    return piecewise_interpolate_schedule("cosine", peak_value / div_factor, scales)


def linear_onecycle_schedule(
    transition_steps: int,
    peak_value: float,
    pct_start: float = 0.3,
    pct_final: float = 0.85,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """One cycle, linear: from ``peak_value / div_factor`` at step 0 up to ``peak_value`` at
    ``pct_start * transition_steps``, back down by ``pct_final * transition_steps``, then to
    ``peak_value / (div_factor * final_div_factor)`` at ``transition_steps``."""
    fn = "linear_onecycle_schedule"
    _check(transition_steps > 0, fn, "transition_steps > 0", transition_steps=transition_steps)
    start, final = int(pct_start * transition_steps), int(pct_final * transition_steps)
    # Equal boundaries would merge in optax's dict into a wrong schedule.
    _check(
        0 <= start < final < transition_steps,
        fn,
        "0 <= int(pct_start * transition_steps) < int(pct_final * transition_steps) < "
        "transition_steps",
        transition_steps=transition_steps,
        pct_start=pct_start,
        pct_final=pct_final,
    )
    scales = {start: div_factor, final: 1.0 / div_factor, transition_steps: 1 / final_div_factor}
    return piecewise_interpolate_schedule("linear", peak_value / div_factor, scales)


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """``schedules[i + 1]`` from ``boundaries[i]`` on, called with the steps since that boundary.

    Args:
      schedules: the schedules in order; step 0 gives ``schedules[0](0)``.
      boundaries: strictly increasing steps, one fewer than ``schedules``.
    """
    fn, schedules, boundaries = "join_schedules", list(schedules), list(boundaries)
    ok = len(schedules) >= 1 and all(map(callable, schedules))
    _check(ok, fn, "a non-empty sequence of callables", schedules=schedules)
    _check(
        len(boundaries) == len(schedules) - 1,
        fn,
        "len(boundaries) == len(schedules) - 1",
        boundaries=boundaries,
        schedules=schedules,
    )
    ok = all(a < b for a, b in pairwise(boundaries))  # optax would skip a schedule
    _check(ok, fn, "strictly increasing boundaries", boundaries=boundaries)

    def schedule(count):
        xp, c, dt = _count(count)
        v = xp.asarray(schedules[0](count), dtype=dt)
        for boundary, s in zip(boundaries, schedules[1:], strict=True):
            v = xp.where(c < boundary, v, xp.asarray(s(count - boundary), dtype=dt))
        return v

    return schedule


def cyclical_schedule(
    base_value: float,
    max_value: float,
    step_size: int,
    mode: str = "triangular",
    gamma: float = 1.0,
) -> Schedule:
    """Cyclical learning rate (Smith, 2017, "Cyclical Learning Rates for Training Neural Networks").

    ``base_value`` at step 0, ``max_value`` at ``step_size``, ``base_value`` again at
    ``2 * step_size``, and so on (``step_size`` > 0 is half a cycle). The amplitude is scaled by 1
    (``mode="triangular"``), halved every cycle (``"triangular2"``) or multiplied by
    ``gamma ** step`` (``"exp_range"``, ``gamma >= 0``).
    """
    fn = "cyclical_schedule"
    _check(step_size > 0, fn, "step_size > 0", step_size=step_size)
    _check(mode in _MODES, fn, f"mode in {_MODES}", mode=mode)
    _check(gamma >= 0, fn, "gamma >= 0", gamma=gamma)

    def schedule(count):
        xp, c, dt = _count(count)
        cycle = xp.floor(1 + c / (2 * step_size))
        x = xp.abs(c / step_size - 2 * cycle + 1)
        amplitude = (max_value - base_value) * xp.maximum(0.0, 1 - x)
        if mode == "triangular2":
            amplitude = amplitude / 2.0 ** (cycle - 1)
        elif mode == "exp_range":
            amplitude = amplitude * gamma**c
        return xp.asarray(base_value + amplitude, dtype=dt)

    return schedule


_FACTORIES = {
    f.__name__: f
    for f in (
        constant_schedule,
        cosine_decay_schedule,
        cosine_onecycle_schedule,
        cyclical_schedule,
        exponential_decay,
        join_schedules,
        linear_onecycle_schedule,
        linear_schedule,
        piecewise_constant_schedule,
        piecewise_interpolate_schedule,
        polynomial_schedule,
        warmup_cosine_decay_schedule,
        warmup_exponential_decay_schedule,
    )
}


def get(identifier: str | float | Schedule, **kwargs) -> Schedule:
    """A schedule from a factory's name and arguments, a number (constant), or a callable.

    ``get("cosine_decay_schedule", init_value=0.1, decay_steps=1000)``; ``get(0.1)`` is
    ``constant_schedule(0.1)``; a callable passes through.
    """
    if isinstance(identifier, str):
        if identifier not in _FACTORIES:
            names = sorted(_FACTORIES)
            raise ValueError(f"Unknown schedule {identifier!r}. Expected one of {names}.")
        return _FACTORIES[identifier](**kwargs)
    if kwargs:
        raise TypeError(f"schedule {identifier!r} takes no arguments, got {kwargs}")
    if isinstance(identifier, (int, float, np.number)) and not isinstance(identifier, bool):
        return constant_schedule(identifier)
    if not callable(identifier):
        raise TypeError(f"schedule must be a name, a number or a callable, got {identifier!r}")
    return identifier
