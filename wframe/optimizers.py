"""optax-shaped optimizers written once against the array API.

States and chains mirror optax's class names, field names and nesting, so a state made by optax
(converted leaf-wise) continues under wframe's update and vice versa. The same implementation runs
on every backend (traced by ``jax.jit`` on JAX, eagerly on NumPy and CuPy), so a model's optimizer
state keeps its classes when the model moves between backends. :func:`fused` gives the named
optimizers an in-place update for backends that have one (NumPy).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

from wframe.backends import array_namespace, backend_of
from wframe.tree import tree_leaves, tree_map
from wframe.types import Array, Grads, Params

OptState = Any
Schedule = Callable[[Array], Any]
ScalarOrSchedule = float | Schedule

__all__ = [
    "AddDecayedWeightsState", "EmptyState", "GradientTransformation", "MaskedState",
    "ScaleByAdamState", "ScaleByRStdDevState", "ScaleByRmsState", "ScaleByRmsWithCountState",
    "ScaleByRStdDevWithCountState", "ScaleByScheduleState", "TraceState", "WeightDecaySchedule",
    "adam", "adamw", "add_decayed_weights", "apply_updates", "chain", "clip_by_global_norm",
    "fused", "get", "identity", "rmsprop", "scale", "scale_by_adam", "scale_by_learning_rate",
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


def _zero_count(params: Params) -> Array:
    leaves = tree_leaves(params)
    if not leaves:  # no array to ask for a namespace: a host count, which every backend accepts
        import numpy

        return numpy.zeros((), dtype=numpy.int32)
    xp = array_namespace(leaves[0])
    return xp.zeros((), dtype=xp.int32)


def _safe_increment(count: Array) -> Array:
    # Saturate instead of wrapping around, as optax.safe_increment does.
    xp = array_namespace(count)
    return xp.where(count < xp.iinfo(count.dtype).max, count + 1, count)


def _per_dtype(make: Callable[[Any], Any]) -> Callable[[Any], Any]:
    # Step scalars are computed once per leaf dtype (usually once per step), not once per leaf.
    cache: dict = {}

    def get(dtype):
        out = cache.get(dtype)
        if out is None:
            out = cache[dtype] = make(dtype)
        return out

    return get


def _count_as_float(count: Array, dtype: Any) -> Array:
    # decay**count in float32 (float64 for float64 leaves), like JAX's promotion in optax.
    xp = array_namespace(count)
    return xp.astype(count, xp.float64 if dtype == xp.float64 else xp.float32)


def _cast(xp, dtype: Any, *values: Array) -> list:
    return [v if v.dtype == dtype else xp.astype(v, dtype) for v in values]


def _astype(t: Array, dtype: Any) -> Array:
    # No copy when the dtype already matches (xp.astype copies by default).
    return t if t.dtype == dtype else array_namespace(t).astype(t, dtype)


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
        xp = array_namespace(state.count)
        get = _per_dtype(lambda dtype: xp.asarray(step_size, dtype=dtype))
        updates = tree_map(lambda g: get(g.dtype) * g, updates)
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
            new_trace = tree_map(lambda t: _astype(t, accumulator_dtype), new_trace)
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
        count = _safe_increment(state.count)

        def scalars(dtype):
            # The bias corrections fold into per-step scalars (Kingma & Ba, section 2):
            # mu/c1 / (sqrt(nu/c2 + eps_root) + eps) = (r/c1) mu / (sqrt(nu + c2 eps_root) + r eps)
            # with c_i = 1 - b_i**t and r = sqrt(c2): no per-leaf bias-correction pass.
            t = _count_as_float(count, dtype)
            xp = array_namespace(t)
            c2 = 1 - b2**t
            r = xp.sqrt(c2)
            if nesterov:  # optax's NAdam: b1 mu/(1 - b1**(t+1)) + (1 - b1) g/(1 - b1**t)
                m_scales = (b1 * r / (1 - b1 ** (t + 1)), (1 - b1) * r / (1 - b1**t))
            else:
                m_scales = (r / (1 - b1**t),)
            return _cast(xp, dtype, eps * r, eps_root * c2, *m_scales)

        get = _per_dtype(scalars)

        def scaled(g, m, v):
            eps_t, root_t, *m_scales = get(m.dtype)
            xp = array_namespace(v)
            den = xp.sqrt(v + root_t if eps_root else v) + eps_t
            num = m_scales[0] * m + m_scales[1] * g if nesterov else m_scales[0] * m
            return num / den

        mu = tree_map(lambda g, m: (1 - b1) * g + b1 * m, updates, state.mu)
        nu = tree_map(lambda g, v: (1 - b2) * (g * g) + b2 * v, updates, state.nu)
        updates = tree_map(scaled, updates, mu, nu)
        if mu_dtype is not None:
            mu = tree_map(lambda t: _astype(t, mu_dtype), mu)
        nu = tree_map(lambda t, old: _astype(t, old.dtype), nu, state.nu)
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
        new = {"nu": tree_map(lambda g, n: (1 - decay) * (g * g) + decay * n, updates, state.nu)}
        if centered:
            new["mu"] = tree_map(lambda g, m: (1 - decay) * g + decay * m, updates, state.mu)
        if bias_correction:
            count = _safe_increment(state.count)
            xp_c = array_namespace(count)
            # Divided, not multiplied by an inverse: centered, nu_hat - mu_hat**2 cancels on the
            # first steps and amplifies any rounding difference from optax.
            bc = _per_dtype(lambda dt: _cast(xp_c, dt, 1 - decay ** _count_as_float(count, dt))[0])

        def scaled(g, n, m=None):
            xp = array_namespace(n)
            if bias_correction:  # one scalar per step, not one power per leaf
                c = bc(n.dtype)
                n, m = n / c, (None if m is None else m / c)
            var = n if m is None else n - m * m
            return g / (xp.sqrt(var + eps) if eps_in_sqrt else xp.sqrt(var) + eps)

        if centered:
            updates = tree_map(scaled, updates, new["nu"], new["mu"])
        else:
            updates = tree_map(scaled, updates, new["nu"])
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
        if scheduled:  # the value in each leaf's dtype, as scale_by_schedule
            value, xp = weight_decay(inner.count), array_namespace(inner.count)
            s = _per_dtype(lambda dtype: xp.asarray(value, dtype=dtype))
            inner = WeightDecaySchedule(_safe_increment(inner.count))
        else:
            s = lambda dtype: weight_decay  # noqa: E731
        keep = mask(params) if callable(mask) else mask
        if keep is None:
            updates = tree_map(lambda g, p: g + s(p.dtype) * p, updates, params)
        else:
            updates = tree_map(
                lambda g, p, k: g + s(p.dtype) * p if k else g, updates, params, keep
            )
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

# update function -> (kind, hyper-parameters) of the transformations fused() can run in place.
_FUSABLE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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
    tx = chain(first, scale_by_learning_rate(learning_rate))
    if accumulator_dtype is None:
        _FUSABLE[tx.update] = ("sgd", (learning_rate, momentum, nesterov))
    return tx


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
      A :class:`GradientTransformation` whose state mirrors optax's.
    """
    tx = chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        scale_by_learning_rate(learning_rate),
    )
    if mu_dtype is None and not nesterov:
        _FUSABLE[tx.update] = ("adam", (learning_rate, b1, b2, eps, eps_root, None, None))
    return tx


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
    tx = chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
    if mu_dtype is None and not nesterov:
        hyper = (learning_rate, b1, b2, eps, eps_root, weight_decay, mask)
        _FUSABLE[tx.update] = ("adam", hyper)
    return tx


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


_FACTORIES = {"adam": adam, "adamw": adamw, "rmsprop": rmsprop, "sgd": sgd}
_DEFAULT_LR = {"adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3, "sgd": 0.01}  # as Keras


def get(name_or_tx: str | GradientTransformation, **kwargs: Any) -> GradientTransformation:
    """Look up an optimizer by name (with Keras's default learning rates) or pass one through.

    Args:
      name_or_tx: ``"adam"``, ``"adamw"``, ``"rmsprop"`` or ``"sgd"`` (any case), or any object
        with callable ``init`` and ``update`` (e.g. an optax transformation).
      **kwargs: arguments of the named factory, overriding the defaults.

    Returns:
      The optimizer.
    """
    if isinstance(name_or_tx, str):
        name = name_or_tx.lower()
        if name not in _FACTORIES:
            raise ValueError(
                f"Unknown optimizer {name_or_tx!r}. Expected one of {sorted(_FACTORIES)}."
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


# --- fused in-place updates --------------------------------------------------------------------


def fused(tx: Any) -> Callable[[Params, Grads, OptState], tuple[Params, OptState]] | None:
    """An in-place ``update`` + :func:`apply_updates` for a transformation made by :func:`sgd`,
    :func:`adam` or :func:`adamw` (constant or scheduled learning rate and weight decay).

    The returned ``apply(params, grads, opt_state) -> (params, opt_state)`` overwrites the
    param and state leaves (and the step counts) and returns the same objects, when the backend
    of the arrays has in-place kernels (NumPy: :meth:`NumpyBackend.fusable` says which arrays
    qualify). Otherwise it runs ``tx.update`` and :func:`apply_updates` and returns new trees,
    leaving its inputs untouched. Results equal that pure path to float32 rounding, and the
    state keeps its structure, classes and dtypes, so either path (or optax) can continue it.
    The caller must own the buffers: arrays a user still holds are overwritten.

    Args:
      tx: any transformation.

    Returns:
      ``apply``, or ``None`` for transformations not made by those factories (chains built by
      hand, optax objects, :func:`rmsprop`, ``nesterov`` Adam, a ``mu_dtype`` or
      ``accumulator_dtype``).
    """
    try:
        kind, hyper = _FUSABLE[tx.update]
    except (AttributeError, KeyError, TypeError):
        return None

    def pure(params, grads, opt_state):
        updates, opt_state = tx.update(grads, opt_state, params)
        return apply_updates(params, updates), opt_state

    if kind == "sgd":
        learning_rate, momentum, nesterov = hyper

        def apply(params, grads, opt_state):
            first, lr_state = opt_state
            trees = (params, grads) if momentum is None else (params, grads, first.trace)
            groups = _groups(*trees)
            backend = _inplace_backend(groups, [lr_state.count] if callable(learning_rate) else [])
            if backend is None:
                return pure(params, grads, opt_state)
            lr = _host_value(backend, learning_rate, lr_state)
            backend.sgd_inplace(groups, lr, momentum, nesterov)
            return params, opt_state

        return apply

    learning_rate, b1, b2, eps, eps_root, weight_decay, mask = hyper
    decoupled = weight_decay is not None  # adamw

    def apply(params, grads, opt_state):  # adam and adamw
        adam_state, lr_state = opt_state[0], opt_state[-1]
        wd_state = opt_state[1] if decoupled else None
        if mask is not None:
            wd_state = wd_state.inner_state
        counts = [adam_state.count]
        if callable(learning_rate):
            counts.append(lr_state.count)
        if callable(weight_decay):
            counts.append(wd_state.count)
        groups = _groups(params, grads, adam_state.mu, adam_state.nu)
        backend = _inplace_backend(groups, counts)
        if backend is None:
            return pure(params, grads, opt_state)
        if mask is not None:  # before any write, in case the mask raises
            keep = [k for _, k in _groups(params, mask(params) if callable(mask) else mask)]
        lr = _host_value(backend, learning_rate, lr_state)
        wd = _host_value(backend, weight_decay, wd_state) if decoupled else 0.0
        args = (backend.increment_inplace(adam_state.count), lr, b1, b2, eps, eps_root)
        if mask is None:
            backend.adam_inplace(groups, *args, wd)
        else:  # masked weight decay: one kernel call with, one without
            backend.adam_inplace([gr for gr, k in zip(groups, keep, strict=True) if k], *args, wd)
            backend.adam_inplace([gr for gr, k in zip(groups, keep, strict=True) if not k], *args)
        return params, opt_state

    return apply


def _groups(*trees: Any) -> list:
    # [param, grad, *state] per leaf; a plain walk over nested dicts, twice as fast as tree_map.
    first = trees[0]
    if isinstance(first, dict):
        out = []
        for k, v in first.items():
            sub = [t[k] for t in trees]
            out += [sub] if hasattr(v, "shape") else _groups(*sub)
        return out
    out = []
    tree_map(lambda *leaves: out.append(list(leaves)), *trees)
    return out


def _inplace_backend(groups: list[tuple], counts: list) -> Any:
    # The backend of the arrays if it has in-place kernels and they accept every array, else None.
    if not groups:
        return None
    backend = backend_of(groups[0][0])
    ok = getattr(backend, "fusable", None)
    return backend if ok is not None and ok(groups, counts) else None


def _host_value(backend: Any, value: ScalarOrSchedule, state: Any) -> float:
    # A schedule is read at the pre-increment count, as scale_by_schedule does.
    if not callable(value):
        return value
    out = float(value(state.count))
    backend.increment_inplace(state.count)
    return out
