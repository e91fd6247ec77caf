"""Checked fields of a callback's saved state (:meth:`Callback.set_state`): what a backup file
gives back is parsed strictly, never coerced."""

from __future__ import annotations

import math
import numbers
from typing import Any


def fields(state: Any, who: str, required: tuple[str, ...]) -> dict[str, Any]:
    """``state`` if it is a dict with exactly the keys ``required``.

    Raises:
      ValueError: naming ``who``, the missing and the unexpected keys.
    """
    if not isinstance(state, dict):
        raise ValueError(f"{who}: the state must be a dict, got {type(state).__name__}")
    missing = sorted(set(required) - set(state))
    unexpected = sorted(set(state) - set(required))
    if missing or unexpected:
        raise ValueError(
            f"{who}: the state must have the keys {sorted(required)}; missing {missing}, "
            f"unexpected {unexpected}"
        )
    return state


def integer(value: Any, what: str, minimum: int = 0, *, optional: bool = False) -> int | None:
    """``value`` if it is an int (not a bool) ``>= minimum`` (or ``None`` when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}, got {value!r}")
    return value


def number(value: Any, what: str, *, optional: bool = False, finite: bool = False) -> float | None:
    """``value`` as a float if it is a real number (not a bool; NaN and inf only when not
    ``finite``), or ``None`` when ``optional``. An int becomes the float it equals."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be a number, got {value!r}")
    value = float(value)
    if finite and not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return value


def text_list(value: Any, what: str, *, optional: bool = False) -> list[str] | None:
    """``value`` if it is a list of strings (or ``None`` when ``optional``)."""
    if value is None and optional:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} must be a list of strings, got {value!r}")
    return list(value)


def json_float(value: float | None) -> float | None:
    """A monitored value as JSON stores it exactly: a Python float (a NumPy scalar's value)."""
    return None if value is None else float(value)
