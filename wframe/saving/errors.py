"""The one error about a file's content: :class:`WeightsFileError` (a ``ValueError``), naming
the file and listing its problems, capped so that a file with a million broken entries still
gives a readable message (the full list stays on the exception)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: problems a message lists before it says how many more there are
MAX_LISTED = 50


class WeightsFileError(ValueError):
    """A weights file whose content is broken or does not fit the model.

    The message lists the problems found (at most :data:`MAX_LISTED`, then how many more),
    one per line, then the options that would loosen the check; ``path`` and ``problems``
    hold the file and every problem.

    Args:
      message: the whole message, naming the file.
      path: the file (``None`` where there is none, e.g. a model copied from another).
      problems: every problem found, one line each (the message may list fewer).
    """

    def __init__(self, message: str, path: str | None = None, problems: tuple[str, ...] = ()):
        super().__init__(message)
        self.path, self.problems = path, list(problems)


def file_error(heading: str, path: str, problems: list[str], fixes=()) -> WeightsFileError:
    """The :class:`WeightsFileError` listing ``problems`` (and the ``fixes`` that apply).

    Args:
      heading: the message's first line, naming the file and what failed.
      path: the file, kept as the error's ``path``.
      problems: every problem, one line each; the message lists the first :data:`MAX_LISTED`.
      fixes: lines of advice (options that would loosen the check), sorted, after the list.
    """
    listed = [f"  {p}" for p in capped(problems, MAX_LISTED)]
    return WeightsFileError("\n".join([heading, *listed, *sorted(fixes)]), path, tuple(problems))


def capped(lines: Iterable[str], limit: int = 20) -> list[str]:
    """The first ``limit`` of ``lines``, then ``"... and N more"`` for the rest (a hostile
    file can have a million problems; a message lists a screenful)."""
    lines = list(lines)
    if len(lines) <= limit:
        return lines
    return [*lines[:limit], f"... and {len(lines) - limit} more"]


def not_safetensors(path: str, problems: list[str], fixes=()) -> WeightsFileError:
    """The error for a file that is not a valid safetensors file."""
    return file_error(f"{path!r} is not a safetensors file:", path, problems, fixes)


def json_type(x: Any) -> str:
    """The JSON name of a parsed value's type (objects may come as tuples of pairs)."""
    kinds = {
        dict: "object",
        tuple: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        type(None): "null",
    }
    return kinds.get(type(x), "number")


def short(x: Any, limit: int = 80) -> str:
    """``repr(x)``, cut to ``limit`` characters."""
    text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A ``json.loads`` object hook: the object as a dict, refusing a repeated key (which
    readers would resolve differently)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"duplicate key {twice!r}")
    return out
