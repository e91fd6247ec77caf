"""Pure train and eval steps, compiled once: the gradient (autodiff or hand-written), the
regularizers' penalty, pruning masks, gradient clipping, the finite guard and the optimizer.

The backend of every compiled function is the backend of the model's arrays, never the ambient
one, so a step behaves the same wherever it is called or retraced. The runner that gathers
batches around these steps is :mod:`wframe.training.runner`; the loop, :mod:`.loop`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wframe import losses as losses_mod
from wframe import optimizers as optimizers_mod
from wframe import precision
from wframe import regularizers as regularizers_mod
from wframe.backends import backend_of
from wframe.optimizers import clipping
from wframe.training.grad_stats import (
    GradStats,
    dead_fraction,
    grad_stats,
    leaf_norm,
    update_ratios,
)
from wframe.training.host_plan import host_finite, planned_forward, planned_step
from wframe.training.logs import Layout
from wframe.training.tracker import NOTHING, Tracker, unweighted
from wframe.tree import map_at, merge, path_get, split, tree_leaves, tree_map
from wframe.types import Params, TrainState


def make_grad_fn(layer, loss: losses_mod.Loss, frozen: frozenset[str] = frozenset()) -> Callable:
    """``(params, state, x, y, key) -> (loss, grads, new_state, pred, penalty)`` on any backend.

    ``loss`` is the data loss, ``penalty`` the sum of ``layer``'s regularizers (0 without any)
    and ``grads`` the gradient of their sum w.r.t. the params not named in ``frozen`` (flat
    names; ``grads`` holds only those). The strategy follows the arrays: where their backend has
    autodiff (JAX) only the trainable partition is differentiated, through ``layer``'s forward
    (asked for no backprop closures) plus the penalty; elsewhere the hand-written ``backprop``
    closures are asked only for the trainable params' gradients (a frozen body is not even
    traversed backward), plus each penalty's closed-form gradient.

    With a loss ``scale`` (mixed_float16's loss scaling) the backward pass runs on the loss
    times ``scale`` and the gradients are divided by it, in their own (float32) dtype.

    Args:
      layer: the model's root layer (its ``apply`` and regularizers).
      loss: the data loss (a :class:`~wframe.losses.Loss`).
      frozen: flat names of the params not trained (``"dense_0/W"``); empty: all are.
    """
    terms = regularizers_mod.collect(layer)
    trained = {p: r for p, r in terms.items() if "/".join(p) not in frozen}

    def unscale(grads, scale):
        return grads if scale is None else tree_map(lambda g: g / scale, grads)

    def grad_fn(params, state, x, y, key=None, scale=None):
        backend = backend_of(*x) if isinstance(x, tuple) else backend_of(x)
        fixed, need = None, None
        if frozen:
            need, fixed = split(params, frozen)  # (trainable, frozen) partitions
        if backend.has_autodiff:

            def objective(tp):
                p = tp if fixed is None else merge(tp, fixed, params)
                pred, new_state, _ = layer.apply(p, state, x, train=True, key=key, vjp=False)
                value, penalty = _value(loss, pred, y), regularizers_mod.penalty(p, terms)
                total = value + penalty if scale is None else (value + penalty) * scale
                return total, (value, penalty, new_state, pred)

            grad = backend.value_and_grad(objective, has_aux=True)
            (_, aux), grads = grad(params if need is None else need)
            value, penalty, new_state, pred = aux
            return value, unscale(grads, scale), new_state, pred, penalty
        pred, new_state, backprop = layer.apply(params, state, x, train=True, key=key)
        value, dpred = _loss(loss, pred, y)
        if scale is not None:
            dpred = dpred * scale
        if need is None:
            grads = backprop(dpred, input_grad=False)[1]
        else:
            grads = backprop(dpred, input_grad=False, need=need)[1]
        grads = unscale(grads, scale)
        penalty = regularizers_mod.penalty(params, terms)
        return value, regularizers_mod.add_grads(grads, params, trained), new_state, pred, penalty

    grad_fn.penalized = bool(terms)
    return grad_fn


def _value(loss: losses_mod.Loss, pred: Any, y: Any) -> Any:
    """The loss alone of a step's ``y`` (what autodiff and evaluation need)."""
    labels, w = unweighted(y)
    return loss.value(pred, labels, w)


def _loss(loss: losses_mod.Loss, pred: Any, y: Any) -> tuple[Any, Any]:
    """``loss(pred, labels[, sample_weight])`` of a step's ``y`` (labels, or
    :class:`~wframe.types.Weighted` labels)."""
    labels, w = unweighted(y)
    return loss(pred, labels) if w is None else loss(pred, labels, w)


def _update_fn(optimizer, backend, in_place: bool = True) -> Callable:
    """``(params, grads, opt_state) -> (params, opt_state)``: the fused in-place update that
    ``optimizer`` declares (its spec's ``fused``) where ``backend`` runs the step as Python and
    ``in_place`` allows it (a step whose input arrays stay published must not); else the pure
    update."""
    # Traced code (JAX) gets the pure update, which XLA fuses. The fused update falls back to
    # the pure one by itself for arrays that have no in-place kernel.
    if in_place and not backend.traced:
        fused = optimizers_mod.fused(optimizer)  # None: the optimizer declares no fused update
        if fused is not None:
            return fused

    def update(params, grads, opt_state):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optimizers_mod.apply_updates(params, updates), opt_state

    return update


def log_names(
    layer, tracker: Tracker, clip: clipping.Clip | None, stats: bool = False
) -> tuple[str, ...]:
    """The names a train step logs, in order: loss, the tracker's (each output's loss, the
    metrics), penalty, grad_norm, and with ``stats`` the per-parameter statistics
    (:attr:`GradStats.names`).

    Args:
      layer: the model's root layer (``penalty`` is logged when it has regularizers).
      tracker: the entries logged after the loss.
      clip: the clipping options; ``grad_norm`` is logged when any is set.
      stats: add the per-parameter gradient statistics' names.
    """
    extra = ("penalty",) if regularizers_mod.collect(layer) else ()
    return (
        "loss",
        *tracker.names,
        *extra,
        *(("grad_norm",) if clip else ()),
        *(grad_stats(layer).names if stats else ()),
    )


def log_layout(layer, tracker: Tracker, clip: clipping.Clip | None) -> Layout:
    """The running sums of a train step's logs (:func:`log_names` without statistics)."""
    return Layout(log_names(layer, tracker, clip), tracker.metrics)


def _masked(tree: Params, masks: dict[str, Any] | None) -> Params:
    if not masks:
        return tree
    return map_at(tree, {name: (lambda a, m=m: a * m) for name, m in masks.items()})


def core_step(
    layer,
    loss,
    optimizer,
    tracker: Tracker,
    backend,
    guard: bool = True,
    clip=None,
    frozen: frozenset[str] = frozenset(),
    stats: GradStats | None = None,
    sync: Callable | None = None,
    in_place: bool = True,
    check: bool = True,
) -> Callable:
    """``(ts, x, y, key, allowed) -> (ts, value, logged values, ok)`` with the finite guard
    (without it, ``ok`` is still computed but a bad step is applied). Without ``guard`` nor
    ``check``, and without clipping or loss scaling, the step checks nothing and ``ok`` is
    ``None``: the caller checks the params after its steps (see
    :func:`~wframe.training.runner.make_params_check`). Without ``in_place`` no array of ``ts`` is
    updated in place (NumPy's fused optimizers are not used). The logged values follow
    :func:`log_names` after the loss (``tracker``'s: an output's loss, a metric's statistics).
    The optimizer sees only the params not in ``frozen``. With ``stats`` (which names at least
    one param) the values end with a vector of those statistics: each gradient's norm (before
    clipping), each update's ratio to its param and each ReLU layer's dead fraction. A
    ``mixed_float16`` layer's dynamic loss scale (``ts.loss_scale``) scales the backward pass,
    and a step whose gradients overflow while its loss is finite is skipped and halves the scale
    (:class:`wframe.precision.DynamicLossScale`): it is ``ok`` unless the scale is at its
    minimum. On a host backend, what a model's plans cover runs as a step built once from them
    (:func:`~wframe.training.host_plan.planned_step`), the general step for the rest."""
    update = _update_fn(optimizer, backend, in_place)
    scaler = getattr(getattr(layer, "policy", None), "loss_scale", None)
    general = _general_step(
        layer, loss, tracker, backend, update, scaler, guard, clip, frozen, stats, sync, check
    )
    if scaler is not None:
        return precision.quietly(general)
    plain = not (frozen or stats or sync or clip is not None or regularizers_mod.collect(layer))
    if backend.on_host and plain:
        planned = planned_step(
            layer, loss, tracker, backend, update, general, guard=guard, check=check
        )
        return planned or general
    return general


def _general_step(
    layer, loss, tracker, backend, update, scaler, guard, clip, frozen, stats, sync, check
) -> Callable:
    """:func:`core_step`'s step for everything: the gradient function of the layers'
    ``forward`` and ``backprop`` (or autodiff), the masks, clipping, the guard, the loss scale
    and the statistics."""
    grad_fn = make_grad_fn(layer, loss, frozen)
    apply = _applier(update, frozen)
    # On the host (NumPy) the guard reads floats: no array temporaries, no select.
    host = backend.on_host and clip is None and scaler is None

    def core(ts, x, y, key, allowed):
        xp = backend.xp
        scale = None if scaler is None else ts.loss_scale.scale
        value, grads, new_state, pred, penalty = grad_fn(ts.params, ts.state, x, y, key, scale)
        masks = ts.masks
        if frozen and masks:
            masks = {k: m for k, m in masks.items() if k not in frozen}
        # Pruned weights get no gradient, so optimizer moments started at zero stay zero.
        grads = _masked(grads, masks)
        logged = tracker.values(loss, pred, y)
        if sync is not None:  # data parallel over processes (NcclDataParallel): rank means
            value, grads, logged, new_state = sync(value, grads, logged, new_state)
        if stats is not None:  # before the update: NumPy's fused optimizers work in place
            norms, dead, before = _stats_before(stats, grads, ts.params, xp)
        if grad_fn.penalized:
            logged.append(penalty)
        # As optax.apply_if_finite: a step whose loss or gradients are not finite changes
        # nothing, so the weights left are those of the last finite step.
        if not (guard or check or clip is not None or scaler is not None):
            ok = None  # unchecked: the caller checks the params after its steps
        elif host:
            ok = bool(allowed) and host_finite(value, penalty, grads, xp)
        else:
            grads, spread = _clipped(grads, clip, logged, xp)
            ok = xp.isfinite(value + penalty + spread) & allowed
        gate = ok if guard else None  # when the update applies (None: always)
        if scaler is not None:  # mixed_float16: an overflowing backward pass skips the step
            ok, gate, loss_scale = scaler.judge(
                ts.loss_scale, value + penalty, spread, allowed, guard, backend
            )
        # On JAX both branches are computed and selected elementwise (fit runs unguarded and
        # replays guarded instead, see FiniteGuard; make_train_step has no later point).
        if gate is None:
            ts = apply(ts, grads, new_state)
        elif host:  # a Python bool: no branch closures
            ts = apply(ts, grads, new_state) if gate else ts
        else:
            ts = backend.cond(gate, lambda t: apply(t, grads, new_state), lambda t: t, ts)
        if scaler is not None:
            ts = ts._replace(loss_scale=loss_scale)
        if stats is not None:  # one vector: one accumulator, not one per statistic
            ratios = update_ratios(before, [path_get(ts.params, p) for p in stats.params])
            logged.append(xp.concat([norms, ratios, *([xp.stack(dead)] if dead else [])]))
        return ts, value, logged, ok

    return core


def _applier(update: Callable, frozen: frozenset[str]) -> Callable:
    """``apply(ts, grads, new_state) -> ts``: the optimizer's update of the trainable params
    (frozen ones get none, and no optimizer state), pruned entries kept at zero."""

    def apply(ts, grads, new_state):
        if frozen:
            trainable, fixed = split(ts.params, frozen)
            trainable, opt_state = update(trainable, grads, ts.opt_state)
            params = merge(trainable, fixed, ts.params)
        else:
            params, opt_state = update(ts.params, grads, ts.opt_state)
        return TrainState(_masked(params, ts.masks), new_state, opt_state, ts.masks, ts.loss_scale)

    return apply


def _clipped(grads: Params, clip: Any, logged: list, xp: Any) -> tuple[Params, Any]:
    """``(grads, spread)``: the gradients clipped (their pre-clip global norm logged and the
    spread), or as they are with their sum as the spread (finite exactly when they all are)."""
    if clip is None:
        return grads, sum(xp.sum(g) for g in tree_leaves(grads))
    # The norm over the trainable params' gradients (``grads`` holds only those).
    norm = clipping.global_norm(grads)
    logged.append(norm)
    return clipping.apply(grads, clip, norm), norm


def _stats_before(stats: GradStats, grads: Params, params: Params, xp: Any) -> tuple:
    """The statistics read before the update: each gradient's norm, each ReLU layer's dead
    fraction, and copies of the params whose update ratios are measured."""
    norms = xp.stack([leaf_norm(path_get(grads, p)) for p in stats.params])
    dead = [dead_fraction(grads, path, have) for path, have in stats.relu]
    before = [xp.asarray(path_get(params, p), copy=True) for p in stats.params]
    return norms, dead, before


class ConsumedStateError(RuntimeError):
    """A :func:`make_train_step` step was given a train state an earlier call consumed."""


class _Issued(TrainState):
    """A train state a step returned; marked ``consumed`` when a step takes it."""

    consumed = False


def make_train_step(
    model,
    loss: Any,
    optimizer: Any,
    *,
    metrics: Any = (),
    clipnorm: float | None = None,
    clipvalue: float | None = None,
    global_clipnorm: float | None = None,
):
    """A pure ``step(train_state, x, y, key=None) -> (train_state, logs)``, compiled once.

    Args:
      model: a built :class:`~wframe.Sequential` (its backend compiles the step); its layers'
        regularizers are added to the loss (``logs["penalty"]``).
      loss: a loss name or :class:`~wframe.losses.Loss`.
      optimizer: an optimizer name or ``(init, update)`` transformation (optax's on JAX).
      metrics: metrics to log next to the loss, as ``compile(metrics=...)`` takes them
        (names or :class:`wframe.metrics.Metric` objects): each batch's value, read on the
        host after the step.
      clipnorm, clipvalue, global_clipnorm: gradient clipping as in ``fit`` (at most one);
        ``logs["grad_norm"]`` is the pre-clip global norm.

    Returns:
      The step. ``train_state`` is consumed (its ``masks`` excepted): donated on JAX, updated
      in place on NumPy; keep the returned one. Passing a consumed state again raises
      :class:`ConsumedStateError` on every backend (any state a step returned, and the state
      of the step's last call), before anything runs. Its ``masks`` (a pruned model's
      ``model.masks``) keep those weights at zero. A step whose loss or gradients are not
      finite returns the params unchanged (``logs["loss"]`` shows the bad value). A
      ``mixed_float16`` model's steps keep the dynamic loss scale in ``loss_scale`` (started
      where it is ``None``) and log it as ``logs["loss_scale"]``.
    """
    loss = losses_mod.get(loss)
    optimizer = optimizers_mod.get(optimizer)
    clip = clipping.options(clipnorm, clipvalue, global_clipnorm)
    backend = model.backend
    tracker = Tracker.of(loss, list(metrics), model.output_names)
    core = core_step(model, loss, optimizer, tracker, backend, clip=clip, frozen=model.frozen)
    names = log_names(model, tracker, clip)[1:]
    scaler = model.policy.loss_scale

    def pure(train_state, masks, x, y, key):
        ts, value, values, _ = core(train_state._replace(masks=masks), x, y, key, True)
        logs = {"loss": value, **dict(zip(names, values, strict=True))}
        if scaler is not None:
            logs["loss_scale"] = ts.loss_scale.scale
        return ts._replace(masks=None), logs

    compiled = backend.jit(pure, donate_argnums=(0,))
    last: list = [None]  # the state of the last call (a user's TrainState cannot be marked)

    def step(train_state, x, y, key=None):
        if getattr(train_state, "consumed", False) or train_state is last[0]:
            raise ConsumedStateError(
                "make_train_step: this TrainState was consumed by an earlier call of the step "
                "(its arrays were donated or updated in place); pass the state that call "
                "returned: ts, logs = step(ts, x, y)"
            )
        if isinstance(train_state, _Issued):
            train_state.consumed = True
        last[0] = train_state
        masks = train_state.masks
        if scaler is not None and train_state.loss_scale is None:
            train_state = train_state._replace(loss_scale=scaler.init(backend))
        # The masks are read, never donated: they stay the model's.
        ts, logs = compiled(TrainState(*train_state)._replace(masks=None), masks, x, y, key)
        return _Issued(*ts._replace(masks=masks)), _metric_results(logs, tracker, backend)

    step.compiled = compiled  # the backend's compiled function (for inspection)
    return step


def _metric_results(logs: dict, tracker: Tracker, backend) -> dict:
    """``logs`` with each metric's statistics turned into its value (read on the host)."""
    if not tracker.metrics:
        return logs
    host = backend.to_host({name: logs[name] for name in tracker.metrics})
    return {**logs, **{n: float(m.result(host[n])) for n, m in tracker.metrics.items()}}


def make_eval_step(model, loss, tracker: Tracker = NOTHING) -> Callable:
    """A pure ``step(params, state, x, y) -> logs`` in inference mode, compiled once: the
    loss and ``tracker``'s values (a metric's statistics, summed over batches by the caller).

    Args:
      model: the model (its ``apply`` and backend's ``jit``).
      loss: a loss name or :class:`~wframe.losses.Loss`.
      tracker: the entries logged after the loss (default: nothing).
    """
    loss = losses_mod.get(loss)
    forward = planned_forward(model, model.backend) or (  # the host's inference plan
        lambda params, state, x: model.apply(params, state, x, train=False, vjp=False)[0]
    )

    def step(params, state, x, y):
        pred = forward(params, state, x)
        values = tracker.values(loss, pred, y)
        return {"loss": _value(loss, pred, y), **dict(zip(tracker.names, values, strict=True))}

    return model.backend.jit(step)
