""":class:`ModelCheckpoint`: save the model (or its weights) every epoch or every few steps."""

from __future__ import annotations

import os

from wframe.backends.process import is_writer
from wframe.callbacks import state as fields
from wframe.callbacks.monitor import MonitorCallback
from wframe.callbacks.save_freq import EveryNSteps, check_save_freq
from wframe.file_names import check_suffix


class ModelCheckpoint(EveryNSteps, MonitorCallback):
    """Save the model or its weights during training, as Keras 3's.

    ``filepath`` is formatted with ``str.format``: ``{epoch}`` is the 1-based epoch (Keras'
    ``epoch + 1``), ``{batch}`` the 1-based batch for saves within an epoch, and any log entry
    by name (``"ckpt-{epoch:02d}-{val_loss:.3f}.safetensors"``); a name the logs lack raises a
    KeyError. Missing folders are created.

    A full checkpoint (the default) holds params, state, masks, the optimizer state and the
    step, epoch and seed counters (:func:`wframe.saving.checkpoint.save`): load it with
    ``model.load_checkpoint(path)`` and ``fit(..., initial_epoch=...)`` continues exactly as an
    uninterrupted run would (from a checkpoint written at the end of an epoch). With
    ``save_weights_only`` the file is :func:`wframe.saving.weights.save_weights`'s (params,
    state, masks).

    With an integer ``save_freq`` the callback saves from the batch hook (so ``fit`` publishes
    the live arrays to the model at every batch: slower). It counts the model's training steps
    over its life and saves at the first batch hook at or after each multiple of
    ``save_freq``; with ``steps_per_execution=k`` the hook runs once per ``k`` steps, so a save
    may come up to ``k - 1`` steps after the multiple (and several multiples passed in one
    call give one save).

    With ``save_best_only``, an epoch whose logs lack ``monitor`` is saved, as in Keras 3, with
    a warning listing the entries there are (once per ``fit``; Keras warns each time).

    A :class:`BackupAndRestore` backup keeps its best value and the files it wrote
    (:meth:`get_state`), so a resumed ``fit`` saves (and, with ``keep_last``, deletes) the
    files an uninterrupted one would.

    Differences from Keras: the file is safetensors, so another format's suffix (``.keras``,
    ``.h5``) is refused when the callback is made, any other name accepted (Keras asks for
    ``.keras`` or ``.weights.h5``); ``keep_last``; ``save_freq`` counts the model's steps, not
    the batches this callback has seen.

    Args:
      filepath: where to write, possibly with ``{epoch}``, ``{batch}`` and log names.
      monitor: the log entry ``save_best_only`` watches.
      verbose: 1 prints a line at each save (and each epoch that does not improve).
      save_best_only: save only when ``monitor`` improves on the best value so far.
      save_weights_only: write a weights file instead of a full checkpoint.
      mode: ``"auto"``, ``"min"`` or ``"max"``; ``"auto"`` maximizes names containing
        ``"acc"`` or ``"auc"``.
      save_freq: ``"epoch"``, or an integer number of training steps.
      initial_value_threshold: the value to beat before the first save with
        ``save_best_only``.
      keep_last: keep only the last ``keep_last`` files this callback wrote, deleting older
        ones; files it did not write are never deleted. ``None`` keeps all.
    """

    _missing = "Can save best model only with metric"

    def __init__(
        self,
        filepath: str | os.PathLike,
        monitor: str = "val_loss",
        verbose: int = 0,
        save_best_only: bool = False,
        save_weights_only: bool = False,
        mode: str = "auto",
        save_freq: str | int = "epoch",
        initial_value_threshold: float | None = None,
        keep_last: int | None = None,
    ):
        super().__init__(monitor, mode)
        self.filepath = os.fspath(filepath)
        check_suffix(self.filepath)  # now, not after the first epoch has trained
        self.verbose = verbose
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only
        self.save_freq = check_save_freq(save_freq, "ModelCheckpoint")
        self.best = initial_value_threshold
        if keep_last is not None and (
            isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1
        ):
            raise ValueError(
                f"ModelCheckpoint: keep_last must be None or an integer >= 1. Received: "
                f"keep_last={keep_last!r}"
            )
        self.keep_last = keep_last
        # Batch-level saves read the arrays after the batch: fit must publish them.
        self.needs_weights = self.save_freq != "epoch"
        self.written: list[str] = []  # the files this callback wrote, oldest first
        self._epoch = 0
        self._mark: int | None = None  # save_freq multiples of the step count saved for

    def on_train_begin(self, logs=None):
        self._warned = False
        self._mark = None

    def get_state(self) -> dict:
        """``best`` (the best monitored value so far) and ``written`` (its files, oldest first)."""
        return {"best": fields.json_float(self.best), "written": list(self.written)}

    def set_state(self, state: dict) -> None:
        who = "ModelCheckpoint"
        state = fields.fields(state, who, ("best", "written"))
        best = fields.number(state["best"], f"{who}: best", optional=True)
        self.best, self.written = best, fields.text_list(state["written"], f"{who}: written")

    def on_epoch_begin(self, epoch, logs=None):
        self._start_epoch(epoch)

    def on_train_batch_end(self, batch, logs=None):
        if self._due():
            self._save(self._epoch, batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch, None, logs)

    def _path(self, epoch: int, batch: int | None, logs: dict) -> str:
        names = dict(logs)
        if batch is not None and "batch" not in names:
            names["batch"] = batch + 1
        try:
            return self.filepath.format(**{**names, "epoch": epoch + 1})
        except KeyError as e:
            raise KeyError(
                f'Failed to format this callback filepath: "{self.filepath}". Reason: {e}. '
                f"Available: epoch, {'batch, ' if batch is not None else ''}"
                f"{', '.join(logs) or '(no logs)'}"
            ) from None

    def _should_save(self, epoch: int, logs: dict, path: str) -> bool:
        if not self.save_best_only:
            if self.verbose > 0:
                print(f"\nEpoch {epoch + 1}: saving model to {path}", flush=True)
            return True
        current = self._monitor_value(logs)
        if current is None:  # as Keras 3: nothing to compare, so save
            return True
        best = "None" if self.best is None else f"{self.best:.5f}"
        if self._is_improvement(current, self.best):
            if self.verbose > 0:
                print(
                    f"\nEpoch {epoch + 1}: {self.monitor} improved from {best} to "
                    f"{current:.5f}, saving model to {path}",
                    flush=True,
                )
            self.best = current
            return True
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {best}", flush=True)
        return False

    def _save(self, epoch: int, batch: int | None, logs: dict | None) -> None:
        logs = logs or {}
        path = self._path(epoch, batch, logs)
        if not self._should_save(epoch, logs, path):
            return
        if not is_writer():  # one writer in a multi-process run: process 0
            return
        if os.path.isdir(path):
            raise IsADirectoryError(
                "Please specify a non-directory filepath for ModelCheckpoint. Filepath used is "
                f"an existing directory: {path}"
            )
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save_checkpoint(path)
        self._remember(path)

    def _remember(self, path: str) -> None:
        key = os.path.abspath(path)
        self.written = [p for p in self.written if p != key] + [key]  # rewritten: now newest
        if self.keep_last is None:
            return
        while len(self.written) > self.keep_last:
            old = self.written.pop(0)
            try:
                os.remove(old)
            except FileNotFoundError:
                pass  # already gone (removed by the user)
