"""wframe: neural networks whose weight matrices live on NumPy, CuPy or JAX.

``import wframe`` imports neither jax nor cupy: backends load when first used.
"""

from wframe import (
    activations,
    backends,
    callbacks,
    data,
    distributed,
    explain,
    initializers,
    inspect,
    layers,
    losses,
    metrics,
    model,
    optimizers,
    precision,
    pruning,
    random,
    regularizers,
    saving,
    schedules,
    training,
    transfer,
    viz,
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
from wframe.backends.threads import num_threads
from wframe.callbacks import History
from wframe.layers import Input
from wframe.model import Model, Sequential
from wframe.optimizers import clipping
from wframe.saving import checkpoint, io, load_model, save_model, weights
from wframe.saving.io import WeightsFileError
from wframe.training import TrainState, make_train_step

#: The released version (pyproject.toml's, kept equal; CHANGELOG.md says what each one changed).
__version__ = "0.3.0"

__all__ = [
    "BackendUnavailableError",
    "History",
    "Input",
    "Model",
    "Sequential",
    "WeightsFileError",
    "TrainState",
    "activations",
    "available",
    "backend_of",
    "backends",
    "callbacks",
    "checkpoint",
    "clipping",
    "data",
    "distributed",
    "explain",
    "get_backend",
    "initializers",
    "inspect",
    "io",
    "layers",
    "load_model",
    "losses",
    "make_train_step",
    "metrics",
    "model",
    "optimizers",
    "precision",
    "pruning",
    "random",
    "regularizers",
    "save_model",
    "saving",
    "schedules",
    "set_backend",
    "to_numpy",
    "training",
    "transfer",
    "num_threads",
    "use_backend",
    "viz",
    "weights",
]
