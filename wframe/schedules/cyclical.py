"""Cyclical schedules: cyclical learning rates (Smith, 2017) and one cycle (Smith, 2018)."""

from __future__ import annotations

from wframe.schedules.common import Schedule, as_count, check
from wframe.schedules.decay import piecewise_interpolate_schedule

MODES = ("triangular", "triangular2", "exp_range")


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

    Args:
      base_value: the value at the start (and the end) of each cycle.
      max_value: the value at the middle of each cycle.
      step_size: half a cycle, in steps (> 0).
      mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``.
      gamma: the per-step factor of ``"exp_range"`` (>= 0; unused by the other modes).

    Raises:
      ValueError: ``step_size <= 0``, an unknown ``mode`` or ``gamma < 0``.
    """
    fn = "cyclical_schedule"
    check(step_size > 0, fn, "step_size > 0", step_size=step_size)
    check(mode in MODES, fn, f"mode in {MODES}", mode=mode)
    check(gamma >= 0, fn, "gamma >= 0", gamma=gamma)

    def schedule(count):
        xp, c, dt = as_count(count)
        cycle = xp.floor(1 + c / (2 * step_size))
        x = xp.abs(c / step_size - 2 * cycle + 1)
        amplitude = (max_value - base_value) * xp.maximum(0.0, 1 - x)
        if mode == "triangular2":
            amplitude = amplitude / 2.0 ** (cycle - 1)
        elif mode == "exp_range":
            amplitude = amplitude * gamma**c
        return xp.asarray(base_value + amplitude, dtype=dt)

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
    ``peak_value / (div_factor * final_div_factor)`` at ``transition_steps``.

    Args:
      transition_steps: the length of the whole cycle in steps (> 0).
      peak_value: the highest value.
      pct_start: the fraction of ``transition_steps`` spent rising.
      div_factor: the start value is ``peak_value / div_factor``.
      final_div_factor: the end value is ``peak_value / (div_factor * final_div_factor)``.
    """
    fn = "cosine_onecycle_schedule"
    check(transition_steps > 0, fn, "transition_steps > 0", transition_steps=transition_steps)
    check(0 <= pct_start < 1, fn, "0 <= pct_start < 1", pct_start=pct_start)
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
    ``peak_value / (div_factor * final_div_factor)`` at ``transition_steps``.

    Args:
      transition_steps: the length of the whole cycle in steps (> 0).
      peak_value: the highest value.
      pct_start: the fraction of ``transition_steps`` spent rising.
      pct_final: the fraction of ``transition_steps`` by which the value is back at
        ``peak_value / div_factor``.
      div_factor: the start value is ``peak_value / div_factor``.
      final_div_factor: the end value is ``peak_value / (div_factor * final_div_factor)``.
    """
    fn = "linear_onecycle_schedule"
    check(transition_steps > 0, fn, "transition_steps > 0", transition_steps=transition_steps)
    start, final = int(pct_start * transition_steps), int(pct_final * transition_steps)
    # Equal boundaries would merge in optax's dict into a wrong schedule.
    check(
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
