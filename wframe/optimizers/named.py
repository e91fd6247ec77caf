"""What every named optimizer (:func:`sgd`, :func:`adam`, ..., :func:`adafactor`) is made into:
its chain, declared (:class:`~wframe.optimizers.OptimizerSpec`), whose learning rate can be made
settable mid-training without the user wrapping it.

Its ``init`` makes optax's state (the chain's tuple), so states interchange with optax's. Where
its learning rate is a number, its ``update`` also takes that state wrapped in an
:class:`~wframe.optimizers.InjectHyperparamsState` holding the learning rate (what
:func:`~wframe.optimizers.with_settable_learning_rate` makes, and what the learning-rate
callbacks make at ``on_train_begin``): then it runs as ``inject_hyperparams(factory)`` with only
the learning rate injected, reading the rate from the state at every step, so a callback can set
it between steps (on JAX with no retrace after the first step of the new state).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wframe.optimizers.base import GradientTransformation
from wframe.optimizers.inject import from_spec, is_injected_state
from wframe.optimizers.spec import DeclaredTransformation, InjectedSpec, OptimizerSpec


def declare(
    tx: GradientTransformation,
    spec: OptimizerSpec,
    factory: Callable[..., GradientTransformation],
    arguments: dict[str, Any],
) -> DeclaredTransformation:
    """``tx`` declaring ``spec``, settable when ``arguments["learning_rate"]`` is a number.

    Args:
      tx: the chain ``factory(**arguments)`` built.
      spec: its declaration (``spec.settable`` is filled in here).
      factory: the public factory (``adam``), called again with the injected rate.
      arguments: every argument the factory was called with, by name.

    Returns:
      The declared transformation; its ``update`` takes the chain's state or, when the learning
      rate is a number, that state wrapped with the rate (see the module's docstring).
    """
    rate = arguments.get("learning_rate")
    if not _is_number(rate):  # a schedule (recomputed every step) or none (adafactor)
        return DeclaredTransformation(tx.init, tx.update, spec)
    static = {k: v for k, v in arguments.items() if k != "learning_rate"}
    settable = InjectedSpec(factory, static, ("learning_rate",), {})
    plain = tx.update
    made: list = []  # the injected transformation, made at the first wrapped state it meets

    def update_fn(updates, state, params=None):
        if not is_injected_state(state):
            return plain(updates, state, params)
        if not made:
            made.append(from_spec(settable, {"learning_rate": rate}))
        return made[0].update(updates, state, params)

    return DeclaredTransformation(tx.init, update_fn, spec._replace(settable=settable))


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return hasattr(value, "dtype") and tuple(getattr(value, "shape", (1,))) == ()
