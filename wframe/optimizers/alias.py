"""The named optimizers (:func:`sgd`, :func:`adam`, :func:`adamw`, :func:`rmsprop`; the others
in :mod:`~wframe.optimizers.alias_more`) as optax's chains of transformations, each declaring
its :class:`~wframe.optimizers.OptimizerSpec` (:func:`~wframe.optimizers.named.declare`), and
:func:`get` to look one up by name with Keras's defaults.
"""

from __future__ import annotations

import functools
from typing import Any

from wframe.optimizers.alias_more import adafactor, adagrad, adamax, lion, nadam
from wframe.optimizers.base import GradientTransformation, ScalarOrSchedule, chain, identity
from wframe.optimizers.inject import inject_hyperparams
from wframe.optimizers.named import declare
from wframe.optimizers.spec import (
    AdamHyperparams,
    DeclaredTransformation,
    FusedSpec,
    OptimizerSpec,
    RmspropHyperparams,
    SgdHyperparams,
)
from wframe.optimizers.transforms import (
    add_decayed_weights,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rms,
    scale_by_stddev,
    trace,
)


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: float | None = None,
    nesterov: bool = False,
    accumulator_dtype: Any = None,
) -> DeclaredTransformation:
    """Stochastic gradient descent, with optional (Nesterov) momentum.

    Args:
      learning_rate: a float or a ``step -> value`` schedule.
      momentum: the momentum decay, or ``None`` for none.
      nesterov: use Nesterov momentum.
      accumulator_dtype: dtype of the momentum buffer, ``None`` to follow the params.

    Returns:
      ``chain(trace or identity, scale_by_learning_rate)``, as optax, declaring an in-place
      update unless ``accumulator_dtype`` is given.
    """
    arguments = dict(locals())  # first: every argument, by name
    first = identity() if momentum is None else trace(momentum, nesterov, accumulator_dtype)
    tx = chain(first, scale_by_learning_rate(learning_rate))
    fused = None
    if accumulator_dtype is None:
        fused = FusedSpec("sgd", SgdHyperparams(learning_rate, momentum, nesterov))
    parts = ("momentum", "learning_rate")
    spec = OptimizerSpec("sgd", learning_rate, parts, fused, propagates_nonfinite=True)
    return declare(tx, spec, sgd, arguments)


def adam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
) -> DeclaredTransformation:
    """Adam: ``chain(scale_by_adam(...), scale_by_learning_rate(learning_rate))``.

    Args:
      learning_rate: a float or a ``step -> value`` schedule.
      b1, b2, eps, eps_root, mu_dtype, nesterov: as in :func:`scale_by_adam`.

    Returns:
      A :class:`GradientTransformation` whose state mirrors optax's, declaring an in-place
      update unless ``mu_dtype`` or ``nesterov`` is given.
    """
    arguments = dict(locals())  # first: every argument, by name
    tx = chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        scale_by_learning_rate(learning_rate),
    )
    fused = None
    if mu_dtype is None and not nesterov:
        fused = FusedSpec("adam", AdamHyperparams(learning_rate, b1, b2, eps, eps_root))
    parts = ("moments", "learning_rate")
    spec = OptimizerSpec("adam", learning_rate, parts, fused, propagates_nonfinite=True)
    return declare(tx, spec, adam, arguments)


def adamw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Any = None,
    *,
    nesterov: bool = False,
) -> DeclaredTransformation:
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019).

    Args:
      learning_rate: a float or a ``step -> value`` schedule.
      b1, b2, eps, eps_root, mu_dtype, nesterov: as in :func:`scale_by_adam`.
      weight_decay, mask: as in :func:`add_decayed_weights`.

    Returns:
      ``chain(scale_by_adam, add_decayed_weights, scale_by_learning_rate)``, as optax,
      declaring an in-place update unless ``mu_dtype`` or ``nesterov`` is given.
    """
    arguments = dict(locals())  # first: every argument, by name
    tx = chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
    fused = None
    if mu_dtype is None and not nesterov:
        hyper = AdamHyperparams(learning_rate, b1, b2, eps, eps_root, weight_decay, mask)
        fused = FusedSpec("adam", hyper)
    parts = ("moments", "weight_decay", "learning_rate")
    spec = OptimizerSpec("adamw", learning_rate, parts, fused, propagates_nonfinite=True)
    return declare(tx, spec, adamw, arguments)


def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: float | None = None,
    nesterov: bool = False,
    bias_correction: bool = False,
) -> DeclaredTransformation:
    """RMSProp, optionally centered and with momentum.

    Args:
      learning_rate: a float or a ``step -> value`` schedule.
      decay, eps, initial_scale, eps_in_sqrt, bias_correction: as in :func:`scale_by_rms`.
      centered: divide by the standard deviation (:func:`scale_by_stddev`) instead.
      momentum, nesterov: momentum applied *after* the learning rate, as optax does.

    Returns:
      ``chain(scale_by_rms or scale_by_stddev, scale_by_learning_rate, trace or identity)``,
      declaring an in-place update (run where the backend has one: CuPy) unless ``centered``
      or ``bias_correction``.
    """
    arguments = dict(locals())  # first: every argument, by name
    scaler = scale_by_stddev if centered else scale_by_rms
    tx = chain(
        scaler(decay, eps, initial_scale, eps_in_sqrt, bias_correction),
        scale_by_learning_rate(learning_rate),
        identity() if momentum is None else trace(momentum, nesterov),
    )
    fused = None
    if not centered and not bias_correction:
        hyper = RmspropHyperparams(learning_rate, decay, eps, eps_in_sqrt, momentum, nesterov)
        fused = FusedSpec("rmsprop", hyper)
    parts = ("moments", "learning_rate", "momentum")
    spec = OptimizerSpec("rmsprop", learning_rate, parts, fused, propagates_nonfinite=True)
    return declare(tx, spec, rmsprop, arguments)


_FACTORIES = {
    "adafactor": adafactor,
    "adagrad": adagrad,
    "adam": adam,
    "adamax": adamax,
    "adamw": adamw,
    "lion": lion,
    "nadam": nadam,
    "rmsprop": rmsprop,
    "sgd": sgd,
}
_DEFAULT_LR = {name: 1e-3 for name in _FACTORIES} | {"sgd": 0.01}  # as Keras 3
# Arguments passed as given by get, never injected: masks (callables, not schedules), dtypes,
# and integers that decide shapes.
_STATIC = {
    "adamw": ("mask",),
    "lion": ("mask",),
    "adafactor": ("min_dim_size_to_factor", "weight_decay_mask", "dtype_momentum"),
}


def _named(name: str, kwargs: tuple) -> GradientTransformation:
    """The named optimizer of these arguments, made once per process where they are hashable:
    an optimizer holds no state, and the same object lets models of one architecture share
    their compiled train steps (:func:`wframe.training.trainer_for`)."""
    try:
        return _made(name, kwargs)
    except TypeError:  # an unhashable argument (a list mask): made afresh
        return inject_hyperparams(_FACTORIES[name], _STATIC.get(name, ()))(**dict(kwargs))


@functools.lru_cache(maxsize=64)
def _made(name: str, kwargs: tuple) -> GradientTransformation:
    return inject_hyperparams(_FACTORIES[name], _STATIC.get(name, ()))(**dict(kwargs))


def get(name_or_tx: str | GradientTransformation, **kwargs: Any) -> GradientTransformation:
    """Look up an optimizer by name (with Keras's default learning rates) or pass one through.

    A named optimizer is made with :func:`inject_hyperparams`, so its learning rate (and its
    other numeric arguments) live in its state, where callbacks such as
    :class:`~wframe.callbacks.ReduceLROnPlateau` change them, as Keras'
    ``compile(optimizer="adam")`` allows. The default learning rates are Keras 3's (0.01 for
    SGD, 0.001 for the others); the other defaults are optax's.

    Args:
      name_or_tx: ``"adafactor"``, ``"adagrad"``, ``"adam"``, ``"adamax"``, ``"adamw"``,
        ``"lion"``, ``"nadam"``, ``"rmsprop"`` or ``"sgd"`` (any case), or any object with
        callable ``init`` and ``update`` (e.g. an optax transformation).
      **kwargs: arguments of the named factory (numbers or schedules), overriding the defaults.

    Returns:
      The optimizer: ``inject_hyperparams(factory)(learning_rate=default, **kwargs)`` for a name.
    """
    if isinstance(name_or_tx, str):
        name = name_or_tx.lower()
        if name not in _FACTORIES:
            raise ValueError(
                f"Unknown optimizer {name_or_tx!r}. Expected one of {sorted(_FACTORIES)}."
            )
        kwargs.setdefault("learning_rate", _DEFAULT_LR[name])
        return _named(name, tuple(sorted(kwargs.items())))
    if callable(getattr(name_or_tx, "init", None)) and callable(
        getattr(name_or_tx, "update", None)
    ):
        return name_or_tx
    raise TypeError(
        "Expected an optimizer name or a GradientTransformation for name_or_tx. "
        f"Received: {type(name_or_tx).__name__}"
    )
