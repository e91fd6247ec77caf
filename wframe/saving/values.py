"""What a loaded array may hold: the value checks every load path shares, by the array's name.

A file (or a PyTorch ``state_dict``) can hold arrays of the right names, shapes and dtypes whose
values still break the model: a NaN weight, an inf in an optimizer moment, a negative BatchNorm
variance (``sqrt(var + eps)`` is NaN), a negative learning rate hyper-parameter (training climbs
the loss), a negative step count (Adam's bias correction explodes). :func:`check_values` finds
them on the host copy before anything is placed in a model; :mod:`wframe.saving.checkpoint`,
:mod:`wframe.saving.weights` and :func:`wframe.transfer.from_torch` call it with each array's
name in the file's namespaces:

- ``"dense_0/W"``: a param; any finite value.
- ``"@state/batch_norm_0/var"``: layer state; a ``var`` (BatchNorm's running variance,
  :class:`wframe.layers.BatchNorm`) must be ``>= 0``.
- ``"@opt/..."``: optimizer state, by its path in the optimizer's structure (NamedTuple field
  names included, as :mod:`wframe.saving.checkpoint` stores it): step counts (``count``),
  second moments (``nu``, ``sum_of_squares``, Adafactor's ``v_row``/``v_col``/``v``) and the
  hyper-parameters of :func:`wframe.optimizers.inject_hyperparams` (optax's
  ``hyperparams/learning_rate`` too) listed in :data:`NON_NEGATIVE_HYPERPARAMS` must be ``>= 0``.
- ``"@loss_scale/scale"`` must be ``> 0``, ``"@loss_scale/counter"`` ``>= 0``.

The other helpers here keep error messages short whatever a file holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

#: Hyper-parameters stored in an optimizer state that no optimizer takes negative.
NON_NEGATIVE_HYPERPARAMS = frozenset(
    {
        "learning_rate",
        "b1",
        "b2",
        "b3",
        "eps",
        "eps_root",
        "weight_decay",
        "decay",
        "decay_rate",
        "decay_offset",
        "momentum",
        "initial_scale",
        "initial_accumulator_value",
        "clipping_threshold",
        "max_norm",
        "rho",
    }
)
#: Optimizer-state fields that hold non-negative values: step counts and second moments.
_NON_NEGATIVE_FIELDS = {
    "count": "a step count",
    "nu": "a second-moment estimate",
    "sum_of_squares": "a sum of squares",
    "v_row": "a second-moment estimate",
    "v_col": "a second-moment estimate",
    "v": "a second-moment estimate",
}
#: Path parts of an optimizer state that are structure, not a field (chains, wrappers).
_STRUCTURE = {"inner_state", "inner_states"}
_CHUNK = 1 << 20  # elements per pass: the checks' temporaries stay ~1 MB whatever the array


def check_values(
    name: str, a: np.ndarray, *, allow_nonfinite: bool = False, dtype: Any = None
) -> list[str]:
    """The problems of the host array ``a`` stored as ``name`` (``[]``: it may be loaded).

    Args:
      name: the array's name in the file's namespaces (``"dense_0/W"``,
        ``"@state/batch_norm_0/var"``, ``"@opt/hyperparams/learning_rate"``,
        ``"@loss_scale/scale"``), which says what its values mean.
      a: the array as read (a NumPy array or scalar).
      allow_nonfinite: accept NaN and inf (for debugging a diverged run); the sign rules and
        overflows are checked all the same.
      dtype: the floating dtype ``a`` will be cast to, if another: finite values that the
        cast would make inf are a problem (1e300 in float64 for a float32 model).

    Returns:
      One line per problem, naming ``name``, the value found and, where one exists, the fix.
    """
    a = np.asarray(a)
    if a.dtype.kind not in "biufc" or a.size == 0:
        return []
    problems = []
    floating = a.dtype.kind in "fc"
    bad = _first_nonfinite(a) if floating else None
    if bad is not None and not allow_nonfinite:
        count = _count(a, lambda part: ~np.isfinite(part))
        where = f"{count} NaN or inf (first at index {bad}: {a[bad]!s})" if a.ndim else a[()]
        problems.append(
            f"non-finite values in {short(name)}: {where}; allow_nonfinite=True loads them "
            "(to debug a diverged run)"
        )
    if dtype is not None and a.dtype.kind == "f" and np.dtype(dtype).kind == "f":
        top, limit = _largest_finite(a), float(np.finfo(dtype).max)
        if a.dtype.itemsize > np.dtype(dtype).itemsize and top > limit:
            problems.append(
                f"{short(name)} holds values up to {top:.4g}, which overflow {np.dtype(dtype)} "
                f"(max {limit:.4g}): the cast would make them inf; rescale them or load into "
                f"a {a.dtype} model"
            )
    rule = _rule(name)
    if rule is not None and a.dtype.kind != "c":
        strict, meaning = rule
        low = _first(a, (lambda p: p <= 0) if strict else (lambda p: p < 0))
        if low is not None:
            need, at = "> 0" if strict else ">= 0", f" (at index {low})" if a.ndim else ""
            problems.append(f"{short(name)} is {meaning} and must be {need}, got {a[low]!s}{at}")
    return problems


def short(value: Any, limit: int = 80) -> str:
    """``str(value)`` cut to ``limit`` characters (a name or value read from a file may be
    megabytes long)."""
    text = value if isinstance(value, str) else " ".join(repr(value).split())
    return text if len(text) <= limit else f"{text[: limit - 30]}...({len(text)} characters)"


# ----------------------------------------------------------------------------- by name
def _rule(name: str) -> tuple[bool, str] | None:
    """``(strictly positive?, what the values are)`` for a name with a sign rule, else None."""
    parts = name.split("/")
    if parts[0] == "@state" and parts[-1] == "var":
        return False, "a variance (BatchNorm's running variance)"
    if parts[0] == "@loss_scale":
        return {"scale": (True, "a loss scale"), "counter": (False, "a step counter")}.get(
            parts[-1]
        )
    if parts[0] == "@opt":
        return _opt_rule(parts[1:])
    return None


def _opt_rule(parts: list[str]) -> tuple[bool, str] | None:
    """The rule of an optimizer-state leaf, from its first field name past the structure (a
    chain's index, ``inner_state``, a ``multi_transform``'s ``inner_states/<label>``)."""
    i = 0
    while i < len(parts):
        part = parts[i]
        if part.isdigit() or part in _STRUCTURE:
            i += 2 if part == "inner_states" else 1
            continue
        if part == "hyperparams" and i + 1 < len(parts):
            hyper = parts[i + 1]
            known = hyper in NON_NEGATIVE_HYPERPARAMS
            return (False, f"the hyper-parameter {hyper}") if known else None
        meaning = _NON_NEGATIVE_FIELDS.get(part)
        return None if meaning is None else (False, meaning)
    return None


# ----------------------------------------------------------------------------- chunked scans
def _chunks(a: np.ndarray) -> Iterable[tuple[int, np.ndarray]]:
    flat = a.reshape(-1)
    for start in range(0, flat.size, _CHUNK):
        yield start, flat[start : start + _CHUNK]


def _first(a: np.ndarray, test: Any) -> tuple[int, ...] | None:
    """The index of the first element where ``test`` holds, or None."""
    for start, part in _chunks(a):
        hits = test(part)
        if hits.any():
            return tuple(int(i) for i in np.unravel_index(start + int(hits.argmax()), a.shape))
    return None


def _first_nonfinite(a: np.ndarray) -> tuple[int, ...] | None:
    return _first(a, lambda part: ~np.isfinite(part))


def _count(a: np.ndarray, test: Any) -> int:
    return sum(int(np.count_nonzero(test(part))) for _, part in _chunks(a))


def _largest_finite(a: np.ndarray) -> float:
    top = 0.0
    for _, part in _chunks(a):
        top = max(top, float(np.max(np.abs(part), initial=0.0, where=np.isfinite(part))))
    return top
