"""Callbacks: code that ``fit`` calls at the start and end of training, epochs and batches.

The hook names and signatures are Keras': ``on_epoch_end(self, epoch, logs=None)`` and so on;
``self.model`` is the model being trained, and setting ``self.model.stop_training = True`` ends
``fit`` after the current batch. Logs hold host floats. Per-batch logs cost a device sync on JAX,
so ``fit`` reads them at every batch only when some callback overrides a batch hook
(:attr:`Callback.needs_batch_logs`); otherwise it reads the running losses at the progress bar's
refresh interval and at the end of each epoch.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from tqdm.auto import tqdm

Logs = dict[str, float]


class Callback:
    """Base class: every hook does nothing; override the ones you need."""

    model: Any = None
    params: dict[str, Any] = {}

    @property
    def needs_batch_logs(self) -> bool:
        """True when a batch hook is overridden: ``fit`` then syncs and reads logs every batch."""
        return _overrides(self, "on_train_batch_end", "on_batch_end", "on_train_batch_begin",
                          "on_batch_begin")

    def set_model(self, model: Any) -> None:
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def on_train_begin(self, logs: Logs | None = None) -> None: ...
    def on_train_end(self, logs: Logs | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None: ...
    def on_batch_begin(self, batch: int, logs: Logs | None = None) -> None: ...
    def on_batch_end(self, batch: int, logs: Logs | None = None) -> None: ...

    def on_train_batch_begin(self, batch: int, logs: Logs | None = None) -> None:
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        self.on_batch_end(batch, logs)


class History(Callback):
    """Records the epoch logs: ``history.history["loss"]`` is the per-epoch list.

    ``fit`` returns it; only epochs that completed are recorded.
    """

    def __init__(self):
        self.epoch: list[int] = []
        self.history: dict[str, list[float]] = {}

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        self.epoch.append(epoch)
        for name, value in (logs or {}).items():
            self.history.setdefault(name, []).append(value)

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)})"


def _fmt(logs: Logs) -> str:
    return " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())


class ProgressBar(Callback):
    """A tqdm bar per epoch whose postfix shows the running epoch means.

    On a terminal the bar moves with the batches; when the output is not a terminal (a log
    file, CI) it prints exactly one line per epoch instead.

    Args:
      file: where to write (default ``sys.stdout``).
      refresh: seconds between postfix updates (each one reads the losses from the device).
      lines: one line per epoch even on a terminal (``fit(verbose=2)``).
    """

    needs_batch_logs = False

    def __init__(self, file: Any = None, refresh: float = 0.1, lines: bool = False):
        self.file = file
        self.refresh = refresh
        self.lines = lines
        self._bar = None

    def _out(self):
        return self.file if self.file is not None else sys.stdout

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._start = time.perf_counter()
        self._done = 0
        self._logs: Logs = {}
        out = self._out()
        if not self.lines and getattr(out, "isatty", lambda: False)():
            self._bar = tqdm(
                total=self.params.get("steps"),
                desc=f"epoch {epoch + 1}/{self.params.get('epochs')}",
                file=out,
                leave=True,
                mininterval=self.refresh,
            )

    def on_train_batch_end(self, batch, logs=None):
        self._done = batch + 1
        if self._bar is not None and logs:
            # Moved only with fresh logs (read at the refresh interval), so the counter and the
            # running means it shows always belong to the same batch.
            self._bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()}, refresh=False)
            self._bar.update(self._done - self._bar.n)

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        line = (
            f"epoch {epoch + 1}/{self.params.get('epochs')}: {self._done}/"
            f"{self.params.get('steps')} steps, {seconds:.2f}s - {_fmt(logs or {})}"
        )
        if self._bar is None:
            print(line, file=self._out(), flush=True)
            return
        # On a terminal the finished bar, with the epoch's logs (validation included) as its
        # postfix, is the epoch's one line.
        self._bar.update(self._done - self._bar.n)
        self._bar.set_postfix_str(_fmt(logs or {}), refresh=True)
        self._bar.close()
        self._bar = None

    def on_train_end(self, logs=None):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class TerminateOnNaN(Callback):
    """Stops training at the first batch whose loss is NaN or inf (as Keras').

    ``fit`` already stops on a non-finite loss at its next sync point and keeps the last finite
    weights; this callback makes it check every batch.
    """

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            print(f"Batch {batch}: invalid loss, terminating training", flush=True)
            self.model.stop_training = True


def _overrides(cb: Callback, *hooks: str) -> bool:
    return any(getattr(type(cb), hook) is not getattr(Callback, hook) for hook in hooks)


class CallbackList:
    """Calls a hook on every callback in order."""

    def __init__(self, callbacks: list[Callback], model: Any, params: dict[str, Any]):
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(
                    "callbacks must be wframe.callbacks.Callback instances, got "
                    f"{type(cb).__name__}"
                )
            cb.set_model(model)
            cb.set_params(params)
        self.callbacks = callbacks
        self.needs_batch_logs = any(cb.needs_batch_logs for cb in callbacks)
        # Batch hooks run every step: call only the callbacks that override them.
        self._begin = [cb for cb in callbacks if _overrides(cb, "on_train_batch_begin",
                                                            "on_batch_begin")]
        self._end = [cb for cb in callbacks if _overrides(cb, "on_train_batch_end",
                                                          "on_batch_end")]

    def batch_begin(self, batch: int) -> None:
        for cb in self._begin:
            cb.on_train_batch_begin(batch)

    def batch_end(self, batch: int, logs: Logs | None) -> None:
        for cb in self._end:
            cb.on_train_batch_end(batch, logs)

    def __getattr__(self, hook: str):
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def call(*args: Any) -> None:
            for cb in self.callbacks:
                getattr(cb, hook)(*args)

        return call
