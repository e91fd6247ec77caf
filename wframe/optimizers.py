"""optax-shaped optimizers written once against the array API.

States and chains mirror optax's class names, field names and nesting, so a state made by optax
(converted leaf-wise) continues under wframe's update and vice versa. On the jax backend the named
optimizers (:func:`sgd`, :func:`adam`, :func:`adamw`, :func:`rmsprop`) are optax's own.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple, ParamSpec

from wframe.backends import array_namespace, get_backend
from wframe.tree import tree_leaves, tree_map
from wframe.types import Array, Grads, Params

OptState = Any
Schedule = Callable[[Array], Any]
ScalarOrSchedule = float | Schedule
P = ParamSpec("P")

__all__ = [
    "AddDecayedWeightsState", "EmptyState", "GradientTransformation", "MaskedState",
    "ScaleByAdamState", "ScaleByRStdDevState", "ScaleByRmsState", "ScaleByRmsWithCountState",
    "ScaleByRStdDevWithCountState", "ScaleByScheduleState", "TraceState", "WeightDecaySchedule",
    "adam", "adamw", "add_decayed_weights", "apply_updates", "chain", "clip_by_global_norm", "get",
    "identity", "rebuild", "rmsprop", "scale", "scale_by_adam", "scale_by_learning_rate",
    "scale_by_rms", "scale_by_schedule", "scale_by_stddev", "sgd", "trace",
]  # fmt: skip


class GradientTransformation(NamedTuple):
    """``init(params) -> state`` and ``update(updates, state, params=None) -> (updates, state)``."""

    init: Callable[[Params], OptState]
    update: Callable[..., tuple[Grads, OptState]]


class EmptyState(NamedTuple):
    """State of stateless transformations."""


AddDecayedWeightsState = EmptyState  # optax's name for add_decayed_weights' state


class TraceState(NamedTuple):
    trace: Params


class ScaleByAdamState(NamedTuple):
    count: Array  # shape (), int32 as in optax
    mu: Params
    nu: Params


class ScaleByRmsState(NamedTuple):
    nu: Params


class ScaleByRmsWithCountState(NamedTuple):
    count: Array
    nu: Params


class ScaleByRStdDevState(NamedTuple):
    mu: Params
    nu: Params


class ScaleByRStdDevWithCountState(NamedTuple):
    count: Array
    mu: Params
    nu: Params


class ScaleByScheduleState(NamedTuple):
    count: Array


class WeightDecaySchedule(NamedTuple):
    count: Array


class MaskedState(NamedTuple):
    inner_state: Any


# --- helpers (pure xp; jit-traceable) --------------------------------------------------------


def _xp_of(tree: Any):
    leaves = tree_leaves(tree)
    return array_namespace(leaves[0]) if leaves else get_backend().xp


def _zero_count(params: Params) -> Array:
    xp = _xp_of(params)
    return xp.zeros((), dtype=xp.int32)


def _safe_increment(count: Array) -> Array:
    # Saturate instead of wrapping around, as optax.safe_increment does.
    xp = array_namespace(count)
    top = xp.iinfo(count.dtype).max
    return xp.where(count < top, count + 1, xp.asarray(top, dtype=count.dtype))


def _moment(updates: Grads, moments: Params, decay: float, order: int) -> Params:
    return tree_map(lambda g, t: (1 - decay) * (g**order) + decay * t, updates, moments)


def _bias_correction(moment: Params, decay: float, count: Array) -> Params:
    def fn(t):
        # decay**count in the moment's precision, like JAX's weak float promotion of int32.
        xp = array_namespace(t)
        return t / xp.astype(1 - decay ** xp.astype(count, t.dtype), t.dtype)

    return tree_map(fn, moment)


def _full_like(params: Params, value: float) -> Params:
    return tree_map(lambda p: array_namespace(p).full_like(p, value), params)


def _zeros_like(params: Params, dtype: Any = None) -> Params:
    return tree_map(lambda p: array_namespace(p).zeros_like(p, dtype=dtype), params)


def _empty_init(params: Params) -> EmptyState:
    del params
    return EmptyState()


# --- building blocks ---------------------------------------------------------------------------


def identity() -> GradientTransformation:
    """Pass updates through unchanged."""

    def update_fn(updates, state, params=None):
        del params
        return updates, state

    return GradientTransformation(_empty_init, update_fn)


def chain(*txs: GradientTransformation) -> GradientTransformation:
    """Apply transformations in order; the state is the tuple of their states, as in optax."""
    init_fns, update_fns = zip(*txs, strict=True) if txs else ((), ())

    def init_fn(params):
        return tuple(fn(params) for fn in init_fns)

    def update_fn(updates, state, params=None):
        if len(update_fns) != len(state):
            raise ValueError(
                f"chain expected a state of {len(update_fns)} entries, received "
                f"{len(state)}. Make sure you have called init first!"
            )
        new_state = []
        for s, fn in zip(state, update_fns, strict=True):
            updates, s = fn(updates, s, params)
            new_state.append(s)
        return updates, tuple(new_state)

    return GradientTransformation(init_fn, update_fn)


def scale(step_size: float) -> GradientTransformation:
    """Multiply updates by a constant ``step_size``."""

    def update_fn(updates, state, params=None):
        del params
        return tree_map(lambda g: step_size * g, updates), state

    return GradientTransformation(_empty_init, update_fn)


def scale_by_schedule(step_size_fn: Schedule) -> GradientTransformation:
    """Multiply updates by ``step_size_fn(count)``, counting steps from 0."""

    def update_fn(updates, state, params=None):
        del params
        step_size = step_size_fn(state.count)
        updates = tree_map(
            lambda g: array_namespace(g).asarray(step_size, dtype=g.dtype) * g, updates
        )
        return updates, ScaleByScheduleState(count=_safe_increment(state.count))

    return GradientTransformation(lambda p: ScaleByScheduleState(_zero_count(p)), update_fn)


def scale_by_learning_rate(
    learning_rate: ScalarOrSchedule, *, flip_sign: bool = True
) -> GradientTransformation:
    """Scale by ``-learning_rate`` (a float or a ``step -> value`` schedule)."""
    m = -1 if flip_sign else 1
    if callable(learning_rate):
        return scale_by_schedule(lambda count: m * learning_rate(count))
    return scale(m * learning_rate)


def trace(
    decay: float, nesterov: bool = False, accumulator_dtype: Any = None
) -> GradientTransformation:
    """Momentum: ``trace = g + decay * trace``; Nesterov returns ``g + decay * trace``."""

    def update_fn(updates, state, params=None):
        del params
        new_trace = tree_map(lambda g, t: g + decay * t, updates, state.trace)
        out = tree_map(lambda g, t: g + decay * t, updates, new_trace) if nesterov else new_trace
        if accumulator_dtype is not None:
            new_trace = tree_map(
                lambda t: array_namespace(t).astype(t, accumulator_dtype), new_trace
            )
        return out, TraceState(trace=new_trace)

    return GradientTransformation(
        lambda p: TraceState(trace=_zeros_like(p, accumulator_dtype)), update_fn
    )


def scale_by_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    """Rescale updates by Adam's bias-corrected moments (Kingma & Ba, 2014).

    Args:
      b1: decay of the first moment.
      b2: decay of the second moment.
      eps: added to the denominator outside the square root.
      eps_root: added to the second moment inside the square root.
      mu_dtype: dtype of the first moment, ``None`` to follow the params.
      nesterov: use Nesterov momentum (NAdam).

    Returns:
      A :class:`GradientTransformation` with :class:`ScaleByAdamState`.
    """

    def init_fn(params):
        mu, nu = _zeros_like(params, mu_dtype), _zeros_like(params)
        return ScaleByAdamState(count=_zero_count(params), mu=mu, nu=nu)

    def update_fn(updates, state, params=None):
        del params
        mu = _moment(updates, state.mu, b1, 1)
        nu = _moment(updates, state.nu, b2, 2)
        count = _safe_increment(state.count)
        if nesterov:
            mu_hat = tree_map(
                lambda m, g: b1 * m + (1 - b1) * g,
                _bias_correction(mu, b1, _safe_increment(count)),
                _bias_correction(updates, b1, count),
            )
        else:
            mu_hat = _bias_correction(mu, b1, count)
        nu_hat = _bias_correction(nu, b2, count)
        xp = _xp_of(nu_hat)
        updates = tree_map(lambda m, v: m / (xp.sqrt(v + eps_root) + eps), mu_hat, nu_hat)
        if mu_dtype is not None:
            mu = tree_map(lambda t: xp.astype(t, mu_dtype), mu)
        nu = tree_map(lambda t, old: xp.astype(t, old.dtype), nu, state.nu)
        return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)

    return GradientTransformation(init_fn, update_fn)


def _scale_by_moments(decay, eps, initial_scale, eps_in_sqrt, bias_correction, centered):
    # scale_by_rms and scale_by_stddev differ only in tracking (and subtracting) the mean.
    plain, counted = (
        (ScaleByRStdDevState, ScaleByRStdDevWithCountState)
        if centered
        else (ScaleByRmsState, ScaleByRmsWithCountState)
    )

    def init_fn(params):
        moments = {"nu": _full_like(params, initial_scale)}
        if centered:
            moments["mu"] = _zeros_like(params)
        if bias_correction:
            return counted(count=_zero_count(params), **moments)
        return plain(**moments)

    def update_fn(updates, state, params=None):
        del params
        new = {"nu": _moment(updates, state.nu, decay, 2)}
        if centered:
            new["mu"] = _moment(updates, state.mu, decay, 1)
        hat = new
        if bias_correction:
            count = _safe_increment(state.count)
            hat = {k: _bias_correction(v, decay, count) for k, v in new.items()}
        xp = _xp_of(hat["nu"])
        var = tree_map(lambda m, n: n - m * m, hat["mu"], hat["nu"]) if centered else hat["nu"]
        if eps_in_sqrt:
            scaling = tree_map(lambda v: 1 / xp.sqrt(v + eps), var)
        else:
            scaling = tree_map(lambda v: 1 / (xp.sqrt(v) + eps), var)
        updates = tree_map(lambda s, g: s * g, scaling, updates)
        return updates, (counted(count=count, **new) if bias_correction else plain(**new))

    return GradientTransformation(init_fn, update_fn)


def scale_by_rms(
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> GradientTransformation:
    """Divide updates by the root of a moving average of squared updates (RMSProp)."""
    return _scale_by_moments(decay, eps, initial_scale, eps_in_sqrt, bias_correction, False)


def scale_by_stddev(
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> GradientTransformation:
    """Divide updates by a moving estimate of their standard deviation (centered RMSProp)."""
    return _scale_by_moments(decay, eps, initial_scale, eps_in_sqrt, bias_correction, True)


def add_decayed_weights(
    weight_decay: ScalarOrSchedule = 0.0, mask: Any = None
) -> GradientTransformation:
    """Add ``weight_decay * params`` to updates, where ``mask`` (a bool tree or callable) is true.

    Args:
      weight_decay: a float or a ``step -> value`` schedule.
      mask: ``None`` (all params), a tree of bools like the params, or ``params -> tree``.

    Returns:
      A :class:`GradientTransformation`; its state is wrapped in :class:`MaskedState` when
      ``mask`` is given, as optax's ``masked`` does.
    """
    scheduled = callable(weight_decay)

    def init_fn(params):
        inner = WeightDecaySchedule(_zero_count(params)) if scheduled else EmptyState()
        return inner if mask is None else MaskedState(inner_state=inner)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                "add_decayed_weights needs params: call update(updates, state, params)"
            )
        inner = state if mask is None else state.inner_state
        s = weight_decay(inner.count) if scheduled else weight_decay
        if scheduled:
            inner = WeightDecaySchedule(_safe_increment(inner.count))
        keep = mask(params) if callable(mask) else mask
        if keep is None:
            updates = tree_map(lambda g, p: g + s * p, updates, params)
        else:
            updates = tree_map(lambda g, p, k: g + s * p if k else g, updates, params, keep)
        return updates, (inner if mask is None else MaskedState(inner_state=inner))

    return GradientTransformation(init_fn, update_fn)


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """Rescale updates so that their global L2 norm is at most ``max_norm``."""

    def update_fn(updates, state, params=None):
        del params
        leaves = tree_leaves(updates)
        if not leaves:
            return updates, state
        xp = array_namespace(leaves[0])
        g_norm = xp.sqrt(sum(xp.sum(g * g) for g in leaves))
        updates = tree_map(
            lambda t: xp.where(g_norm < max_norm, t, t / xp.astype(g_norm, t.dtype) * max_norm),
            updates,
        )
        return updates, state

    return GradientTransformation(_empty_init, update_fn)


def apply_updates(params: Params, updates: Grads) -> Params:
    """Return ``params + updates``, keeping each param's dtype."""
    def add(p, u):
        new = p + u
        return new if new.dtype == p.dtype else array_namespace(p).astype(new, p.dtype)

    return tree_map(add, params, updates)


# --- named optimizers --------------------------------------------------------------------------

# update function -> (factory name, args, kwargs), so rebuild() can remake it for another backend.
_MADE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_FACTORIES: dict[str, Callable[..., GradientTransformation]] = {}


def _named(impl: Callable[P, GradientTransformation]) -> Callable[P, GradientTransformation]:
    # On jax the named optimizers are optax's own; elsewhere wframe's implementation runs.
    @functools.wraps(impl)
    def factory(*args: P.args, **kwargs: P.kwargs) -> GradientTransformation:
        tx = get_backend().optax(impl.__name__, *args, **kwargs)
        if tx is None:
            tx = impl(*args, **kwargs)
        _MADE[tx.update] = (impl.__name__, args, kwargs)
        return tx

    _FACTORIES[impl.__name__] = factory
    return factory


@_named
def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: float | None = None,
    nesterov: bool = False,
    accumulator_dtype: Any = None,
) -> GradientTransformation:
    """Stochastic gradient descent, with optional (Nesterov) momentum.

    Args:
      learning_rate: a float or a ``step -> value`` schedule.
      momentum: the momentum decay, or ``None`` for none.
      nesterov: use Nesterov momentum.
      accumulator_dtype: dtype of the momentum buffer, ``None`` to follow the params.

    Returns:
      ``chain(trace or identity, scale_by_learning_rate)``, as optax.
    """
    first = identity() if momentum is None else trace(momentum, nesterov, accumulator_dtype)
    return chain(first, scale_by_learning_rate(learning_rate))


@_named
def adam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    """Adam: ``chain(scale_by_adam(...), scale_by_learning_rate(learning_rate))``.

    Args:
      learning_rate: a float or a ``step -> value`` schedule.
      b1, b2, eps, eps_root, mu_dtype, nesterov: as in :func:`scale_by_adam`.

    Returns:
      A :class:`GradientTransformation` (optax's own on the jax backend).
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        scale_by_learning_rate(learning_rate),
    )


@_named
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
) -> GradientTransformation:
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019).

    Args:
      learning_rate: a float or a ``step -> value`` schedule.
      b1, b2, eps, eps_root, mu_dtype, nesterov: as in :func:`scale_by_adam`.
      weight_decay, mask: as in :func:`add_decayed_weights`.

    Returns:
      ``chain(scale_by_adam, add_decayed_weights, scale_by_learning_rate)``, as optax.
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


@_named
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
) -> GradientTransformation:
    """RMSProp, optionally centered and with momentum.

    Args:
      learning_rate: a float or a ``step -> value`` schedule.
      decay, eps, initial_scale, eps_in_sqrt, bias_correction: as in :func:`scale_by_rms`.
      centered: divide by the standard deviation (:func:`scale_by_stddev`) instead.
      momentum, nesterov: momentum applied *after* the learning rate, as optax does.

    Returns:
      ``chain(scale_by_rms or scale_by_stddev, scale_by_learning_rate, trace or identity)``.
    """
    scaler = scale_by_stddev if centered else scale_by_rms
    return chain(
        scaler(decay, eps, initial_scale, eps_in_sqrt, bias_correction),
        scale_by_learning_rate(learning_rate),
        identity() if momentum is None else trace(momentum, nesterov),
    )


_DEFAULT_LR = {"adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3, "sgd": 0.01}  # as Keras


def get(name_or_tx: str | GradientTransformation, **kwargs: Any) -> GradientTransformation:
    """Look up an optimizer by name (with Keras's default learning rates) or pass one through.

    Args:
      name_or_tx: ``"adam"``, ``"adamw"``, ``"rmsprop"`` or ``"sgd"`` (any case), or any object
        with callable ``init`` and ``update`` (e.g. an optax transformation).
      **kwargs: arguments of the named factory, overriding the defaults.

    Returns:
      The optimizer for the active backend.
    """
    if isinstance(name_or_tx, str):
        name = name_or_tx.lower()
        if name not in _DEFAULT_LR:
            raise ValueError(
                f"Unknown optimizer {name_or_tx!r}. Expected one of {sorted(_DEFAULT_LR)}."
            )
        kwargs.setdefault("learning_rate", _DEFAULT_LR[name])
        return _FACTORIES[name](**kwargs)
    if callable(getattr(name_or_tx, "init", None)) and callable(
        getattr(name_or_tx, "update", None)
    ):
        return name_or_tx
    raise TypeError(
        "Expected an optimizer name or a GradientTransformation for name_or_tx. "
        f"Received: {type(name_or_tx).__name__}"
    )


def rebuild(tx: GradientTransformation) -> GradientTransformation:
    """The same named optimizer, with the same arguments, built for the active backend.

    Args:
      tx: a transformation made by :func:`sgd`, :func:`adam`, :func:`adamw` or :func:`rmsprop`.

    Returns:
      The rebuilt transformation, or ``tx`` itself if it was not made by those factories.
      Its state layout is unchanged, so an existing state can be converted leaf-wise.
    """
    made = _MADE.get(tx.update)
    if made is None:
        return tx
    name, args, kwargs = made
    return _FACTORIES[name](*args, **kwargs)
