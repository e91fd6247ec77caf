"""optax-shaped optimizers written once against the array API.

States and chains mirror optax's class names, field names and nesting, so a state made by optax
(converted leaf-wise) continues under wframe's update and vice versa. The same implementation runs
on every backend (traced by ``jax.jit`` on JAX, eagerly on NumPy and CuPy), so a model's optimizer
state keeps its classes when the model moves between backends. :func:`fused` gives the named
optimizers an in-place update for backends that have one (NumPy).

Layout, as optax's: ``base`` (the transformation type, states, :func:`chain`,
:func:`apply_updates`), ``transforms`` (the building blocks), ``alias`` (the named optimizers and
:func:`get`) and ``fused`` (their in-place updates).
"""

from wframe.optimizers.alias import adam, adamw, get, rmsprop, sgd
from wframe.optimizers.base import (
    AddDecayedWeightsState,
    EmptyState,
    GradientTransformation,
    MaskedState,
    ScaleByAdamState,
    ScaleByRmsState,
    ScaleByRmsWithCountState,
    ScaleByRStdDevState,
    ScaleByRStdDevWithCountState,
    ScaleByScheduleState,
    TraceState,
    WeightDecaySchedule,
    apply_updates,
    chain,
    identity,
)
from wframe.optimizers.base import OptState as OptState
from wframe.optimizers.base import ScalarOrSchedule as ScalarOrSchedule
from wframe.optimizers.base import Schedule as Schedule
from wframe.optimizers.fused import _FUSABLE as _FUSABLE
from wframe.optimizers.fused import _groups as _groups
from wframe.optimizers.fused import fused
from wframe.optimizers.inject import (
    InjectHyperparamsState,
    get_hyperparam,
    inject_hyperparams,
    learning_rate,
    set_hyperparam,
)
from wframe.optimizers.partition import MultiTransformState, partition
from wframe.optimizers.transforms import (
    add_decayed_weights,
    clip_by_global_norm,
    scale,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rms,
    scale_by_schedule,
    scale_by_stddev,
    trace,
)

__all__ = [
    "AddDecayedWeightsState",
    "EmptyState",
    "GradientTransformation",
    "InjectHyperparamsState",
    "MaskedState",
    "MultiTransformState",
    "ScaleByAdamState",
    "ScaleByRStdDevState",
    "ScaleByRmsState",
    "ScaleByRmsWithCountState",
    "ScaleByRStdDevWithCountState",
    "ScaleByScheduleState",
    "TraceState",
    "WeightDecaySchedule",
    "adam",
    "adamw",
    "add_decayed_weights",
    "apply_updates",
    "chain",
    "clip_by_global_norm",
    "fused",
    "get",
    "get_hyperparam",
    "identity",
    "inject_hyperparams",
    "learning_rate",
    "partition",
    "rmsprop",
    "scale",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_rms",
    "scale_by_schedule",
    "scale_by_stddev",
    "set_hyperparam",
    "sgd",
    "trace",
]
