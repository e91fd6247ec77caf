"""The :class:`ProgressBar` ``fit(verbose=1)`` shows (one line per epoch with ``verbose=2``)."""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm.auto import tqdm

from wframe.callbacks.base import Callback, Logs


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
