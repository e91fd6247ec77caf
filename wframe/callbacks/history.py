"""The :class:`History` that ``fit`` returns."""

from __future__ import annotations

from wframe.callbacks.base import Callback, Logs


class History(Callback):
    """Records the epoch logs: ``history.history["loss"]`` is the per-epoch list.

    ``fit`` returns it; only epochs that completed are recorded. ``history.steps`` holds
    per-step series that callbacks record there, e.g. ``steps["learning_rate"]`` from
    :class:`LearningRateMonitor` ``(interval="step")``.
    """

    def __init__(self):
        self.epoch: list[int] = []
        self.history: dict[str, list[float]] = {}
        self.steps: dict[str, list[float]] = {}

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        self.epoch.append(epoch)
        for name, value in (logs or {}).items():
            self.history.setdefault(name, []).append(value)

    def __repr__(self) -> str:
        steps = f", steps={sorted(self.steps)}" if self.steps else ""
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)}{steps})"
