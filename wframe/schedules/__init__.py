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

Modules: ``decay`` (schedules of one shape), ``join`` (:func:`join_schedules` and the warmups),
``cyclical`` (cyclical and one-cycle schedules), ``common`` (what they share); :func:`get` here.
"""

from __future__ import annotations

import numpy as np

from wframe.schedules.common import Schedule
from wframe.schedules.cyclical import (
    MODES,
    cosine_onecycle_schedule,
    cyclical_schedule,
    linear_onecycle_schedule,
)
from wframe.schedules.decay import (
    constant_schedule,
    cosine_decay_schedule,
    exponential_decay,
    linear_schedule,
    piecewise_constant_schedule,
    piecewise_interpolate_schedule,
    polynomial_schedule,
)
from wframe.schedules.join import (
    join_schedules,
    warmup_cosine_decay_schedule,
    warmup_exponential_decay_schedule,
)

__all__ = [
    "MODES",
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

    Args:
      identifier: a schedule factory's name, a number or a ``step -> value`` callable.
      **kwargs: the factory's arguments (only with a name).

    Raises:
      ValueError: an unknown name.
      TypeError: arguments given with a number or callable, or an identifier of another type.
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
