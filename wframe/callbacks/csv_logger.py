""":class:`CSVLogger`: stream the epoch logs to a CSV file."""

from __future__ import annotations

import csv
import os
import warnings
from typing import Any

from wframe.callbacks.base import Callback


class CSVLogger(Callback):
    """Write one row per epoch (``epoch`` and the logs) to a CSV file, flushed after each row,
    as Keras'.

    The columns are ``epoch`` and the first epoch's log keys, sorted; a key missing from a later
    epoch is written ``NA``. With ``append=True`` on a file that has a header, training resumes
    it: no second header, and the file's columns in the file's order. In both cases a key that
    is not a column (one that appears after the first epoch, or that the resumed file lacks) is
    left out, with a warning naming it, once per ``fit``: writing it would break the columns.

    Differences from Keras: rows end in ``\\n``, not ``\\r\\n``; no ``val_`` columns are added
    when the first epoch has none (Keras adds them for ``validation_freq``, which ``fit`` lacks);
    keys left out warn.

    Args:
      filename: the file's path.
      separator: the column separator.
      append: append to an existing file instead of overwriting it.
    """

    def __init__(self, filename: str | os.PathLike, separator: str = ",", append: bool = False):
        self.filename = os.fspath(filename)
        self.sep = separator
        self.append = append
        self.keys: list[str] | None = None
        self.csv_file: Any = None
        self._writer: Any = None

    def on_train_begin(self, logs=None):
        self.keys, self._writer, self._header, self._left_out = None, None, True, set()
        if self.append and os.path.exists(self.filename):
            with open(self.filename, newline="") as f:
                header = next(csv.reader(f, delimiter=self.sep), None)
            if header:
                self._header = False
                self.keys = [k for k in header if k != "epoch"]
        self.close()
        self.csv_file = open(self.filename, "a" if self.append else "w", newline="")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
        extra = [k for k in logs if k not in self.keys and k not in self._left_out]
        if extra:
            self._left_out.update(extra)
            warnings.warn(
                f"CSVLogger: {extra} are not columns of {self.filename} ({['epoch', *self.keys]}, "
                "fixed by its header or its first epoch) and are left out",
                UserWarning,
                stacklevel=2,
            )
        if self._writer is None:
            self._writer = csv.writer(self.csv_file, delimiter=self.sep, lineterminator="\n")
            if self._header:
                self._writer.writerow(["epoch", *self.keys])
        self._writer.writerow([epoch, *(logs.get(k, "NA") for k in self.keys)])
        self.csv_file.flush()

    def on_train_end(self, logs=None):
        self.close()

    def close(self) -> None:
        """Close the file (``fit`` does at the end of training)."""
        if self.csv_file is not None and not self.csv_file.closed:
            self.csv_file.close()
        self._writer = None
