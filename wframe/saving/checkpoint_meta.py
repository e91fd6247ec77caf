"""A checkpoint's metadata, parsed strictly before anything is loaded.

:func:`wframe.saving.checkpoint.save` writes its counters and where an interrupted ``fit`` goes
on as text; :func:`parse` reads them back refusing anything :func:`~wframe.saving.checkpoint.save`
cannot have written, so a flipped bit or a hand-edited file is refused before the model changes
instead of failing later (a negative seed breaks every later ``fit``, ``resume_epoch=-1e9``
runs a billion epochs, ``resume_batch=-1`` trains one batch too many):

- ``epochs``, ``steps``, ``seed``: decimal integers from 0 to ``2**63 - 1``: ASCII digits
  only, no sign, space, exponent or ``_`` (``"1e3"``, ``""``, ``"nan"``, ``"-1"``, ``" 3"``
  are refused).
- ``resume_epoch`` and ``resume_batch``: both or neither (a backup written within ``fit``
  has both; a ``ModelCheckpoint`` file neither), decimal integers below ``2**31``, and
  ``resume_batch <= steps``: the batches done in the resumed epoch are steps the model took.
  ``resume_epoch`` has no tighter bound: it is ``fit``'s epoch index, which starts at any
  ``initial_epoch``.
- ``frozen``: a JSON list of param names (strings).
- ``input_shape``: a JSON list of dimensions (``null`` or positive integers), or for a model
  of several inputs a list of such lists.
- ``opt_state``: ``"present"`` or ``"absent"``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from wframe.saving.values import short

INT64_MAX = 2**63 - 1
RESUME_MAX = 2**31 - 1  # fit's epoch index and batch counter: beyond any real run
_NATURAL = re.compile(r"[0-9]{1,19}")  # ASCII digits only (str.isdigit takes '²' and '٣')


class Fields(NamedTuple):
    """The parsed fields: the counters, the frozen set, where ``fit`` goes on (``None``: at an
    epoch's start), the build shape (a tuple of shapes for several inputs) and whether the
    file holds an optimizer state."""

    epochs: int
    steps: int
    seed: int
    frozen: frozenset[str]
    resume_at: tuple[int, int] | None
    input_shape: tuple
    opt_state: bool


def parse(meta: Mapping[str, Any]) -> tuple[Fields | None, list[str]]:
    """``(fields, [])`` of a checkpoint's metadata, or ``(None, problems)``: one line per
    missing or invalid entry, each naming the entry, the value found (shortened) and what
    was expected."""
    problems: list[str] = []
    counters = ("epochs", "steps", "seed")
    epochs, steps, seed = (_natural(meta, k, INT64_MAX, problems) for k in counters)
    resume_at = _resume(meta, steps, problems)
    frozen = _json(meta, "frozen", _names, "a JSON list of param names", problems)
    shape = _json(meta, "input_shape", _build_shape, _SHAPE, problems)
    opt_state = meta.get("opt_state")
    if opt_state not in ("present", "absent"):
        problems.append(_bad("opt_state", opt_state, "'present' or 'absent'"))
    if problems:
        return None, problems
    fields = Fields(epochs, steps, seed, frozen, resume_at, shape, opt_state == "present")
    return fields, []


_SHAPE = (
    "a JSON list of dimensions (null or integers >= 1), e.g. [null, 28, 28, 1], or a list of "
    "them for several inputs"
)


def _bad(key: str, value: Any, expected: str) -> str:
    if value is None:
        return f"missing metadata entry {key!r} (expected {expected})"
    return f"metadata {key}={short(repr(value))}: expected {expected}"


def _natural(meta: Mapping, key: str, maximum: int, problems: list[str]) -> int | None:
    """``meta[key]`` as an int from 0 to ``maximum``, else ``None`` (the problem recorded)."""
    value = meta.get(key)
    if isinstance(value, str) and _NATURAL.fullmatch(value) and int(value) <= maximum:
        return int(value)
    problems.append(_bad(key, value, f"a decimal integer from 0 to {maximum}"))
    return None


def _resume(meta: Mapping, steps: int | None, problems: list[str]) -> tuple[int, int] | None:
    """``(resume_epoch, resume_batch)``, ``None`` where neither is there."""
    has = [k in meta for k in ("resume_epoch", "resume_batch")]
    if not any(has):
        return None
    if not all(has):
        given, other = ("resume_epoch", "resume_batch")[:: 1 if has[0] else -1]
        problems.append(
            f"metadata has {given} but no {other}: a backup records both (where an interrupted "
            "fit goes on); the file is damaged"
        )
        return None
    epoch = _natural(meta, "resume_epoch", RESUME_MAX, problems)
    batch = _natural(meta, "resume_batch", RESUME_MAX, problems)
    if batch is not None and steps is not None and batch > steps:
        problems.append(
            f"metadata resume_batch={batch} exceeds steps={steps}: the batches done in the "
            "resumed epoch are steps the model took; the file is damaged"
        )
        return None
    return None if epoch is None or batch is None else (epoch, batch)


def _json(meta: Mapping, key: str, check: Any, expected: str, problems: list[str]) -> Any:
    """``check(json.loads(meta[key]))``, or ``None`` with the problem recorded where the
    entry is missing, is not JSON or ``check`` refuses it (returns ``None``)."""
    value = meta.get(key)
    try:
        got = check(json.loads(value)) if isinstance(value, str) else None
    except (ValueError, RecursionError):  # not JSON, or nested beyond the parser's depth
        got = None
    if got is None:
        problems.append(_bad(key, value, expected))
    return got


def _names(x: Any) -> frozenset[str] | None:
    ok = isinstance(x, list) and all(isinstance(n, str) for n in x)
    return frozenset(x) if ok else None


def _build_shape(x: Any) -> tuple | None:
    """A build shape from its JSON: one shape, or a tuple of shapes (several inputs)."""
    if isinstance(x, list) and x and all(isinstance(s, list) for s in x):
        shapes = [_one_shape(s) for s in x]
        return None if any(s is None for s in shapes) else tuple(shapes)
    return _one_shape(x)


def _one_shape(x: Any) -> tuple | None:
    def dim(d: Any) -> bool:  # (JSON true is a bool, and 3.0 a float: neither is a size)
        return d is None or (type(d) is int and 1 <= d <= INT64_MAX)

    return tuple(x) if isinstance(x, list) and x and all(dim(d) for d in x) else None
