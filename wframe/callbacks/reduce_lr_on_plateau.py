""":class:`ReduceLROnPlateau`: lower the learning rate when a monitored quantity stalls."""

from __future__ import annotations

import numpy as np

from wframe.callbacks import state as fields
from wframe.callbacks.learning_rate_scheduler import prepare_learning_rate
from wframe.callbacks.monitor import MonitorCallback
from wframe.optimizers import get_hyperparam, set_hyperparam


class ReduceLROnPlateau(MonitorCallback):
    """Multiply the learning rate by ``factor`` when ``logs[monitor]`` has not improved for
    ``patience`` epochs, as Keras 3's.

    The learning rate lives in the optimizer state: the callback reads it with
    :func:`~wframe.optimizers.get_hyperparam` and assigns ``model.opt_state`` a new state made by
    :func:`~wframe.optimizers.set_hyperparam`. Any wframe optimizer works as it is
    (``wf.optimizers.adam(1e-3)``, a name, one made with
    :func:`~wframe.optimizers.inject_hyperparams`): at ``on_train_begin`` its state is made to
    hold the rate (:func:`~wframe.callbacks.learning_rate_scheduler.prepare_learning_rate`), and
    an optimizer whose rate nothing can set is refused there, before any step. It adds
    ``learning_rate`` (the rate the epoch used) to the epoch logs, so :class:`History` records
    it. After a reduction, ``cooldown`` epochs pass before the wait counts again; the rate never
    goes below ``min_lr``. Its state (``best``, ``wait``, ``cooldown_counter``) is kept by a
    :class:`BackupAndRestore` backup (:meth:`get_state`), so a resumed ``fit`` reduces at the
    same epochs; the rate itself is in the optimizer state. Rates are read back from the
    stored float32 value as the shortest decimal that rounds to it
    (:func:`~wframe.optimizers.host_float`), in the logs and in what ``verbose`` prints:
    ``0.0005``, not ``0.0005000000237487257``.

    Differences from Keras: an unknown ``mode`` raises; ``"auto"`` maximizes names containing
    ``"acc"`` or ``"auc"``; a missing ``monitor`` entry warns once per ``fit``.

    Args:
      monitor: the log entry to watch.
      factor: ``new_lr = lr * factor``, below 1.
      patience: epochs without improvement before a reduction.
      verbose: 1 prints each reduction.
      mode: ``"auto"``, ``"min"`` or ``"max"``.
      min_delta: the smallest change that counts as an improvement.
      cooldown: epochs after a reduction during which the wait stays 0.
      min_lr: the lowest learning rate.

    Raises:
      ValueError: for ``factor >= 1`` or an unknown ``mode``.
      TypeError: at ``on_train_begin``, for an optimizer whose learning rate nothing can set
        (the message says what to use instead).
    """

    _missing = "Learning rate reduction is conditioned on metric"

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        verbose: int = 0,
        mode: str = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ):
        super().__init__(monitor, mode, min_delta)
        if factor >= 1.0:
            raise ValueError(
                f"ReduceLROnPlateau does not support a factor >= 1.0. Received: factor={factor}"
            )
        self.factor = factor
        self.patience = patience
        self.verbose = verbose
        self.cooldown = cooldown
        self.min_lr = min_lr
        self.cooldown_counter = 0
        self.wait = 0

    def on_train_begin(self, logs=None):
        self.best = None
        self.cooldown_counter = 0
        self.wait = 0
        self._warned = False
        prepare_learning_rate(self.model, type(self).__name__)

    def get_state(self) -> dict:
        """``best`` (the best monitored value so far), ``wait`` and ``cooldown_counter``."""
        return {
            "best": fields.json_float(self.best),
            "wait": self.wait,
            "cooldown_counter": self.cooldown_counter,
        }

    def set_state(self, state: dict) -> None:
        who = "ReduceLROnPlateau"
        state = fields.fields(state, who, ("best", "wait", "cooldown_counter"))
        best = fields.number(state["best"], f"{who}: best", optional=True)
        wait = fields.integer(state["wait"], f"{who}: wait")
        cooldown = fields.integer(state["cooldown_counter"], f"{who}: cooldown_counter")
        self.best, self.wait, self.cooldown_counter = best, wait, cooldown

    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        prepare_learning_rate(self.model, type(self).__name__)  # e.g. after a restored backup
        logs["learning_rate"] = lr = get_hyperparam(self.model.opt_state, "learning_rate")
        current = self._monitor_value(logs)
        if current is None:
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._is_improvement(current, self.best):
            self.best = current
            self.wait = 0
            return
        if self.in_cooldown():
            return
        self.wait += 1
        # Compared in float32 as Keras does, so a rate stored at min_lr is not "reduced" again.
        if self.wait >= self.patience and np.float32(lr) > np.float32(self.min_lr):
            new_lr = max(lr * self.factor, self.min_lr)
            self.model.opt_state = set_hyperparam(self.model.opt_state, "learning_rate", new_lr)
            new_lr = get_hyperparam(self.model.opt_state, "learning_rate")  # as stored
            if self.verbose > 0:
                print(
                    f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new_lr}.",
                    flush=True,
                )
            self.cooldown_counter = self.cooldown
            self.wait = 0
