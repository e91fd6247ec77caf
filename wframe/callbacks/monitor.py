"""What :class:`EarlyStopping` and :class:`ReduceLROnPlateau` share: a monitored log entry, its
direction, and when a new value counts as an improvement (Keras' ``MonitorCallback``)."""

from __future__ import annotations

import warnings

from wframe.callbacks.base import Callback, Logs

MODES = ("auto", "max", "min")


class MonitorCallback(Callback):
    """Base class of callbacks that watch ``logs[monitor]`` at the end of each epoch.

    Args:
      monitor: the log entry, e.g. ``"val_loss"``.
      mode: ``"min"``, ``"max"``, or ``"auto"``: maximize names containing ``"acc"`` or
        ``"auc"`` and minimize the others (Keras 2's rule; Keras 3 asks the metric objects).
      min_delta: how much a value must beat the best one by to count as an improvement.

    Raises:
      ValueError: for another ``mode`` (Keras warns and falls back to ``"auto"``).
    """

    #: how the warning for a missing entry starts, as Keras words it
    _missing = "Monitoring is conditioned on metric"

    def __init__(self, monitor: str = "val_loss", mode: str = "auto", min_delta: float = 0.0):
        if mode not in MODES:
            raise ValueError(
                f"{type(self).__name__}: mode must be one of {list(MODES)}. Received: mode={mode!r}"
            )
        self.monitor = monitor
        self.mode = mode
        self.min_delta = abs(min_delta)
        self.maximize = mode == "max" or (mode == "auto" and ("acc" in monitor or "auc" in monitor))
        self.best: float | None = None
        self._warned = False

    def _is_improvement(self, value: float, reference: float | None) -> bool:
        if reference is None:
            return True
        if self.maximize:
            return value - self.min_delta > reference
        return value + self.min_delta < reference

    def _monitor_value(self, logs: Logs | None) -> float | None:
        """``logs[monitor]``, or ``None`` with a warning the first time of a fit that it lacks."""
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None and not self._warned:
            self._warned = True
            warnings.warn(
                f"{self._missing} `{self.monitor}` which is not available. Available metrics "
                f"are: {','.join(logs)}",
                UserWarning,
                stacklevel=3,
            )
        return value
