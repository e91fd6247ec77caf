"""What callbacks and other threads see of a running ``fit``, and when.

The loop trains on arrays of its own (its steps consume them: donated on JAX, updated in place on
NumPy). :class:`ArraySync` publishes them to the model, with the counters that match, only where
nothing will consume them afterwards: before each batch hook of a callback that needs the weights
(JAX's calls then do not donate their input; NumPy's publish a copy), as a copy at each epoch's end
when there are callbacks, and as they are when ``fit`` ends, whatever ends it. A callback that
assigns the model's arrays in a hook (a new learning rate, restored weights) has training go on from
those. :class:`Interrupts` holds Ctrl-C back while a call runs and its result is taken in, so that
what the loop holds is always one complete step.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from wframe.types import TrainState


class ArraySync:
    """The model's side of the loop's arrays: ``take`` copies to train on, ``publish`` them
    back, ``changed`` tells whether a callback assigned new ones since."""

    def __init__(self, model: Any, strategy: Any, *, per_batch: bool, per_epoch: bool):
        self.model, self.backend, self.strategy = model, model.backend, strategy
        self.per_batch, self.per_epoch = per_batch, per_epoch
        self._seen: TrainState | None = None

    def take(self, *, copy: bool = True) -> TrainState:
        """The model's arrays to train on (placed for the strategy): a copy, or (``copy=False``,
        for calls that consume nothing) the model's own."""
        self._seen = self.model.train_state
        ts = self.backend.copy(self._seen) if copy else self._seen
        return ts if self.strategy is None else self.strategy.place(ts)

    def changed(self) -> bool:
        """Whether something assigned the model's arrays since the last take or publish."""
        return self.model.train_state is not self._seen

    def publish(self, ts: TrainState, steps: int, epochs: int, *, copy: bool) -> None:
        """Make ``ts`` (a copy of it, when a later call may consume it) the model's."""
        self.model.commit(self.backend.copy(ts) if copy else ts, steps=steps, epochs=epochs)
        self._seen = self.model.train_state


class Interrupts:
    """While entered (in the main thread, where Python's default Ctrl-C handler is in place;
    a handler of the user's is left alone), Ctrl-C while ``holding`` is set is only marked
    ``pending`` (:meth:`raise_pending` raises it once the block is done; ``with
    interrupts.held:`` does both); a second Ctrl-C meanwhile is raised at once."""

    def __init__(self) -> None:
        self.holding = self.pending = False
        self._previous: Any = None
        self.held = _Held(self)

    def __enter__(self) -> Interrupts:
        main = threading.current_thread() is threading.main_thread()
        if main and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.holding and not self.pending:
            self.pending = True
            return
        raise KeyboardInterrupt

    def raise_pending(self) -> None:
        """Raise the Ctrl-C that came while holding, if one did."""
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


class _Held:
    """``with interrupts.held:``: a block run whole."""

    def __init__(self, interrupts: Interrupts):
        self.interrupts = interrupts

    def __enter__(self) -> None:
        self.interrupts.holding = True

    def __exit__(self, *exc: Any) -> None:
        self.interrupts.holding = False
        self.interrupts.raise_pending()
