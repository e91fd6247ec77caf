""":class:`LearningRateScheduler`: set the learning rate at the start of each epoch."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from numbers import Real
from typing import Any

from wframe.callbacks.base import Callback
from wframe.optimizers import get_hyperparam, set_hyperparam, with_settable_learning_rate


class LearningRateScheduler(Callback):
    """At the start of each epoch, set the learning rate to ``schedule(epoch, lr)``, as Keras'.

    ``lr`` is the current learning rate, read from the optimizer state; the new one is assigned
    through ``model.opt_state`` (:func:`~wframe.optimizers.set_hyperparam`). Any wframe
    optimizer works as it is (``wf.optimizers.adam(1e-3)``, a name, one made with
    :func:`~wframe.optimizers.inject_hyperparams`): at ``on_train_begin`` its state is made to
    hold the rate (:func:`prepare_learning_rate`), and an optimizer whose rate nothing can set
    is refused there, before any step. A ``schedule`` that takes one argument is called
    ``schedule(epoch)``, as Keras allows (Keras finds out by catching a ``TypeError``; here the
    signature says). ``learning_rate`` is added to the epoch logs.

    Rates are read back from the stored float32 value as the shortest decimal that rounds to it
    (:func:`~wframe.optimizers.host_float`), in the logs and in what ``verbose`` prints: a rate
    set to 0.001 shows ``0.001``, not ``0.0010000000474974513``.

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

    def on_train_begin(self, logs=None):
        prepare_learning_rate(self.model, type(self).__name__)

    def on_epoch_begin(self, epoch, logs=None):
        prepare_learning_rate(self.model, type(self).__name__)  # e.g. after a restored backup
        lr = self._call(epoch, get_hyperparam(self.model.opt_state, "learning_rate"))
        if isinstance(lr, bool) or not isinstance(lr, Real):
            raise ValueError(
                f"The output of the `schedule` function should be a float. Got: {lr!r}"
            )
        self.model.opt_state = set_hyperparam(self.model.opt_state, "learning_rate", float(lr))
        if self.verbose > 0:
            stored = get_hyperparam(self.model.opt_state, "learning_rate")
            print(
                f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {stored}.",
                flush=True,
            )

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = get_hyperparam(self.model.opt_state, "learning_rate")


def prepare_learning_rate(model: Any, who: str) -> None:
    """Make ``model``'s optimizer state hold a learning rate that can be set, or refuse.

    Called by the learning-rate callbacks at ``on_train_begin``, before any step: the state of a
    named optimizer made with a number (``wf.optimizers.adam(1e-3)``) is wrapped with its rate
    (:func:`~wframe.optimizers.with_settable_learning_rate`; training goes on with the same
    numbers); a state that already holds one is left as it is.

    Raises:
      TypeError: naming the callback ``who``, where nothing can set the rate (a schedule
        recomputes it at every step; an optax object or a chain built by hand keeps it as a
        constant), with what to use instead.
    """
    state = model.opt_state
    params = None if state is None else model.trainable_params
    try:
        new = with_settable_learning_rate(model.optimizer, state, params)
    except TypeError as e:
        raise TypeError(f"{who} cannot set the learning rate: {e}") from None
    if new is not state:
        model.opt_state = new
