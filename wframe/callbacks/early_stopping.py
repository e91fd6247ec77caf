""":class:`EarlyStopping`: stop when a monitored quantity has stopped improving."""

from __future__ import annotations

from wframe.callbacks.monitor import MonitorCallback


class EarlyStopping(MonitorCallback):
    """Stop training when ``logs[monitor]`` has stopped improving, as Keras 3's.

    At the end of each epoch from ``start_from_epoch`` on, a value that beats the best one by
    more than ``min_delta`` becomes the best and, if it also beats ``baseline``, resets the
    wait; otherwise the wait grows, and when it reaches ``patience`` (at an epoch after the
    first) training stops: ``stopped_epoch`` is that epoch. With ``restore_best_weights``, a copy
    of the params and state of the best epoch (the first monitored one until one is better) is
    kept and assigned back to the model when training ends, whether it stopped early or not.

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

    def on_train_begin(self, logs=None):
        # Reusable across fit calls, as Keras'.
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0
        self._warned = False

    def _snapshot(self):
        copy = self.model.backend.copy
        return copy(self.model.params), copy(self.model.state)

    def on_epoch_end(self, epoch, logs=None):
        current = self._monitor_value(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            # Until a better epoch comes, the first monitored one is the best.
            self.best_weights, self.best_epoch = self._snapshot(), epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = self._snapshot()
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
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print(
                    "Restoring model weights from the end of the best epoch: "
                    f"{self.best_epoch + 1}.",
                    flush=True,
                )
            self.model.params, self.model.state = self.best_weights
