"""optax-shaped optimizers written once against the array API.

States and chains mirror optax's class names, field names and nesting, so a state made by optax
(converted leaf-wise) continues under wframe's update and vice versa. The same implementation runs
on every backend (traced by ``jax.jit`` on JAX, eagerly on NumPy and CuPy), so a model's optimizer
state keeps its classes when the model moves between backends. The named optimizers declare
what they are (:class:`OptimizerSpec`, with their in-place update as a :class:`FusedSpec`), and
:func:`fused` runs that update where the backend has kernels for it (NumPy, CuPy). Every named
optimizer made with a number for its learning rate can have that rate set during training
(:func:`with_settable_learning_rate`, which the learning-rate callbacks call before the first
step), its ``init`` still making optax's state.

Layout, as optax's: ``base`` (the transformation type, states, :func:`chain`,
:func:`apply_updates`), ``transforms`` and ``transforms_more`` (the building blocks), ``alias``
and ``alias_more`` (the named optimizers and :func:`get`), ``named`` (what makes each named
optimizer's learning rate settable), ``spec`` (the declarations), ``fused`` (the declared in-place
updates), ``inject`` (:func:`inject_hyperparams`) and ``hyperparams`` (reading and setting their
values).
"""

from wframe.optimizers.alias import adam, adamw, get, rmsprop, sgd
from wframe.optimizers.alias_more import adafactor, adagrad, adamax, lion, nadam
from wframe.optimizers.base import (
    AddDecayedWeightsState,
    EmaState,
    EmptyState,
    FactoredState,
    GradientTransformation,
    MaskedState,
    ScaleByAdamState,
    ScaleByLionState,
    ScaleByRmsState,
    ScaleByRmsWithCountState,
    ScaleByRssState,
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
    host_float,
    is_scheduled,
    learning_rate,
    set_hyperparam,
    update_count,
    with_settable_learning_rate,
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
    propagates_nonfinite,
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
from wframe.optimizers.transforms_more import (
    clip_by_block_rms,
    ema,
    scale_by_adamax,
    scale_by_factored_rms,
    scale_by_lion,
    scale_by_param_block_rms,
    scale_by_rss,
)

__all__ = [
    "AdamHyperparams",
    "AddDecayedWeightsState",
    "DeclaredTransformation",
    "EmaState",
    "EmptyState",
    "FactoredState",
    "FusedSpec",
    "GradientTransformation",
    "InjectHyperparamsState",
    "InjectedSpec",
    "MaskedState",
    "MultiTransformState",
    "OptimizerSpec",
    "RmspropHyperparams",
    "ScaleByAdamState",
    "ScaleByLionState",
    "ScaleByRStdDevState",
    "ScaleByRmsState",
    "ScaleByRssState",
    "ScaleByRmsWithCountState",
    "ScaleByRStdDevWithCountState",
    "ScaleByScheduleState",
    "SgdHyperparams",
    "TraceState",
    "WeightDecaySchedule",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "add_decayed_weights",
    "apply_updates",
    "chain",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "ema",
    "find_injected_state",
    "fused",
    "get",
    "get_hyperparam",
    "host_float",
    "identity",
    "inject_hyperparams",
    "is_scheduled",
    "learning_rate",
    "lion",
    "nadam",
    "partition",
    "propagates_nonfinite",
    "rmsprop",
    "scale",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_factored_rms",
    "scale_by_learning_rate",
    "scale_by_lion",
    "scale_by_param_block_rms",
    "scale_by_rms",
    "scale_by_rss",
    "scale_by_schedule",
    "scale_by_stddev",
    "set_hyperparam",
    "sgd",
    "spec_of",
    "trace",
    "update_count",
    "with_settable_learning_rate",
]
