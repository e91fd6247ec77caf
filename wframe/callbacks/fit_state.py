"""What a backup holds of a ``fit`` besides the model's arrays: every callback's state and the
running sums of the epoch in progress (:class:`FitState`), as one JSON document.

A resumed ``fit`` is the uninterrupted one only if everything that decides its future comes
back: the arrays and counters (the checkpoint), the state the callbacks keep across epochs
(:meth:`Callback.get_state`: a patience counter, a best value, a pruning schedule's position)
and, for a backup taken within an epoch, that epoch's running sums of the loss and metric
statistics, so that its logged means cover all its batches, not only those after the restart.
The sums are the host's float64 copies of the model-dtype sums (exact), written as JSON
numbers (Python's ``repr`` of a float64 reads back to the same float).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

from wframe.callbacks import state as fields_mod
from wframe.callbacks.base import Callback, overrides

VERSION = 1


class Layout(NamedTuple):
    """What the running sums of a ``fit`` hold: the logged ``names`` (the loss first), each
    one value (``size`` 0) or a metric's vector of ``size`` statistics, then ``stats``
    per-parameter statistics (:class:`GradientMonitor`) and the example count."""

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    stats: int

    def length(self) -> int:
        """How many floats the sums hold, vectors spread."""
        return sum(n or 1 for n in self.sizes) + self.stats + 1


class Parsed(NamedTuple):
    """A checked backup document: the states matched to this ``fit``'s callbacks, the keys of
    the callbacks that found no counterpart (either way) and the epoch's running sums."""

    states: list[tuple[Callback, dict]]
    unmatched: list[str]
    new: list[str]
    sums: list[float] | None


class FitState:
    """The callbacks of one ``fit`` whose state a backup keeps (those that override
    :meth:`~Callback.get_state`; not the savers, History or the progress bar), and the channel
    to the loop's running sums.

    Callbacks are keyed by class name and position among the callbacks of their class
    (``"ReduceLROnPlateau #0"``). A callback of the resumed ``fit`` that the backup has no
    state for starts afresh (e.g. a :class:`ModelCheckpoint` added for the rest of the run); a
    state of the backup that no callback of the resumed ``fit`` takes (one left out, or of
    another class now) is a warning naming it, and training goes on.

    The loop sets :attr:`layout` and :attr:`read_sums` before ``on_train_begin`` and takes
    :attr:`restored_sums` after it.
    """

    def __init__(self, callbacks: list[Callback]):
        self.callbacks = [cb for cb in callbacks if overrides(cb, "get_state")]
        #: the running sums' :class:`Layout` (``None``: no loop, nothing to store)
        self.layout: Layout | None = None
        #: the last reading of the epoch's running sums, as floats (set by the loop)
        self.read_sums: Callable[[], list[float]] | None = None
        #: the running sums a restored backup's epoch goes on from (taken by the loop)
        self.restored_sums: list[float] | None = None
        self._pending: Parsed | None = None

    def keys(self) -> list[str]:
        """``"<class> #<i>"`` of each callback: its class and place among those of its class."""
        seen: dict[str, int] = {}
        out = []
        for cb in self.callbacks:
            name = type(cb).__name__
            out.append(f"{name} #{seen.get(name, 0)}")
            seen[name] = seen.get(name, 0) + 1
        return out

    # ----------------------------------------------------------------- saving
    def capture(self, within_epoch: bool) -> str:
        """The JSON document of the states now and, ``within_epoch``, the running sums.

        Raises:
          TypeError: a callback's state that JSON cannot hold, naming it.
        """
        states = {}
        for key, cb in zip(self.keys(), self.callbacks, strict=True):
            state = cb.get_state()
            try:
                json.dumps(state)
            except (TypeError, ValueError) as e:
                raise TypeError(
                    f"BackupAndRestore: {key}.get_state() returned {state!r}, which JSON cannot "
                    f"hold ({e}); return numbers, strings, None, lists and dicts"
                ) from None
            states[key] = state
        epoch = None
        if within_epoch and self.layout is not None and self.read_sums is not None:
            epoch = {**self.layout._asdict(), "sums": list(self.read_sums())}
        return json.dumps({"version": VERSION, "callbacks": states, "epoch": epoch})

    # ----------------------------------------------------------------- restoring
    def parse(self, text: Any, within_epoch: bool) -> Parsed:
        """Check a document :meth:`capture` wrote against this ``fit``: its structure, each
        state (by the callback's own :meth:`~Callback.set_state`, undone at once) and the
        running sums (present exactly when the backup was taken ``within_epoch``, of this
        fit's layout). Changes nothing.

        Raises:
          ValueError: the first problem, naming the entry.
        """
        if not isinstance(text, str):
            raise ValueError(f"the backup state must be a JSON string, got {text!r}")
        try:
            doc = json.loads(text, object_pairs_hook=_unique)
        except ValueError as e:
            raise ValueError(f"the backup state is not valid JSON ({e})") from None
        doc = fields_mod.fields(doc, "the backup state", ("version", "callbacks", "epoch"))
        if doc["version"] != VERSION or isinstance(doc["version"], bool):
            raise ValueError(
                f"the backup state has version {doc['version']!r}; this wframe reads {VERSION}"
            )
        stored = doc["callbacks"]
        if not isinstance(stored, dict) or not all(isinstance(s, dict) for s in stored.values()):
            raise ValueError(f"the backup's callbacks must map names to dicts, got {stored!r}")
        mine = dict(zip(self.keys(), self.callbacks, strict=True))
        states = [(mine[key], state) for key, state in stored.items() if key in mine]
        for (cb, state), key in zip(states, (k for k in stored if k in mine), strict=True):
            _check_state(cb, state, key)
        unmatched = sorted(k for k in stored if k not in mine)
        new = sorted(k for k in mine if k not in stored)
        return Parsed(states, unmatched, new, self._parse_sums(doc["epoch"], within_epoch))

    def _parse_sums(self, epoch: Any, within_epoch: bool) -> list[float] | None:
        if (epoch is not None) != within_epoch:
            where = "within an epoch" if within_epoch else "at an epoch's end"
            raise ValueError(
                f"the backup was taken {where} (resume_batch) but its epoch sums are "
                f"{'missing' if epoch is None else 'present'}"
            )
        if epoch is None:
            return None
        epoch = fields_mod.fields(epoch, "the backup's epoch", ("names", "sizes", "stats", "sums"))
        names = fields_mod.text_list(epoch["names"], "the backup's epoch names")
        sizes = epoch["sizes"]
        if not isinstance(sizes, list) or len(sizes) != len(names):
            raise ValueError(f"the backup's epoch sizes must be {len(names)} ints, got {sizes!r}")
        sizes = [fields_mod.integer(n, "an epoch size") for n in sizes]
        stats = fields_mod.integer(epoch["stats"], "the backup's epoch stats")
        got = Layout(tuple(names), tuple(sizes), stats)
        sums = epoch["sums"]
        if not isinstance(sums, list) or len(sums) != got.length():
            raise ValueError(
                f"the backup's epoch sums must be {got.length()} numbers, got {_short(sums)}"
            )
        sums = [fields_mod.number(v, "an epoch sum", finite=True) for v in sums]
        if self.layout is None:
            return sums
        want = self.layout
        if (got.names, got.sizes) != (want.names, want.sizes):
            raise ValueError(
                f"the epoch in progress at the backup logged {list(got.names)} (sizes "
                f"{list(got.sizes)}) and this fit logs {list(want.names)} (sizes "
                f"{list(want.sizes)}); resume with the same compile(loss=..., metrics=...)"
            )
        if got.stats != want.stats:  # a GradientMonitor came or went: those sums start at 0
            cut = len(sums) - 1 - got.stats
            sums = [*sums[:cut], *[0.0] * want.stats, sums[-1]]
        return sums

    def restore(self, parsed: Parsed) -> None:
        """Keep a parsed document for :meth:`apply` (after every ``on_train_begin``) and its
        running sums for the loop."""
        self._pending, self.restored_sums = parsed, parsed.sums

    def apply(self) -> None:
        """Give each callback its restored state (after their ``on_train_begin``, which resets
        them); warn about the states of the backup that no callback took."""
        parsed, self._pending = self._pending, None
        if parsed is None:
            return
        for cb, state in parsed.states:
            cb.set_state(state)
        if parsed.unmatched:
            new = f"; these start afresh: {parsed.new}" if parsed.new else ""
            warnings.warn(
                f"BackupAndRestore: the backup holds the states of {parsed.unmatched}, which "
                f"no callback of this fit takes: they are not restored{new}. Resume with the "
                "same callbacks (in the same order within each class) for the run an "
                "uninterrupted one would have been",
                UserWarning,
                stacklevel=4,
            )


def _check_state(cb: Callback, state: dict, key: str) -> None:
    """Check ``state`` with ``cb``'s own :meth:`~Callback.set_state`, then put back what ``cb``
    held (``set_state(get_state())`` changes nothing)."""
    before = cb.get_state()
    try:
        cb.set_state(state)
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"the state of {key} in the backup: {e}") from None
    finally:
        cb.set_state(before)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different (``json`` keeps the last of twins)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        twice = sorted({k for k, _ in pairs if [p for p, _ in pairs].count(k) > 1})
        raise ValueError(f"the keys {twice} appear twice in one object")
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
