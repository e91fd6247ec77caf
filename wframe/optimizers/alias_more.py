"""More named optimizers, as optax's chains (same transformations, states and defaults):
:func:`adagrad`, :func:`adamax`, :func:`nadam`, :func:`lion` and :func:`adafactor`. None has a
fused in-place update: on NumPy and CuPy they run the pure path, written once against the array
API; on JAX the same code runs under ``jax.jit``.
"""

from __future__ import annotations

from typing import Any

from wframe.optimizers.base import ScalarOrSchedule, chain
from wframe.optimizers.named import declare
from wframe.optimizers.spec import DeclaredTransformation, OptimizerSpec
from wframe.optimizers.transforms import (
    add_decayed_weights,
    scale,
    scale_by_adam,
    scale_by_learning_rate,
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


def adagrad(
    learning_rate: ScalarOrSchedule,
    initial_accumulator_value: float = 0.1,
    eps: float = 1e-7,
) -> DeclaredTransformation:
    """Adagrad (Duchi et al., 2011): each update divided by the root of the sum of all squared
    gradients so far.

    Args:
      learning_rate: a float or a ``step -> value`` schedule.
      initial_accumulator_value, eps: as in :func:`scale_by_rss`.

    Returns:
      ``chain(scale_by_rss, scale_by_learning_rate)``, as optax.
    """
    arguments = dict(locals())  # first: every argument, by name
    tx = chain(scale_by_rss(initial_accumulator_value, eps), scale_by_learning_rate(learning_rate))
    spec = OptimizerSpec(
        "adagrad", learning_rate, ("moments", "learning_rate"), propagates_nonfinite=True
    )
    return declare(tx, spec, adagrad, arguments)


def adamax(
    learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> DeclaredTransformation:
    """Adamax (Kingma & Ba, 2014): Adam with the infinity norm in place of the second moment.

    Args:
      learning_rate: a float or a ``step -> value`` schedule.
      b1, b2, eps: as in :func:`scale_by_adamax`.

    Returns:
      ``chain(scale_by_adamax, scale_by_learning_rate)``, as optax.
    """
    arguments = dict(locals())  # first: every argument, by name
    tx = chain(scale_by_adamax(b1, b2, eps), scale_by_learning_rate(learning_rate))
    spec = OptimizerSpec(
        "adamax", learning_rate, ("moments", "learning_rate"), propagates_nonfinite=True
    )
    return declare(tx, spec, adamax, arguments)


def nadam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
) -> DeclaredTransformation:
    """NAdam (Dozat, 2016): Adam with Nesterov momentum, optax's ``nadam`` (``adam`` with
    ``nesterov=True``).

    Args:
      learning_rate: a float or a ``step -> value`` schedule.
      b1, b2, eps, eps_root, mu_dtype: as in :func:`scale_by_adam`.

    Returns:
      ``chain(scale_by_adam(..., nesterov=True), scale_by_learning_rate)``.
    """
    arguments = dict(locals())  # first: every argument, by name
    tx = chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=True),
        scale_by_learning_rate(learning_rate),
    )
    spec = OptimizerSpec(
        "nadam", learning_rate, ("moments", "learning_rate"), propagates_nonfinite=True
    )
    return declare(tx, spec, nadam, arguments)


def lion(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-3,
    mask: Any = None,
) -> DeclaredTransformation:
    """Lion (Chen et al., 2023): the sign of an interpolated momentum, with weight decay
    multiplied by the learning rate. Its rate is best 3-10x below AdamW's.

    Args:
      learning_rate: a float or a ``step -> value`` schedule.
      b1, b2, mu_dtype: as in :func:`scale_by_lion`.
      weight_decay, mask: as in :func:`add_decayed_weights`.

    Returns:
      ``chain(scale_by_lion, add_decayed_weights, scale_by_learning_rate)``, as optax.
    """
    arguments = dict(locals())  # first: every argument, by name
    tx = chain(
        scale_by_lion(b1, b2, mu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
    spec = OptimizerSpec("lion", learning_rate, ("moments", "weight_decay", "learning_rate"))
    return declare(tx, spec, lion, arguments)


def adafactor(
    learning_rate: ScalarOrSchedule | None = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: float = 0.8,
    decay_offset: int = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: float | None = 1.0,
    momentum: float | None = None,
    dtype_momentum: Any = "float32",
    weight_decay_rate: ScalarOrSchedule | None = None,
    eps: float = 1e-30,
    factored: bool = True,
    weight_decay_mask: Any = None,
) -> DeclaredTransformation:
    """Adafactor (Shazeer & Stern, 2018): updates divided by a factored estimate of their root
    mean square (row and column means for leaves with two axes of at least
    ``min_dim_size_to_factor``), clipped per leaf, scaled by each param's root mean square.

    Args:
      learning_rate: a float, a ``step -> value`` schedule, or ``None`` (no scaling; then it
        cannot be set by a callback).
      min_dim_size_to_factor, decay_rate, decay_offset, eps, factored: as in
        :func:`scale_by_factored_rms` (``decay_offset`` is its ``step_offset``).
      multiply_by_parameter_scale: multiply by each param's root mean square.
      clipping_threshold: the largest root mean square of a leaf's update, or ``None``.
      momentum: the decay of an (unbiased) average of the updates, or ``None`` for none.
      dtype_momentum: its dtype (or the dtype's name).
      weight_decay_rate, weight_decay_mask: decay added after the scaling, or ``None``.

    Returns:
      optax's chain: ``scale_by_factored_rms``, ``clip_by_block_rms``, ``scale_by_learning_rate
      (flip_sign=False)``, ``scale_by_param_block_rms``, ``ema``, ``add_decayed_weights`` where
      asked for, then ``scale(-1)``.
    """
    arguments = dict(locals())  # first: every argument, by name
    moments = scale_by_factored_rms(factored, decay_rate, decay_offset, min_dim_size_to_factor, eps)
    parts = [("moments", moments)]
    if clipping_threshold is not None:
        parts.append(("clipping", clip_by_block_rms(clipping_threshold)))
    if learning_rate is not None:
        parts.append(("learning_rate", scale_by_learning_rate(learning_rate, flip_sign=False)))
    if multiply_by_parameter_scale:
        parts.append(("parameter_scale", scale_by_param_block_rms()))
    if momentum is not None:
        parts.append(("momentum", ema(momentum, debias=False, accumulator_dtype=dtype_momentum)))
    if weight_decay_rate is not None:
        parts.append(("weight_decay", add_decayed_weights(weight_decay_rate, weight_decay_mask)))
    parts.append(("sign", scale(-1)))
    tx = chain(*(t for _, t in parts))
    spec = OptimizerSpec(
        "adafactor", learning_rate, tuple(n for n, _ in parts), propagates_nonfinite=True
    )
    return declare(tx, spec, adafactor, arguments)
