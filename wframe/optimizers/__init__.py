"""optax-shaped optimizers written once against the array API.

States and chains mirror optax's class names, field names and nesting, so a state made by optax
(converted leaf-wise) continues under wframe's update and vice versa. The same implementation runs
on every backend (traced by ``jax.jit`` on JAX, eagerly on NumPy and CuPy), so a model's optimizer
state keeps its classes when the model moves between backends. The named optimizers declare
what they are (:class:`OptimizerSpec`, with their in-place update as a :class:`FusedSpec`), and
:func:`fused` runs that update where the backend has kernels for it (NumPy, CuPy).

Layout, as optax's: ``base`` (the transformation type, states, :func:`chain`,
:func:`apply_updates`), ``transforms`` (the building blocks), ``alias`` (the named optimizers and
:func:`get`), ``spec`` (the declarations), ``fused`` (the declared in-place updates), ``inject``
(:func:`inject_hyperparams`) and ``hyperparams`` (reading and setting their values).
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
from wframe.optimizers.fused import fused
from wframe.optimizers.hyperparams import (
    find_injected_state,
    get_hyperparam,
    is_scheduled,
    learning_rate,
    set_hyperparam,
    update_count,
)
from wframe.optimizers.inject import InjectHyperparamsState, inject_hyperparams
from wframe.optimizers.partition import MultiTransformState, partition
from wframe.optimizers.spec import (
    AdamHyperparams,
    DeclaredTransformation,
    FusedSpec,
    InjectedSpec,
    OptimizerSpec,
    RmspropHyperparams,
    SgdHyperparams,
    spec_of,
)
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
    "AdamHyperparams",
    "AddDecayedWeightsState",
    "DeclaredTransformation",
    "EmptyState",
    "FusedSpec",
    "GradientTransformation",
    "InjectHyperparamsState",
    "InjectedSpec",
    "MaskedState",
    "MultiTransformState",
    "OptimizerSpec",
    "RmspropHyperparams",
    "ScaleByAdamState",
    "ScaleByRStdDevState",
    "ScaleByRmsState",
    "ScaleByRmsWithCountState",
    "ScaleByRStdDevWithCountState",
    "ScaleByScheduleState",
    "SgdHyperparams",
    "TraceState",
    "WeightDecaySchedule",
    "adam",
    "adamw",
    "add_decayed_weights",
    "apply_updates",
    "chain",
    "clip_by_global_norm",
    "find_injected_state",
    "fused",
    "get",
    "get_hyperparam",
    "identity",
    "inject_hyperparams",
    "is_scheduled",
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
    "spec_of",
    "trace",
    "update_count",
]
