""":class:`CSVLogger`: stream the epoch logs to a CSV file."""

from __future__ import annotations

import csv
import os
import warnings
from typing import Any

from wframe.callbacks import state as fields
from wframe.callbacks.base import Callback


class CSVLogger(Callback):
    """Write one row per epoch (``epoch`` and the logs) to a CSV file, as Keras'; the file is
    opened for each row and closed after it, so none stays open when ``fit`` is interrupted.

    The columns are ``epoch`` and the first epoch's log keys, sorted; a key missing from a later
    epoch is written ``NA``. With ``append=True`` on a file that has a header, training resumes
    it: no second header, and the file's columns in the file's order. In both cases a key that
    is not a column (one that appears after the first epoch, or that the resumed file lacks) is
    left out, with a warning naming it, once per ``fit``: writing it would break the columns.
    The file is created (or emptied, without ``append``) by the first row of a ``fit``, not at
    ``on_train_begin``, so that a resumed ``fit`` can continue it.

    A :class:`BackupAndRestore` backup keeps its columns and the file's length after its last
    row (:meth:`get_state`): a resumed ``fit`` cuts the file back to that length (rows written
    after the backup are written again) and appends, without a second header, whatever
    ``append`` says, so the file is the uninterrupted run's.

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
        self.csv_file: Any = None  # the file of the last row (closed after it)
        self._mode = "a" if append else "w"  # the next row's
        self._size: int | None = None  # the file's length after this logger's last row
        self._resume: int | None = None  # the length to cut the file back to (a restore)

    def on_train_begin(self, logs=None):
        self.keys, self._header, self._left_out = None, True, set()
        self._size = self._resume = None
        self._mode = "a" if self.append else "w"
        if self.append and os.path.exists(self.filename):
            with open(self.filename, newline="") as f:
                header = next(csv.reader(f, delimiter=self.sep), None)
            if header:
                self._header = False
                self.keys = [k for k in header if k != "epoch"]
        self.close()

    def get_state(self) -> dict:
        """``keys`` (the columns after ``epoch``, ``None`` before the first row) and ``size``
        (the file's length in bytes after this logger's last row, ``None`` before it)."""
        return {"keys": None if self.keys is None else list(self.keys), "size": self._size}

    def set_state(self, state: dict) -> None:
        state = fields.fields(state, "CSVLogger", ("keys", "size"))
        keys = fields.text_list(state["keys"], "CSVLogger: keys", optional=True)
        size = fields.integer(state["size"], "CSVLogger: size", optional=True)
        self.keys, self._size, self._resume = keys, size, size

    def _open(self) -> Any:
        """The file, opened for this row: the first of a ``fit`` as ``append`` says (or cut
        back to a restored length and appended to), the others appended."""
        mode = self._mode
        if self._resume is not None:  # the header is in the file already
            self._cut(self._resume)
            mode, self._resume, self._header = "a", None, False
        self._mode = "a"
        self.csv_file = open(self.filename, mode, newline="")
        return self.csv_file

    def _cut(self, size: int) -> None:
        """Cut the file back to ``size`` bytes: the rows written after the backup go."""
        have = os.path.getsize(self.filename) if os.path.exists(self.filename) else None
        if have is None or have < size:
            warnings.warn(
                f"CSVLogger: {self.filename} holds {have or 0} bytes, fewer than the {size} "
                "it held when the backup was taken; rows are missing, appending to it as it is",
                UserWarning,
                stacklevel=4,
            )
            return
        os.truncate(self.filename, size)

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
        with self._open() as f:
            writer = csv.writer(f, delimiter=self.sep, lineterminator="\n")
            if self._header:
                writer.writerow(["epoch", *self.keys])
                self._header = False
            writer.writerow([epoch, *(logs.get(k, "NA") for k in self.keys)])
            f.flush()
            self._size = os.fstat(f.fileno()).st_size

    def on_train_end(self, logs=None):
        self.close()

    def close(self) -> None:
        """Close the file if it is open (each row closes it; nothing stays open)."""
        if self.csv_file is not None and not self.csv_file.closed:
            self.csv_file.close()
