"""The fused in-place updates that optimizers declare, run on backends with in-place kernels.

:func:`fused` reads a transformation's declaration (:func:`~wframe.optimizers.spec_of`) by field
name: an :class:`~wframe.optimizers.OptimizerSpec` whose ``fused`` is a
:class:`~wframe.optimizers.FusedSpec` names the kernel (``kind``) and its ``hyperparams``, and
``parts`` says where each part's state sits in the chain's; an
:class:`~wframe.optimizers.InjectedSpec` says which of the inner optimizer's hyper-parameters
live in the state. Nothing else is fused.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from wframe.backends import array_namespace, backend_of
from wframe.optimizers.base import OptState, ScalarOrSchedule, apply_updates
from wframe.optimizers.inject import is_injected_state
from wframe.optimizers.spec import (
    AdamHyperparams,
    InjectedSpec,
    OptimizerSpec,
    RmspropHyperparams,
    SgdHyperparams,
    spec_of,
)
from wframe.tree import tree_map
from wframe.types import Grads, Params

Apply = Callable[[Params, Grads, OptState], tuple[Params, OptState]]


def fused(tx: Any) -> Apply | None:
    """An in-place ``update`` + :func:`apply_updates` for a transformation that declares one: made
    by :func:`sgd`, :func:`adam`, :func:`adamw` (constant or scheduled learning rate and weight
    decay) or :func:`rmsprop` (neither centered nor bias-corrected; in place only where the
    backend has ``rmsprop_inplace``, CuPy), or by :func:`inject_hyperparams` of one of them.

    The returned ``apply(params, grads, opt_state) -> (params, opt_state)`` overwrites the
    param and state leaves (and the step counts) and returns the same objects, when the backend
    of the arrays has in-place kernels (NumPy: :meth:`NumpyBackend.fusable` says which arrays
    qualify); an injected state with a schedule comes back as a new tuple whose scheduled
    hyper-parameters are new arrays. A named optimizer's state with its learning rate injected
    (:func:`with_settable_learning_rate`) runs the same kernel at the stored rate. Otherwise it
    runs ``tx.update`` and :func:`apply_updates` and returns new trees, leaving its inputs
    untouched. Results equal that pure path to float32
    rounding, and the state keeps its structure, classes and dtypes, so either path (or optax)
    can continue it. The caller must own the buffers (arrays a user still holds are overwritten)
    and check the gradients first where a step must be skippable: nothing is kept to undo one.

    Args:
      tx: any transformation.

    Returns:
      ``apply``, or ``None`` where ``tx`` declares no fused update (chains built by hand,
      optax objects, centered or bias-corrected :func:`rmsprop`, ``nesterov`` Adam, a
      ``mu_dtype`` or ``accumulator_dtype``).
    """
    spec = spec_of(tx)
    pure = functools.partial(_pure, tx)
    if isinstance(spec, InjectedSpec):
        return _injected(spec, pure)
    if not isinstance(spec, OptimizerSpec) or spec.fused is None:
        return None
    step, hyper = _STEPS[spec.fused.kind], spec.fused.hyperparams
    # Its state with the learning rate injected (made settable by a callback): that kernel.
    settable = None if spec.settable is None else _injected(spec.settable, pure)

    # Plain SGD at a constant rate, the common case: one pass where the backend has it.
    plain = spec.fused.kind == "sgd" and hyper.momentum is None
    rate = hyper.learning_rate if plain and not callable(hyper.learning_rate) else None

    def apply(params, grads, opt_state):
        if settable is not None and is_injected_state(opt_state):
            return settable(params, grads, opt_state)
        if not spec.fits(opt_state):  # not this optimizer's state: the pure path says so
            return _pure(tx, params, grads, opt_state)
        if rate is not None and _tree_sgd(params, grads, rate):
            return params, opt_state
        part = functools.partial(spec.part, opt_state)
        if step(hyper, params, grads, part) is None:
            return _pure(tx, params, grads, opt_state)
        return params, opt_state

    return apply


def _tree_sgd(params: Params, grads: Grads, rate: Any) -> bool:
    # The backend of the gradients' first leaf runs it (its sgd_tree_inplace checks the rest);
    # False for trees that are not a model's {layer: {name: array}}, or a backend without it.
    try:
        leaf = next(iter(next(iter(grads.values())).values()))
    except (AttributeError, StopIteration, TypeError):
        return False
    kernel = getattr(backend_of(leaf), "sgd_tree_inplace", None) if hasattr(leaf, "shape") else None
    return kernel is not None and kernel(params, grads, rate)


def _pure(tx: Any, params: Params, grads: Grads, opt_state: OptState) -> tuple:
    updates, opt_state = tx.update(grads, opt_state, params)
    return apply_updates(params, updates), opt_state


def _injected(spec: InjectedSpec, pure: Callable) -> Apply | None:
    # The inner optimizer's kernel, with the hyper-parameters read on the host each step.
    inner = spec.inner_spec()
    if not isinstance(inner, OptimizerSpec) or inner.fused is None:
        return None
    step, template = _STEPS[inner.fused.kind], inner.fused.hyperparams
    stored = [k for k in template._fields if k in spec.numeric]
    timed = [(k, spec.schedules[k]) for k in template._fields if k in spec.schedules]

    def apply(params, grads, opt_state):
        count, values, inner_state = opt_state.count, opt_state.hyperparams, opt_state.inner_state
        backend = backend_of(count)
        if not inner.fits(inner_state) or not backend.fusable((), (count,)):
            return pure(params, grads, opt_state)  # before any host read (a device sync elsewhere)
        read = _reader(backend)
        try:
            hyper = {k: read(values[k]) for k in stored}
        except KeyError:  # not this optimizer's state: the pure path says so
            return pure(params, grads, opt_state)
        scheduled = {}
        for k, schedule in timed:  # in the stored dtype, as the pure path has it
            value = schedule(count)
            old = values.get(k)
            if hasattr(old, "dtype"):
                value = array_namespace(count).asarray(value, dtype=old.dtype)
            scheduled[k], hyper[k] = value, read(value)
        part = functools.partial(inner.part, inner_state)
        if step(template._replace(**hyper), params, grads, part) is None:
            return pure(params, grads, opt_state)
        backend.increment_inplace(count)
        if scheduled:
            opt_state = opt_state._replace(hyperparams={**values, **scheduled})
        return params, opt_state

    return apply


# Each step reads its hyper-parameters by name and the chain's states through ``part(role)``
# (the roles its OptimizerSpec declares); it returns the backend it ran on, or ``None``, having
# written nothing, where the backend has no kernel for these arrays.


def _sgd(h: SgdHyperparams, params: Params, grads: Grads, part: Callable) -> Any:
    """SGD's step in place."""
    if h.momentum is None and not callable(h.learning_rate):
        # The common case in few calls: a model's {layer: {name: array}}, a constant rate.
        groups = _plain_groups(params, grads)
        backend = None if groups is None else _inplace_backend(groups, ())
        if backend is not None:
            backend.sgd_inplace(groups, h.learning_rate)
            return backend
    lr_state = part("learning_rate")
    trees = (params, grads) if h.momentum is None else (params, grads, part("momentum").trace)
    groups = _groups(*trees)
    counts = [lr_state.count] if callable(h.learning_rate) else []
    backend = _inplace_backend(groups, counts)
    if backend is None:
        return None
    lr = _host_value(backend, h.learning_rate, lr_state)
    backend.sgd_inplace(groups, lr, h.momentum, h.nesterov)
    return backend


def _adam(h: AdamHyperparams, params: Params, grads: Grads, part: Callable) -> Any:
    """Adam's (and AdamW's) step in place."""
    decoupled = h.weight_decay is not None  # adamw
    adam_state, lr_state = part("moments"), part("learning_rate")
    wd_state = part("weight_decay") if decoupled else None
    if h.mask is not None:
        wd_state = wd_state.inner_state
    counts = [adam_state.count]
    if callable(h.learning_rate):
        counts.append(lr_state.count)
    if callable(h.weight_decay):
        counts.append(wd_state.count)
    groups = _groups(params, grads, adam_state.mu, adam_state.nu)
    backend = _inplace_backend(groups, counts)
    if backend is None:
        return None
    if h.mask is not None:  # before any write, in case the mask raises
        keep = [k for _, k in _groups(params, h.mask(params) if callable(h.mask) else h.mask)]
    lr = _host_value(backend, h.learning_rate, lr_state)
    wd = _host_value(backend, h.weight_decay, wd_state) if decoupled else 0.0
    args = (backend.increment_inplace(adam_state.count), lr, h.b1, h.b2, h.eps, h.eps_root)
    if h.mask is None:
        backend.adam_inplace(groups, *args, wd)
    else:  # masked weight decay: one kernel call with, one without
        backend.adam_inplace([gr for gr, k in zip(groups, keep, strict=True) if k], *args, wd)
        backend.adam_inplace([gr for gr, k in zip(groups, keep, strict=True) if not k], *args)
    return backend


def _rmsprop(h: RmspropHyperparams, params: Params, grads: Grads, part: Callable) -> Any:
    """RMSProp's step in place where the backend has ``rmsprop_inplace`` (CuPy)."""
    leaf = params
    while isinstance(leaf, dict) and leaf:  # the backend first: NumPy has no such kernel
        leaf = next(iter(leaf.values()))
    if not hasattr(leaf, "shape") or not hasattr(backend_of(leaf), "rmsprop_inplace"):
        return None
    lr_state = part("learning_rate")
    trees = (params, grads, part("moments").nu)
    if h.momentum is not None:
        trees = (*trees, part("momentum").trace)
    groups = _groups(*trees)
    counts = [lr_state.count] if callable(h.learning_rate) else []
    backend = _inplace_backend(groups, counts)
    if backend is None:
        return None
    lr = _host_value(backend, h.learning_rate, lr_state)
    args = (h.decay, h.eps, h.eps_in_sqrt, h.momentum, h.nesterov)
    backend.rmsprop_inplace(groups, lr, *args)
    return backend


#: FusedSpec.kind -> its step.
_STEPS: dict[str, Callable] = {"sgd": _sgd, "adam": _adam, "rmsprop": _rmsprop}


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


def _plain_groups(params: Any, grads: Any) -> list | None:
    # [param, grad] per leaf of two-level dicts of arrays (a model's params), the grads' keys
    # those of the params; None for any other layout (then _groups).
    out = []
    try:
        for k, layer in params.items():
            sub = grads[k]
            for name, p in layer.items():
                if not hasattr(p, "shape"):  # a nested chain's dict: deeper than two levels
                    return None
                out.append([p, sub[name]])
    except (AttributeError, KeyError, TypeError):
        return None
    return out if len(out) == sum(len(g) for g in grads.values()) else None


def _inplace_backend(groups: list[tuple], counts: Any) -> Any:
    # The backend of the arrays if it has in-place kernels and they accept every array, else None.
    if not groups:
        return None
    backend = backend_of(groups[0][0])
    return backend if backend.fusable(groups, counts) else None


def _host_value(backend: Any, value: ScalarOrSchedule, state: Any) -> Any:
    # A schedule is read at the pre-increment count, as scale_by_schedule does.
    if not callable(value):
        return value
    out = _reader(backend)(value(state.count))
    backend.increment_inplace(state.count)
    return out


def _reader(backend: Any) -> Callable:
    # A backend whose kernels take hyper-parameters as 0-d device arrays (CuPy: no host read,
    # so a step stays capturable in a CUDA graph) gets them as they are; NumPy gets floats.
    return _as_is if getattr(backend, "device_scalars", False) else float


def _as_is(value: Any) -> Any:
    return value
