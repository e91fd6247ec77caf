""":class:`EarlyStopping`: stop when a monitored quantity has stopped improving."""

from __future__ import annotations

import warnings

from wframe.callbacks import state as fields
from wframe.callbacks.monitor import MonitorCallback


class EarlyStopping(MonitorCallback):
    """Stop training when ``logs[monitor]`` has stopped improving, as Keras 3's.

    At the end of each epoch from ``start_from_epoch`` on, a value that beats the best one by
    more than ``min_delta`` becomes the best and, if it also beats ``baseline``, resets the
    wait; otherwise the wait grows, and when it reaches ``patience`` (at an epoch after the
    first) training stops: ``stopped_epoch`` is that epoch. With ``restore_best_weights``, a copy
    of the params and state of the best epoch (the first monitored one until one is better) is
    kept and assigned back to the model when training ends, whether it stopped early or not.

    A :class:`BackupAndRestore` backup keeps its state (``best``, ``wait``, ``best_epoch``,
    ``stopped_epoch``: :meth:`get_state`), so a resumed ``fit`` stops at the same epoch. The best
    weights stay in memory only: after a resume they are those of the best epoch since the
    restart, and if the best epoch came before it, ``on_train_end`` warns that it cannot
    restore them (the model keeps its last weights).

    Differences from Keras: an unknown ``mode`` raises; ``"auto"`` maximizes names containing
    ``"acc"`` or ``"auc"``; a missing ``monitor`` entry warns once per ``fit``, not each epoch.

    Args:
      monitor: the log entry to watch.
      min_delta: the smallest change that counts as an improvement.
      patience: epochs without improvement before stopping.
      verbose: 1 prints when it stops and restores.
      mode: ``"auto"``, ``"min"`` or ``"max"``.
      baseline: a value to beat: until one does, the wait is not reset.
      restore_best_weights: give the model the best epoch's params and state at the end.
      start_from_epoch: epochs of warm-up before monitoring starts.

    Raises:
      ValueError: for ``patience < 0`` or an unknown ``mode``.
    """

    _missing = "Early stopping conditioned on metric"

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0,
        patience: int = 0,
        verbose: int = 0,
        mode: str = "auto",
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ):
        super().__init__(monitor, mode, min_delta)
        if patience < 0:
            raise ValueError(f"EarlyStopping: patience must be >= 0. Received: patience={patience}")
        self.patience = patience
        self.verbose = verbose
        self.baseline = baseline
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch
        self.wait = 0
        self.stopped_epoch = 0
        self.best_epoch = 0
        self.best_weights = None  # (params, state) copies
        self._weights_lost = False  # restored from a backup, which holds no best weights

    def on_train_begin(self, logs=None):
        # Reusable across fit calls, as Keras'.
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0
        self._warned = False
        self._weights_lost = False

    def get_state(self) -> dict:
        """``best``, ``wait``, ``best_epoch`` and ``stopped_epoch`` (not the best weights)."""
        return {
            "best": fields.json_float(self.best),
            "wait": self.wait,
            "best_epoch": self.best_epoch,
            "stopped_epoch": self.stopped_epoch,
        }

    def set_state(self, state: dict) -> None:
        who = "EarlyStopping"
        state = fields.fields(state, who, ("best", "wait", "best_epoch", "stopped_epoch"))
        best = fields.number(state["best"], f"{who}: best", optional=True)
        counters = [
            fields.integer(state[k], f"{who}: {k}") for k in ("wait", "best_epoch", "stopped_epoch")
        ]
        self.best, (self.wait, self.best_epoch, self.stopped_epoch) = best, counters
        self.best_weights = None
        # A best epoch before the restart: its weights were not in the backup.
        self._weights_lost = self.restore_best_weights and best is not None

    def _snapshot(self):
        copy = self.model.backend.copy
        return copy(self.model.params), copy(self.model.state)

    def on_epoch_end(self, epoch, logs=None):
        current = self._monitor_value(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None and not self._weights_lost:
            # Until a better epoch comes, the first monitored one is the best.
            self.best_weights, self.best_epoch = self._snapshot(), epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights, self._weights_lost = self._snapshot(), False
            # The wait restarts only when both the baseline and the previous best are beaten.
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping", flush=True)
        if self.restore_best_weights and self._weights_lost:
            warnings.warn(
                f"EarlyStopping: cannot restore the weights of the best epoch "
                f"({self.best_epoch + 1}): it came before the fit was resumed from a backup, "
                "which does not hold them; the model keeps its last weights",
                UserWarning,
                stacklevel=2,
            )
        elif self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print(
                    "Restoring model weights from the end of the best epoch: "
                    f"{self.best_epoch + 1}.",
                    flush=True,
                )
            self.model.params, self.model.state = self.best_weights
