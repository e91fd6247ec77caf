"""wframe: neural networks whose weight matrices live on NumPy, CuPy or JAX.

``import wframe`` imports neither jax nor cupy: backends load when first used.
"""

from wframe import (
    activations,
    backends,
    initializers,
    layers,
    losses,
    optimizers,
    random,
)
from wframe.backends import (
    BackendUnavailableError,
    available,
    get_backend,
    set_backend,
    to_numpy,
    use_backend,
)
from wframe.model import Sequential
from wframe.training import History, TrainState, make_train_step

__all__ = [
    "BackendUnavailableError",
    "History",
    "Sequential",
    "TrainState",
    "activations",
    "available",
    "backends",
    "get_backend",
    "initializers",
    "layers",
    "losses",
    "make_train_step",
    "optimizers",
    "random",
    "set_backend",
    "to_numpy",
    "use_backend",
]
