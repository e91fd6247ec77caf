"""Whether an optimizer, and the state it built, can run on a backend."""

from __future__ import annotations

from typing import Any

from wframe.backends import Backend, backend_of
from wframe.tree import tree_leaves


def check_optimizer(optimizer: Any, backend: Backend, *, moving: bool = False) -> None:
    """Refuse an optimizer that cannot run on ``backend`` (optax outside JAX).

    Args:
      optimizer: a gradient transformation (wframe's or optax's ``(init, update)``).
      backend: the backend the model lives on, or is moving to.
      moving: the error is about ``model.to_backend`` (its fix: set a wframe optimizer
        first), not about compiling or training.

    Raises:
      TypeError: for an optax transformation on a backend without autodiff.
    """
    module = getattr(type(optimizer), "__module__", "") or ""
    if module.split(".")[0] == "optax" and not backend.has_autodiff:
        if moving:
            raise TypeError(
                f"cannot move the model to '{backend.name}': its optimizer is an optax "
                "transformation, which runs on the jax backend only. Set a wframe optimizer "
                "first (model.compile(optimizer=wf.optimizers.adam(...))), which runs on every "
                "backend"
            )
        raise TypeError(
            f"the optimizer is an optax transformation, which runs on the jax backend only, but "
            f"the model lives on '{backend.name}'. Use wframe's own (wf.optimizers.adam(...), "
            "sgd, adamw, rmsprop, chain, ...), which run on every backend, or move the model "
            "with model.to_backend('jax')"
        )


def check_opt_state(opt_state: Any, backend: Backend) -> None:
    """Refuse an optimizer state holding arrays of another backend than the model's.

    Args:
      opt_state: the state the optimizer's ``init`` built (any pytree of arrays).
      backend: the model's backend.

    Raises:
      TypeError: naming the state's backend and the model's.
    """
    for leaf in tree_leaves(opt_state):
        if hasattr(leaf, "shape") and backend_of(leaf) is not backend:
            raise TypeError(
                f"the optimizer built its state on backend '{backend_of(leaf).name}', but the "
                f"model lives on '{backend.name}'; use an optimizer written for "
                f"'{backend.name}' (wf.optimizers run on every backend)"
            )
