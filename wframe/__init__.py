"""wframe: neural networks whose weight matrices live on NumPy, CuPy or JAX.

``import wframe`` imports neither jax nor cupy: backends load when first used.
"""

from wframe import (
    activations,
    backends,
    callbacks,
    data,
    initializers,
    layers,
    losses,
    optimizers,
    random,
)
from wframe.backends import (
    BackendUnavailableError,
    available,
    backend_of,
    get_backend,
    set_backend,
    to_numpy,
    use_backend,
)
from wframe.callbacks import History
from wframe.model import Sequential
from wframe.training import TrainState, make_train_step

__all__ = [
    "BackendUnavailableError",
    "History",
    "Sequential",
    "TrainState",
    "activations",
    "available",
    "backend_of",
    "backends",
    "callbacks",
    "data",
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
