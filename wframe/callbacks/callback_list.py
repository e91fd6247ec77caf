"""The :class:`CallbackList` ``fit`` calls: one hook on every callback, in Keras' order."""

from __future__ import annotations

from typing import Any

from wframe.callbacks.base import Callback, Logs, overrides
from wframe.callbacks.fit_state import FitState
from wframe.callbacks.history import History
from wframe.callbacks.progress import ProgressBar


class CallbackList:
    """Calls each hook on every callback: the user's in their order, then the History and the
    ProgressBar, as Keras appends its defaults, so that these see what the others add to the
    logs (e.g. ``learning_rate``), then the callbacks that save what the others did
    (:attr:`~Callback.saves_state`: :class:`BackupAndRestore`), whose ``on_train_begin`` comes
    first instead. After every ``on_train_begin``, the states a restored backup holds are given
    back (:attr:`fit_state`, :meth:`~wframe.callbacks.fit_state.FitState.apply`).

    The :class:`History` among the callbacks (the one ``fit`` returns) is :attr:`history`, and
    is set as ``model.history`` right away, as Keras' ``CallbackList.set_model`` does: callbacks
    reach it through ``self.model.history`` during training.

    Args:
      callbacks: the :class:`Callback` instances, in the user's order, with ``fit``'s History
        and ProgressBar among them; anything else raises ``TypeError``.
      model: the model being trained, given to each callback's ``set_model`` (``None`` in
        tests that drive the hooks alone).
      params: the run's settings given to each callback's ``set_params``, as Keras':
        ``{"epochs", "steps", "verbose"}`` from ``fit``.
    """

    def __init__(self, callbacks: list[Callback], model: Any, params: dict[str, Any]):
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(
                    "callbacks must be wframe.callbacks.Callback instances, got "
                    f"{type(cb).__name__}"
                )
        last = (History, ProgressBar)
        savers = [cb for cb in callbacks if cb.saves_state]
        self.callbacks = [
            *(cb for cb in callbacks if not isinstance(cb, last) and not cb.saves_state),
            *(cb for cb in callbacks if isinstance(cb, History)),
            *(cb for cb in callbacks if isinstance(cb, ProgressBar)),
            *savers,
        ]
        self._train_begin = [*savers, *(cb for cb in self.callbacks if not cb.saves_state)]
        self.fit_state = FitState(
            [cb for cb in self.callbacks if not isinstance(cb, last) and not cb.saves_state]
        )
        for cb in savers:
            cb.fit_state = self.fit_state
        self.history: History | None = next(
            (cb for cb in self.callbacks if isinstance(cb, History)), None
        )
        if self.history is not None and model is not None:
            model.history = self.history
        for cb in self.callbacks:
            cb.set_model(model)
            cb.set_params(params)
        self.needs_batch_logs = any(cb.needs_batch_logs for cb in self.callbacks)
        self.needs_weights = any(cb.needs_weights for cb in self.callbacks)
        self.needs_grad_stats = any(cb.needs_grad_stats for cb in self.callbacks)
        # Statistics go to every callback overriding on_grad_stats once some callback asks.
        self._stats = [cb for cb in self.callbacks if overrides(cb, "on_grad_stats")]
        # Batch hooks run every step: call only the callbacks that override them.
        self._begin = [
            cb for cb in self.callbacks if overrides(cb, "on_train_batch_begin", "on_batch_begin")
        ]
        self._end = [
            cb for cb in self.callbacks if overrides(cb, "on_train_batch_end", "on_batch_end")
        ]
        # Whether any callback has a batch hook: the loop skips the calls otherwise.
        self.has_batch_begin, self.has_batch_end = bool(self._begin), bool(self._end)

    def on_grad_stats(self, step: int, stats: Logs) -> None:
        for cb in self._stats:
            cb.on_grad_stats(step, dict(stats))

    # logs is always passed, positionally, so Keras-style lambdas (epoch, logs) work everywhere.
    def on_train_begin(self, logs: Logs | None = None) -> None:
        for cb in self._train_begin:
            cb.on_train_begin(logs)
        self.fit_state.apply()

    def on_train_end(self, logs: Logs | None = None) -> None:
        for cb in self.callbacks:
            cb.on_train_end(logs)

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def batch_begin(self, batch: int, logs: Logs | None = None) -> None:
        for cb in self._begin:
            cb.on_train_batch_begin(batch, logs)

    def batch_end(self, batch: int, logs: Logs | None) -> None:
        for cb in self._end:
            cb.on_train_batch_end(batch, logs)

    def __getattr__(self, hook: str):
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def call(*args: Any) -> None:
            for cb in self.callbacks:
                getattr(cb, hook)(*args)

        return call
