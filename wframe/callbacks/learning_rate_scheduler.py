""":class:`LearningRateScheduler`: set the learning rate at the start of each epoch."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from numbers import Real
from typing import Any

from wframe.callbacks.base import Callback
from wframe.optimizers import get_hyperparam, is_scheduled, set_hyperparam


class LearningRateScheduler(Callback):
    """At the start of each epoch, set the learning rate to ``schedule(epoch, lr)``, as Keras'.

    ``lr`` is the current learning rate, read from the optimizer state (an optimizer given by
    name, or made with :func:`wframe.optimizers.inject_hyperparams`); the new one is assigned
    through ``model.opt_state`` (:func:`~wframe.optimizers.set_hyperparam`). A ``schedule`` that
    takes one argument is called ``schedule(epoch)``, as Keras allows (Keras finds out by
    catching a ``TypeError``; here the signature says). ``learning_rate`` is added to the epoch
    logs.

    Args:
      schedule: ``(epoch, lr) -> new lr`` or ``epoch -> new lr``; epochs count from 0.
      verbose: 1 prints each new rate.
    """

    def __init__(self, schedule: Callable[..., float], verbose: int = 0):
        self.schedule = schedule
        self.verbose = verbose

    def _call(self, epoch: int, lr: float) -> Any:
        try:
            params = list(inspect.signature(self.schedule).parameters.values())
        except (TypeError, ValueError):  # no signature to read (a builtin): Keras' form
            return self.schedule(epoch, lr)
        kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        positional = [p for p in params if p.kind in kinds]
        variadic = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
        if variadic or len(positional) >= 2:
            return self.schedule(epoch, lr)
        return self.schedule(epoch)

    def on_epoch_begin(self, epoch, logs=None):
        check_learning_rate_settable(self.model.optimizer, type(self).__name__)
        lr = self._call(epoch, get_hyperparam(self.model.opt_state, "learning_rate"))
        if isinstance(lr, bool) or not isinstance(lr, Real):
            raise ValueError(
                f"The output of the `schedule` function should be a float. Got: {lr!r}"
            )
        self.model.opt_state = set_hyperparam(self.model.opt_state, "learning_rate", float(lr))
        if self.verbose > 0:
            print(
                f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr}.",
                flush=True,
            )

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = get_hyperparam(self.model.opt_state, "learning_rate")


def check_learning_rate_settable(optimizer: Any, who: str) -> None:
    """Raise ``TypeError`` (naming the callback ``who``) if ``optimizer`` recomputes its learning
    rate from a schedule at every step, so that setting it would change nothing (as Keras)."""
    if is_scheduled(optimizer, "learning_rate"):
        raise TypeError(
            f"{who} cannot set the learning rate: the optimizer was made with a schedule for "
            "it, which recomputes it at every step. Pass a number instead (inject_hyperparams"
            "(...)(learning_rate=0.01)), or drop the callback"
        )
