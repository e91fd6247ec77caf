"""``save_freq`` as :class:`ModelCheckpoint` and :class:`BackupAndRestore` share it: ``"epoch"``,
or the first batch hook at or after each multiple of ``n`` training steps of the model's life."""

from __future__ import annotations

from typing import Any


def check_save_freq(save_freq: Any, who: str) -> str | int:
    """``"epoch"`` or an int >= 1, else a ValueError naming ``who``."""
    if save_freq == "epoch":
        return "epoch"
    if isinstance(save_freq, bool) or not isinstance(save_freq, int) or save_freq < 1:
        raise ValueError(
            f"{who}: save_freq must be 'epoch' or an integer >= 1 (a number of batches). "
            f"Received: save_freq={save_freq!r}"
        )
    return save_freq


class EveryNSteps:
    """Mixin for callbacks with a ``save_freq`` and a ``model``: :meth:`_start_epoch` in
    ``on_epoch_begin``, :meth:`_due` in ``on_train_batch_end``."""

    save_freq: str | int
    model: Any
    _epoch = 0
    _mark: int | None = None  # the multiples of save_freq already saved for

    @property
    def needs_batch_logs(self) -> bool:
        return self.save_freq != "epoch"  # the batch hook does nothing otherwise: no syncs

    def _start_epoch(self, epoch: int) -> None:
        self._epoch = epoch
        if self._mark is None and self.save_freq != "epoch":
            # Here, not in on_train_begin: a BackupAndRestore may set the counters there.
            self._mark = self.model.steps // self.save_freq

    def _due(self) -> bool:
        """Whether a multiple of ``save_freq`` was passed since the last save."""
        if self.save_freq == "epoch":
            return False
        mark = self.model.steps // self.save_freq  # steps done, the batches of this call in
        if mark > self._mark:
            self._mark = mark
            return True
        return False
