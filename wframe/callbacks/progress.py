"""The :class:`ProgressBar` ``fit(verbose=1)`` shows (one line per epoch with ``verbose=2``)."""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any

from tqdm.auto import tqdm

from wframe.callbacks.base import Callback, Logs


def _fmt(logs: Logs) -> str:
    # As Keras' progress bar: 4 decimals, or the exponent form (1.0000e-05) at or below 1e-3,
    # so that a small value (a learning rate of 1e-5) does not print as 0.0000.
    return " - ".join(
        f"{k}: {v:.4f}" if abs(v) > 1e-3 else f"{k}: {v:.4e}" for k, v in logs.items()
    )


def _wrap(head: str, items: list[str], width: int) -> str:
    """``head - item - item ...`` in lines of fewer than ``width`` characters, broken between
    items (the next line indented); an item longer than a line gets a line of its own."""
    lines, line = [], head
    for item in items:
        if len(line) + 3 + len(item) < width:
            line = f"{line} - {item}"
        else:
            lines.append(line)
            line = f"    {item}"
    return "\n".join([*lines, line])


def _terminal_width(out: Any) -> int | None:
    """The terminal's width in columns when ``out`` is a terminal, else ``None``."""
    if not getattr(out, "isatty", lambda: False)():
        return None
    return shutil.get_terminal_size().columns


class ProgressBar(Callback):
    """A tqdm bar per epoch whose postfix shows the running epoch means.

    On a terminal the bar moves with the batches, cut to the terminal's width
    (:func:`shutil.get_terminal_size`); when the epoch ends it gives way to the epoch's line,
    which shows every log (validation included), wrapped onto more lines where the terminal is
    too narrow. When the output is not a terminal (a log file, CI) it prints exactly one line
    per epoch instead.

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
        width = _terminal_width(out)
        if not self.lines and width is not None:
            self._bar = tqdm(
                total=self.params.get("steps"),
                desc=f"epoch {epoch + 1}/{self.params.get('epochs')}",
                file=out,
                leave=False,  # erased at the epoch's end, for the epoch's (wrapped) line
                ncols=width,  # the live line is cut to the width: a longer one scrolls
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
        steps = self.params.get("steps")  # None: an iterable of unknown length
        done = f"{self._done}/{steps}" if steps is not None else f"{self._done}"
        head = f"epoch {epoch + 1}/{self.params.get('epochs')}: {done} steps, {seconds:.2f}s"
        if self._bar is not None:
            self._bar.close()  # erases the live line
            self._bar = None
        out = self._out()
        width = _terminal_width(out)
        items = [_fmt({k: v}) for k, v in (logs or {}).items()]
        line = " - ".join([head, *items]) if width is None else _wrap(head, items, width)
        print(line, file=out, flush=True)

    def on_train_end(self, logs=None):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
