""":class:`BackupAndRestore`: survive an interrupted ``fit`` by resuming from a backup."""

from __future__ import annotations

import os

from wframe.backends.process import is_writer
from wframe.callbacks.base import Callback
from wframe.callbacks.save_freq import EveryNSteps, check_save_freq


class BackupAndRestore(EveryNSteps, Callback):
    """Back up the training state as training goes, and resume from it after an interruption,
    as Keras 3's.

    The backup is one full checkpoint (:func:`wframe.saving.checkpoint.save`: params, state, masks,
    optimizer state, the step, epoch and seed counters, and where in ``fit`` it was taken),
    ``backup_dir/backup.safetensors``, replaced atomically at each save: a crash, even during a
    save, leaves the previous backup or the new one. When ``fit`` starts and a backup exists, it
    is loaded into the model and ``fit`` goes on from the epoch and batch it was taken at: the
    same permutations and dropout masks follow, so with the same ``fit`` arguments the result is
    bit-identical to an uninterrupted run (with NumPy; JAX's compiled steps may differ in the
    last bits). When ``fit`` ends, the backup is deleted if ``delete_checkpoint``.

    Put it after callbacks that change the arrays in ``on_epoch_end`` (e.g.
    :class:`ReduceLROnPlateau`), so that the backup holds their changes; the other callbacks'
    own counters (patience, best values) are not backed up, as in Keras.

    Differences from Keras: a save within an epoch (integer ``save_freq``) resumes at that
    batch, not at the start of its epoch; the optimizer state is backed up too; only the backup
    file is deleted (and the folder if that leaves it empty), not the whole folder.

    Args:
      backup_dir: the folder of the backup, used by this callback alone.
      save_freq: ``"epoch"`` (at the end of each epoch) or an integer: save at the first batch
        hook at or after each multiple of that many training steps of the model's life.
      delete_checkpoint: delete the backup when ``fit`` ends (not when it is interrupted).
    """

    filename = "backup.safetensors"

    def __init__(
        self,
        backup_dir: str | os.PathLike,
        save_freq: str | int = "epoch",
        delete_checkpoint: bool = True,
    ):
        if not backup_dir:
            raise ValueError(
                f"BackupAndRestore: backup_dir must be a folder. Received: "
                f"backup_dir={backup_dir!r}"
            )
        self.backup_dir = os.fspath(backup_dir)
        self.save_freq = check_save_freq(save_freq, "BackupAndRestore")
        self.delete_checkpoint = delete_checkpoint
        self.path = os.path.join(self.backup_dir, self.filename)
        self.needs_weights = self.save_freq != "epoch"

    def on_train_begin(self, logs=None):
        if os.path.exists(self.path):
            # It sets model.resume_at, which fit reads after on_train_begin to go on from there.
            self.model.load_checkpoint(self.path)
        self._mark = None

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
        """Back up the model, to resume at batch ``batch`` of epoch ``epoch`` (fit's index)."""
        if not is_writer():  # one writer in a multi-process run: process 0
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        self.model.save_checkpoint(self.path, resume_at=(epoch, batch))
