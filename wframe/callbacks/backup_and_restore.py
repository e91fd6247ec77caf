""":class:`BackupAndRestore`: survive an interrupted ``fit`` by resuming from a backup."""

from __future__ import annotations

import os
import re

from wframe.backends.process import is_writer
from wframe.callbacks.base import Callback
from wframe.callbacks.fit_state import FitState, Parsed
from wframe.callbacks.save_freq import EveryNSteps, check_save_freq

#: The checkpoint metadata entry holding the callbacks' states and the epoch's running sums.
STATE_KEY = "backup_state"
_UINT = re.compile(r"0|[1-9][0-9]*")


class BackupAndRestore(EveryNSteps, Callback):
    """Back up the training state as training goes, and resume from it after an interruption,
    as Keras 3's, exactly.

    The backup is one full checkpoint (:func:`wframe.saving.checkpoint.save`: params, state, masks,
    optimizer state, the step, epoch and seed counters, and where in ``fit`` it was taken),
    ``backup_dir/backup.safetensors``, replaced atomically at each save: a crash, even during a
    save, leaves the previous backup or the new one. Its metadata entry ``backup_state`` (JSON)
    holds what the other callbacks keep across epochs (:meth:`Callback.get_state`: the patience
    and best value of :class:`ReduceLROnPlateau` and :class:`EarlyStopping`,
    :class:`ModelCheckpoint`'s best value and files, :class:`CSVLogger`'s columns and file
    length, a :class:`~wframe.pruning.PruningSchedule`'s position) and, for a backup taken
    within an epoch, that epoch's running sums of the loss and metrics.

    When ``fit`` starts and a backup exists, everything in it is checked first (a broken or
    foreign file raises :class:`~wframe.saving.io.WeightsFileError` naming it, before the model
    changes), then loaded: ``fit`` goes on from the epoch and batch it was taken at, the other
    callbacks get their states back after their ``on_train_begin``, and the epoch in progress
    goes on from its sums, so its logged means (History, and what EarlyStopping,
    ReduceLROnPlateau, ``save_best_only`` and CSVLogger see) cover all its batches. The same
    permutations and dropout masks follow, so with the same ``fit`` arguments and callbacks
    the params and the History entries are bit-identical to an uninterrupted run's (NumPy and
    JAX). Callbacks are matched by class and place among those of their class: a callback the
    backup has no state for starts afresh, and a state no callback takes is a warning naming
    it (training goes on).
    A backup taken within an epoch holds that epoch's logged names: resuming it with other
    metrics is refused.

    Wherever it is in the list, its ``on_train_begin`` runs before the other callbacks' (they
    see the restored model) and its saves after their hooks of that batch or epoch (the backup
    holds what they changed).

    Not kept: :class:`EarlyStopping`'s best weights (``restore_best_weights``) stay in memory
    (a backup holds one set of arrays); after a resume they are those of the best epoch since,
    and if none comes, ``on_train_end`` warns that it cannot restore them. The History of a
    resumed ``fit`` holds the epochs it ran, as Keras'.

    Differences from Keras: a save within an epoch (integer ``save_freq``) resumes at that
    batch, not at the start of its epoch; the optimizer state and the callbacks' states are
    backed up too; only the backup file is deleted (and the folder if that leaves it empty),
    not the whole folder.

    Args:
      backup_dir: the folder of the backup, used by this callback alone.
      save_freq: ``"epoch"`` (at the end of each epoch) or an integer: save at the first batch
        hook at or after each multiple of that many training steps of the model's life.
      delete_checkpoint: delete the backup when ``fit`` ends (not when it is interrupted).
      allow_nonfinite: restore a backup holding NaN or inf values (to debug a diverged run);
        by default the restore refuses it with a ``WeightsFileError``.
    """

    filename = "backup.safetensors"
    saves_state = True

    def __init__(
        self,
        backup_dir: str | os.PathLike,
        save_freq: str | int = "epoch",
        delete_checkpoint: bool = True,
        allow_nonfinite: bool = False,
    ):
        if not backup_dir:
            raise ValueError(
                f"BackupAndRestore: backup_dir must be a folder. Received: "
                f"backup_dir={backup_dir!r}"
            )
        self.backup_dir = os.fspath(backup_dir)
        self.save_freq = check_save_freq(save_freq, "BackupAndRestore")
        self.delete_checkpoint = delete_checkpoint
        if not isinstance(allow_nonfinite, bool):
            raise TypeError(
                f"BackupAndRestore: allow_nonfinite must be True or False, got {allow_nonfinite!r}"
            )
        self.allow_nonfinite = allow_nonfinite
        self.path = os.path.join(self.backup_dir, self.filename)
        self.needs_weights = self.save_freq != "epoch"
        self._parsed: Parsed | None = None

    def on_train_begin(self, logs=None):
        self._mark = None
        if not os.path.exists(self.path):
            return
        # The model's checks, then _check on the metadata, all before anything changes. It
        # sets model.resume_at, which fit reads after on_train_begin to go on from there.
        self._parsed = None
        self.model.load_checkpoint(
            self.path, check=self._check, allow_nonfinite=self.allow_nonfinite
        )
        self._state().restore(self._parsed)

    def _state(self) -> FitState:
        """The fit's :class:`FitState` (an empty one outside ``fit``)."""
        return self.fit_state if self.fit_state is not None else FitState([])

    def _check(self, metadata: dict[str, str]) -> None:
        """Parse what :meth:`_save` stored besides the checkpoint, strictly.

        Raises:
          ValueError: a missing or malformed entry (the model reports it as a
            :class:`~wframe.saving.io.WeightsFileError` naming the file).
        """
        where = []
        for name in ("resume_epoch", "resume_batch"):
            value = metadata.get(name)
            if not isinstance(value, str) or not _UINT.fullmatch(value):
                raise ValueError(
                    f"it is not a BackupAndRestore backup: the metadata entry {name!r} must be "
                    f"a non-negative integer, got {value!r} (a ModelCheckpoint file in the "
                    "backup folder?); delete the file to start afresh"
                )
            where.append(int(value))
        if STATE_KEY not in metadata:
            raise ValueError(
                f"it is not a BackupAndRestore backup: the metadata has no {STATE_KEY!r} "
                "entry; delete the file to start afresh"
            )
        self._parsed = self._state().parse(metadata[STATE_KEY], within_epoch=where[1] > 0)

    def on_epoch_begin(self, epoch, logs=None):
        self._start_epoch(epoch)

    def on_train_batch_end(self, batch, logs=None):
        if self._due():
            self._save(self._epoch, batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch + 1, 0)

    def on_train_end(self, logs=None):
        if not self.delete_checkpoint:
            return
        try:
            os.remove(self.path)
        except FileNotFoundError:
            return
        try:
            os.rmdir(self.backup_dir)  # only if nothing else is there
        except OSError:
            pass

    def _save(self, epoch: int, batch: int) -> None:
        """Back up the model and the callbacks' states, to resume at batch ``batch`` of epoch
        ``epoch`` (fit's index; within an epoch, with its running sums)."""
        if not is_writer():  # one writer in a multi-process run: process 0
            return
        extra = {STATE_KEY: self._state().capture(within_epoch=batch > 0)}
        os.makedirs(self.backup_dir, exist_ok=True)
        self.model.save_checkpoint(self.path, resume_at=(epoch, batch), extra=extra)
