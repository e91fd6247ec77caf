""":class:`LearningRateMonitor`: record the learning rate per epoch or per optimizer step."""

from __future__ import annotations

import warnings

from wframe.callbacks.base import Callback
from wframe.callbacks.history import History
from wframe.optimizers import learning_rate, update_count

INTERVALS = ("epoch", "step")


class LearningRateMonitor(Callback):
    """Record the learning rate: ``learning_rate`` in the epoch logs (so :class:`History` has
    it), and with ``interval="step"`` the rate of every optimizer step as well.

    The rate is what :func:`wframe.optimizers.learning_rate` says: the stored or scheduled
    value of an injected learning rate (an optimizer given by name, or one whose rate a
    callback made settable), or the rate a named optimizer (``wf.optimizers.adam``, ...) was
    made with (its schedule at each step); a float32 value reads as the shortest decimal that
    rounds to it (0.001, not 0.0010000000474974513). The epoch's entry is the rate of the next
    update, as Keras logs ``optimizer.learning_rate``. Per-step rates go to :attr:`steps` /
    :attr:`values` and to the ``steps["learning_rate"]`` series of the History ``fit`` returns
    (reached as ``self.model.history``, which :class:`CallbackList` sets), one per step also
    when ``fit(steps_per_execution=k)`` calls the hooks once per ``k`` steps. It does not read the
    batch logs, so ``fit`` does not sync for them.

    Args:
      interval: ``"epoch"`` or ``"step"``.

    Raises:
      ValueError: for another ``interval``.
    """

    needs_batch_logs = False

    def __init__(self, interval: str = "epoch"):
        if interval not in INTERVALS:
            raise ValueError(
                f"LearningRateMonitor: interval must be one of {list(INTERVALS)}. Received: "
                f"interval={interval!r}"
            )
        self.interval = interval
        #: the index of the optimizer update each value is for (counted by the optimizer state
        #: where it counts; else the steps this monitor has seen)
        self.steps: list[int] = []
        self.values: list[float] = []
        self._seen = 0

    def on_train_begin(self, logs=None):
        self._warned = False

    def _next(self) -> int:
        count = update_count(self.model.optimizer, self.model.opt_state)
        return self._seen if count is None else count

    def _rate(self, count: int) -> float | None:
        value = learning_rate(self.model.optimizer, self.model.opt_state, count)
        if value is None and not self._warned:
            self._warned = True
            warnings.warn(
                "LearningRateMonitor: the learning rate of this optimizer is unknown (it was not "
                "made by a wframe optimizer such as wf.optimizers.adam, nor by "
                "inject_hyperparams); nothing is recorded. Pass it by name, use a "
                "wf.optimizers factory or wrap it in wf.optimizers.inject_hyperparams",
                UserWarning,
                stacklevel=3,
            )
        return value

    def on_epoch_begin(self, epoch, logs=None):
        self._first, self._done = self._next(), 0  # batch b is update number first + b

    def on_train_batch_end(self, batch, logs=None):
        if self.interval == "step":
            history = getattr(self.model, "history", None)
            for b in range(self._done, batch + 1):  # every step run since the last call
                value = self._rate(self._first + b)
                if value is None:
                    break
                self.steps.append(self._first + b)
                self.values.append(value)
                if isinstance(history, History):
                    history.steps.setdefault("learning_rate", []).append(value)
        self._seen += batch + 1 - self._done
        self._done = batch + 1

    def on_epoch_end(self, epoch, logs=None):
        count = self._next()
        value = self._rate(count)
        if value is None:
            return
        if logs is not None:
            logs["learning_rate"] = value
        if self.interval == "epoch":
            self.steps.append(count)
            self.values.append(value)
