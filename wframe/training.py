"""The pure train step, jitted once per model/loss/optimizer, and the fit loop's pieces."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from wframe import losses as losses_mod
from wframe import optimizers as optimizers_mod
from wframe.backends import get_backend
from wframe.types import Params, State


class TrainState(NamedTuple):
    """Everything a train step updates: the model's params and state, the optimizer's state."""

    params: Params
    state: State
    opt_state: Any


def make_grad_fn(model, loss: losses_mod.Loss) -> Callable:
    """``(params, state, x, y, key) -> (loss, grads, new_state, pred)`` for the active backend.

    With autodiff (JAX) the gradient comes from differentiating ``model.apply``; elsewhere from
    the chain of hand-written ``backprop`` closures.
    """
    backend = get_backend()
    if backend.has_autodiff:

        def objective(params, state, x, y, key):
            pred, new_state, _ = model.apply(params, state, x, train=True, key=key)
            return loss(pred, y)[0], (new_state, pred)

        value_and_grad = backend.value_and_grad(objective, has_aux=True)

        def grad_fn(params, state, x, y, key):
            (value, (new_state, pred)), grads = value_and_grad(params, state, x, y, key)
            return value, grads, new_state, pred

        return grad_fn

    def grad_fn(params, state, x, y, key):
        pred, new_state, backprop = model.apply(params, state, x, train=True, key=key)
        value, dpred = loss(pred, y)
        return value, backprop(dpred, input_grad=False)[1], new_state, pred

    return grad_fn


def make_train_step(model, loss, optimizer, *, metrics: tuple[str, ...] = ()) -> Callable:
    """A pure ``step(train_state, x, y, key) -> (train_state, logs)``, jitted once.

    Args:
      model: a built :class:`~wframe.Sequential`.
      loss: a loss name or :class:`~wframe.losses.Loss`.
      optimizer: an optimizer name or ``(init, update)`` transformation (optax's on JAX too).
      metrics: names from :data:`wframe.losses.METRICS` to log next to the loss.

    Returns:
      The step; its ``train_state`` argument is donated where the backend supports it.
    """
    loss = losses_mod.get(loss)
    optimizer = optimizers_mod.get(optimizer)
    grad_fn = make_grad_fn(model, loss)
    metric_fns = {name: losses_mod.METRICS[name] for name in metrics}

    def step(train_state, x, y, key=None):
        value, grads, new_state, pred = grad_fn(train_state.params, train_state.state, x, y, key)
        updates, opt_state = optimizer.update(grads, train_state.opt_state, train_state.params)
        params = optimizers_mod.apply_updates(train_state.params, updates)
        logs = {"loss": value, **{name: fn(pred, y) for name, fn in metric_fns.items()}}
        return TrainState(params, new_state, opt_state), logs

    return get_backend().jit(step, donate_argnums=(0,))


def make_eval_step(model, loss, *, metrics: tuple[str, ...] = ()) -> Callable:
    """A pure ``step(params, state, x, y) -> logs`` in inference mode, jitted once."""
    loss = losses_mod.get(loss)
    metric_fns = {name: losses_mod.METRICS[name] for name in metrics}

    def step(params, state, x, y):
        pred, _, _ = model.apply(params, state, x, train=False)
        return {"loss": loss(pred, y)[0], **{name: fn(pred, y) for name, fn in metric_fns.items()}}

    return get_backend().jit(step)


class History:
    """What ``fit`` returns: ``history[name]`` is the per-epoch list of each logged value."""

    def __init__(self):
        self.epoch: list[int] = []
        self.history: dict[str, list[float]] = {}

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        self.epoch.append(epoch)
        for name, value in logs.items():
            self.history.setdefault(name, []).append(value)

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)})"
