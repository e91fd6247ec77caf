"""Schedules joined in sequence: :func:`join_schedules` and the warmups built on it."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from wframe.schedules.common import Schedule, as_count, check
from wframe.schedules.decay import cosine_decay_schedule, exponential_decay, linear_schedule


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """``schedules[i + 1]`` from ``boundaries[i]`` on, called with the steps since that boundary.

    Args:
      schedules: the schedules in order; step 0 gives ``schedules[0](0)``.
      boundaries: strictly increasing steps, one fewer than ``schedules``.
    """
    fn, schedules, boundaries = "join_schedules", list(schedules), list(boundaries)
    ok = len(schedules) >= 1 and all(map(callable, schedules))
    check(ok, fn, "a non-empty sequence of callables", schedules=schedules)
    check(
        len(boundaries) == len(schedules) - 1,
        fn,
        "len(boundaries) == len(schedules) - 1",
        boundaries=boundaries,
        schedules=schedules,
    )
    ok = all(a < b for a, b in pairwise(boundaries))  # optax would skip a schedule
    check(ok, fn, "strictly increasing boundaries", boundaries=boundaries)

    def schedule(count):
        xp, c, dt = as_count(count)
        v = xp.asarray(schedules[0](count), dtype=dt)
        for boundary, s in zip(boundaries, schedules[1:], strict=True):
            v = xp.where(c < boundary, v, xp.asarray(s(count - boundary), dtype=dt))
        return v

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

    Args:
      init_value: the value at step 0.
      peak_value: the value at the end of the warmup.
      warmup_steps: the warmup's length in steps.
      decay_steps: the total length, warmup included (> ``warmup_steps``).
      end_value: the value at ``decay_steps`` and after.
      exponent: the power of the cosine (as :func:`cosine_decay_schedule`'s).
    """
    check(
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
    :func:`exponential_decay` of ``peak_value``, its steps counted from the warmup's end.

    Args:
      init_value: the value at step 0.
      peak_value: the value at the end of the warmup, where the decay starts.
      warmup_steps: the warmup's length in steps.
      transition_steps, decay_rate, transition_begin, staircase, end_value: as
        :func:`exponential_decay`'s.
    """
    warmup = linear_schedule(init_value, peak_value, warmup_steps)
    decay = exponential_decay(
        peak_value, transition_steps, decay_rate, transition_begin, staircase, end_value
    )
    return join_schedules([warmup, decay], [warmup_steps])
