"""wframe: neural networks whose weight matrices live on NumPy, CuPy or JAX.

``import wframe`` imports neither jax nor cupy: backends load when first used.
"""

from wframe import (
    activations,
    backends,
    callbacks,
    clipping,
    data,
    initializers,
    layers,
    losses,
    optimizers,
    pruning,
    random,
    regularizers,
    schedules,
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
    "clipping",
    "data",
    "get_backend",
    "initializers",
    "layers",
    "losses",
    "make_train_step",
    "optimizers",
    "pruning",
    "random",
    "regularizers",
    "schedules",
    "set_backend",
    "to_numpy",
    "use_backend",
]
