"""The report every transfer returns: what it loaded and what it skipped, as a table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TransferReport:
    """What a transfer loaded (source -> target, with shapes) and what it skipped, and why.

    ``str(report)`` is a table of all three lists under a one-line count.

    Args:
      title: the table's heading, naming the transfer (``"from_torch"``, ``"load_pretrained"``).
      loaded: ``(source name, source shape, target name, target shape, note)`` per array
        copied; the note says what was converted (e.g. ``"float64 -> float32"``), or is empty.
      skipped: ``(source name, why)`` per source entry not used.
      missing: the model's names that received nothing (they keep their current values).
    """

    title: str
    loaded: list[tuple[str, tuple, str, tuple, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: The model's names that received nothing (they keep their current values).
    missing: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        rows = [("source", "shape", "target", "shape", "note")]
        rows += [(s, str(ss), t, str(ts), n) for s, ss, t, ts, n in self.loaded]
        rows += [(s, "", "-", "", f"skipped: {why}") for s, why in self.skipped]
        rows += [("-", "", t, "", "not in the source: kept") for t in self.missing]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        pad = [[c.ljust(w) for c, w in zip(r, widths, strict=True)] for r in rows]
        lines = ["  ".join(r).rstrip() for r in pad]
        head = f"{self.title}: {len(self.loaded)} loaded, {len(self.skipped)} skipped"
        return "\n".join([head, lines[0], "-" * sum(widths, 8), *lines[1:]])


def const(value: Any) -> Callable[[Any], Any]:
    """``lambda _: value`` (for :func:`wframe.tree.map_at`)."""
    return lambda _: value
