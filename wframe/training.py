"""Pure train and eval steps, compiled once: the gradient (autodiff or hand-written), the
regularizers' penalty, pruning masks, gradient clipping, the finite guard and the optimizer.

The backend of every compiled function is the backend of the model's arrays, never the ambient
one, so a step behaves the same wherever it is called or retraced. The loop that drives the
steps is :mod:`wframe.fitting`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

from wframe import clipping, precision
from wframe import losses as losses_mod
from wframe import optimizers as optimizers_mod
from wframe import regularizers as regularizers_mod
from wframe.backends import Backend, backend_of
from wframe.grad_stats import (
    GradStats,
    dead_fraction,
    grad_stats,
    leaf_norm,
    update_ratios,
)
from wframe.layers import combinators
from wframe.tree import map_at, merge, path_get, split, tree_leaves, tree_map
from wframe.types import Params, State


class TrainState(NamedTuple):
    """Everything a train step updates: the model's params and state, the optimizer's state,
    the pruning masks it keeps (``{"dense_0/W": 0/1 array}``, ``None`` for none) and the
    dynamic loss scale of a ``mixed_float16`` model (``None`` for the other policies; a step
    of :func:`make_train_step` starts one where it is missing)."""

    params: Params
    state: State
    opt_state: Any
    masks: dict[str, Any] | None = None
    loss_scale: Any = None


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
    """
    terms = regularizers_mod.collect(layer)
    trained = {p: r for p, r in terms.items() if "/".join(p) not in frozen}

    def unscale(grads, scale):
        return grads if scale is None else tree_map(lambda g: g / scale, grads)

    def grad_fn(params, state, x, y, key=None, scale=None):
        backend = backend_of(x)
        fixed, need = None, None
        if frozen:
            need, fixed = split(params, frozen)  # (trainable, frozen) partitions
        if backend.has_autodiff:

            def objective(tp):
                p = tp if fixed is None else merge(tp, fixed, params)
                pred, new_state, _ = layer.apply(p, state, x, train=True, key=key, vjp=False)
                value, penalty = loss(pred, y)[0], regularizers_mod.penalty(p, terms)
                total = value + penalty if scale is None else (value + penalty) * scale
                return total, (value, penalty, new_state, pred)

            grad = backend.value_and_grad(objective, has_aux=True)
            (_, aux), grads = grad(params if need is None else need)
            value, penalty, new_state, pred = aux
            return value, unscale(grads, scale), new_state, pred, penalty
        pred, new_state, backprop = layer.apply(params, state, x, train=True, key=key)
        value, dpred = loss(pred, y)
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


def _update_fn(optimizer, backend) -> Callable:
    """``(params, grads, opt_state) -> (params, opt_state)``: fused in place where it can be."""
    # Traced code (JAX) gets the pure update, which XLA fuses; NumPy updates the owned buffers
    # in place where the optimizer has a fused form (it falls back to the pure path itself).
    fused = None if backend.has_autodiff else optimizers_mod.fused(optimizer)
    if fused is not None:
        return fused

    def update(params, grads, opt_state):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optimizers_mod.apply_updates(params, updates), opt_state

    return update


def log_names(
    layer, loss: losses_mod.Loss, clip: clipping.Clip | None, stats: bool = False
) -> tuple[str, ...]:
    """The names a train step logs, in order: loss, its metric, penalty, grad_norm, and with
    ``stats`` the per-parameter statistics (:attr:`GradStats.names`)."""
    extra = ("penalty",) if regularizers_mod.collect(layer) else ()
    return (
        "loss",
        *((loss.metric,) if loss.metric else ()),
        *extra,
        *(("grad_norm",) if clip else ()),
        *(grad_stats(layer).names if stats else ()),
    )


def _masked(tree: Params, masks: dict[str, Any] | None) -> Params:
    if not masks:
        return tree
    return map_at(tree, {name: (lambda a, m=m: a * m) for name, m in masks.items()})


def _core(
    layer,
    loss,
    optimizer,
    metrics,
    backend,
    guard: bool = True,
    clip=None,
    frozen: frozenset[str] = frozenset(),
    stats: GradStats | None = None,
    sync: Callable | None = None,
) -> Callable:
    """``(ts, x, y, key, allowed) -> (ts, value, logged values, ok)`` with the finite guard
    (without it, ``ok`` is still computed but a bad step is applied). The logged values follow
    :func:`log_names` after the loss. The optimizer sees only the params not in ``frozen``.
    With ``stats`` (which names at least one param) the values end with a vector of those
    statistics: each gradient's norm (before clipping), each update's ratio to its param and
    each ReLU layer's dead fraction. A ``mixed_float16`` layer's dynamic loss scale
    (``ts.loss_scale``) scales the backward pass, and a step whose gradients overflow while its
    loss is finite is skipped and halves the scale (:class:`wframe.precision.DynamicLossScale`):
    it is ``ok`` unless the scale is at its minimum."""
    grad_fn = make_grad_fn(layer, loss, frozen)
    update = _update_fn(optimizer, backend)
    metric_fns = [losses_mod.METRICS[name] for name in metrics]
    scaler = getattr(getattr(layer, "policy", None), "loss_scale", None)

    def core(ts, x, y, key, allowed):
        xp = backend.xp
        scale = None if scaler is None else ts.loss_scale.scale
        value, grads, new_state, pred, penalty = grad_fn(ts.params, ts.state, x, y, key, scale)
        masks = ts.masks
        if frozen and masks:
            masks = {k: m for k, m in masks.items() if k not in frozen}
        # Pruned weights get no gradient, so optimizer moments started at zero stay zero.
        grads = _masked(grads, masks)
        logged = [fn(pred, y) for fn in metric_fns]
        if sync is not None:  # data parallel over processes (NcclDataParallel): rank means
            value, grads, logged, new_state = sync(value, grads, logged, new_state)
        if stats is not None:
            norms = xp.stack([leaf_norm(path_get(grads, p)) for p in stats.params])
            dead = [dead_fraction(grads, path, have) for path, have in stats.relu]
            # Copies: NumPy's fused optimizers update the params in place.
            before = [xp.asarray(path_get(ts.params, p), copy=True) for p in stats.params]
        if grad_fn.penalized:
            logged.append(penalty)
        if clip is not None:
            # The norm over the trainable params' gradients (``grads`` holds only those),
            # logged before clipping.
            norm = clipping.global_norm(grads)
            grads = clipping.apply(grads, clip, norm)
            logged.append(norm)
            spread = norm
        else:
            spread = sum(xp.sum(g) for g in tree_leaves(grads))
        total = value + penalty + spread
        # As optax.apply_if_finite: a step whose loss or gradients are not finite changes
        # nothing, so the weights left are those of the last finite step.
        ok = xp.isfinite(total) & allowed
        gate = ok if guard else None  # when the update applies (None: always)
        if scaler is not None:  # mixed_float16: an overflowing backward pass skips the step
            ok, gate, loss_scale = scaler.judge(
                ts.loss_scale, value + penalty, spread, allowed, guard, backend
            )
        # On JAX both branches are computed and selected elementwise (fit runs unguarded and
        # replays guarded instead, see fitting; make_train_step has no later point to replay).

        def apply(ts):
            if frozen:  # frozen params: no update, no optimizer state
                trainable, fixed = split(ts.params, frozen)
                trainable, opt_state = update(trainable, grads, ts.opt_state)
                params = merge(trainable, fixed, ts.params)
            else:
                params, opt_state = update(ts.params, grads, ts.opt_state)
            return TrainState(
                _masked(params, ts.masks), new_state, opt_state, ts.masks, ts.loss_scale
            )

        ts = backend.cond(gate, apply, lambda ts: ts, ts) if gate is not None else apply(ts)
        if scaler is not None:
            ts = ts._replace(loss_scale=loss_scale)
        if stats is not None:  # one vector: one accumulator, not one per statistic
            ratios = update_ratios(before, [path_get(ts.params, p) for p in stats.params])
            logged.append(xp.concat([norms, ratios, *([xp.stack(dead)] if dead else [])]))
        return ts, value, logged, ok

    return core if scaler is None else precision.quietly(core)


def make_train_step(
    model,
    loss: Any,
    optimizer: Any,
    *,
    metrics: tuple[str, ...] = (),
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
      metrics: names from :data:`wframe.losses.METRICS` to log next to the loss.
      clipnorm, clipvalue, global_clipnorm: gradient clipping as in ``fit`` (at most one);
        ``logs["grad_norm"]`` is the pre-clip global norm.

    Returns:
      The step. ``train_state`` is consumed (its ``masks`` excepted): donated on JAX, updated
      in place on NumPy; keep the returned one. Its ``masks`` (a pruned model's
      ``model.masks``) keep those weights at zero. A step whose loss or gradients are not
      finite returns the params unchanged (``logs["loss"]`` shows the bad value). A
      ``mixed_float16`` model's steps keep the dynamic loss scale in ``loss_scale`` (started
      where it is ``None``) and log it as ``logs["loss_scale"]``.
    """
    loss = losses_mod.get(loss)
    optimizer = optimizers_mod.get(optimizer)
    clip = clipping.options(clipnorm, clipvalue, global_clipnorm)
    backend = model.backend
    core = _core(model, loss, optimizer, metrics, backend, clip=clip, frozen=model.frozen)
    names = (*metrics, *log_names(model, loss, clip)[1 + bool(loss.metric) :])
    scaler = model.policy.loss_scale

    def pure(train_state, masks, x, y, key):
        ts, value, values, _ = core(train_state._replace(masks=masks), x, y, key, True)
        logs = {"loss": value, **dict(zip(names, values, strict=True))}
        if scaler is not None:
            logs["loss_scale"] = ts.loss_scale.scale
        return ts._replace(masks=None), logs

    compiled = backend.jit(pure, donate_argnums=(0,))

    def step(train_state, x, y, key=None):
        if scaler is not None and train_state.loss_scale is None:
            train_state = train_state._replace(loss_scale=scaler.init(backend))
        # The masks are read, never donated: they stay the model's.
        ts, logs = compiled(train_state._replace(masks=None), train_state.masks, x, y, key)
        return ts._replace(masks=train_state.masks), logs

    step.compiled = compiled  # the backend's compiled function (for inspection)
    return step


def make_eval_step(model, loss, *, metrics: tuple[str, ...] = ()) -> Callable:
    """A pure ``step(params, state, x, y) -> logs`` in inference mode, compiled once."""
    loss = losses_mod.get(loss)
    metric_fns = {name: losses_mod.METRICS[name] for name in metrics}

    def step(params, state, x, y):
        pred, _, _ = model.apply(params, state, x, train=False, vjp=False)
        return {"loss": loss(pred, y)[0], **{name: fn(pred, y) for name, fn in metric_fns.items()}}

    return model.backend.jit(step)


def make_runner(
    model,
    loss,
    optimizer,
    metrics: tuple[str, ...],
    steps: int,
    guard: bool = True,
    tail: int = 0,
    stats: bool = False,
    clip: clipping.Clip | None = None,
    strategy: Any = None,
) -> Callable:
    """``run(ts, acc, x, y, order, start, first_step, key0, fresh) -> (ts, acc)``: ``steps``
    train steps on the batches ``order[start : start + steps]`` (rows of example indices),
    gathered on the device, in one compiled call (a ``lax.scan`` on JAX when ``steps > 1``).

    ``acc = (sums, bad)``: ``sums`` the size-weighted loss and metrics of the finite steps and
    their example count, ``bad`` the first non-finite step (-1 if none), after which updates are
    skipped. ``fresh`` zeroes ``acc`` first (a new epoch) without a separate device call.
    ``guard=False`` applies non-finite steps too (``bad`` is still recorded): the fit loop runs
    that and replays the call guarded only when ``bad`` says so. With ``tail > 0`` the call is a
    whole epoch: ``order`` is the flat permutation, cut into ``steps`` full batches and a last
    batch of ``tail`` examples, all in the one compiled call.

    With ``stats`` the step also logs :func:`grad_stats`' per-parameter statistics (their
    names end :func:`log_names`), summed in ``acc`` as the losses are but in one vector, the
    last entry of ``sums`` before the count; the first non-finite step adds its non-finite
    statistics too, so that a reading names the params that broke. Without it none of that is
    traced. With a ``strategy`` (:class:`wframe.distributed.DataParallel`) each gathered batch
    is sharded over its devices and the train state kept replicated; when it feeds batches
    (per-process data) ``x``, ``y`` are the call's batches stacked, ``(steps, batch, ...)``, and
    ``order`` is ``arange(steps)``. A strategy with ``sync`` (NcclDataParallel) averages each
    step's gradients, loss and metrics over its ranks (:func:`_core`).
    """
    backend = model.backend
    spec = grad_stats(model) if stats else None
    spec = spec if spec and spec.params else None  # every param frozen: nothing to measure
    core = _core(
        model,
        loss,
        optimizer,
        metrics,
        backend,
        guard,
        clip,
        model.frozen,
        spec,
        getattr(strategy, "sync", None),
    )
    stochastic = model.uses_key
    xp = backend.xp
    x_buffers: dict = {}  # the batch buffers NumPy reuses (per runner: one fit at a time)
    y_buffers: dict = {}

    def one(carry, i, x, y, order, start, first_step, key0):
        ts, (sums, bad) = carry
        idx = xp.take(order, start + i, axis=0)
        # Into buffers reused from step to step where the backend can (NumPy); nothing holds
        # a batch past its step.
        xb, yb = backend.gather(x, idx, x_buffers), backend.gather(y, idx, y_buffers)
        if strategy is not None:
            xb, yb = strategy.shard_batch(xb), strategy.shard_batch(yb)
        step = first_step + i
        key = None
        if stochastic:
            counter = xp.asarray(step, dtype=xp.uint32)
            key = key0 + xp.asarray([0, 1], dtype=xp.uint32) * counter
        ts, value, values, ok = core(ts, xb, yb, key, bad < 0)
        size = xb.shape[0]  # (idx is a step index when the strategy feeds stacked batches)

        def add(acc):  # scalars, not a stacked vector: cheaper on NumPy, the same under jit
            new = (v * size for v in (value, *values))
            sums = (a + v for a, v in zip(acc[0][:-1], new, strict=True))
            return (*sums, acc[0][-1] + size), acc[1]

        def skip(acc):  # record the first non-finite step
            first, sums = acc[1] < 0, acc[0]
            if spec is not None:
                v = values[-1]
                poisoned = sums[-2] + xp.where(first & ~xp.isfinite(v), v, xp.zeros_like(v))
                sums = (*sums[:-2], poisoned, sums[-1])
            return sums, xp.where(first, xp.asarray(step, dtype=xp.int32), acc[1])

        return (ts, backend.cond(ok, add, skip, (sums, bad))), None

    def run(ts, acc, x, y, order, start, first_step, key0, fresh):
        acc = backend.cond(
            fresh,
            lambda a: (tuple(xp.zeros_like(s) for s in a[0]), xp.full_like(a[1], -1)),
            lambda a: a,
            acc,
        )
        rows, carry = order, (ts, acc)
        if tail:
            cut = order.shape[0] - tail
            last = xp.reshape(order[cut:], (1, tail))
            rows = xp.reshape(order[:cut], (steps, cut // steps)) if steps else None
        if steps == 1:
            carry = one(carry, 0, x, y, rows, start, first_step, key0)[0]
        elif steps:
            body = lambda c, i: one(c, i, x, y, rows, start, first_step, key0)  # noqa: E731
            carry = backend.scan(body, carry, xp.arange(steps, dtype=xp.int32))[0]
        if tail:
            carry = one(carry, 0, x, y, last, 0, first_step + steps, key0)[0]
        if strategy is not None:
            carry = (strategy.keep_replicated(carry[0]), carry[1])
        return carry

    return backend.jit(run, donate_argnums=(0,))


def check_optimizer(optimizer: Any, backend: Backend, *, moving: bool = False) -> None:
    """Refuse an optimizer that cannot run on ``backend`` (optax outside JAX)."""
    module = getattr(type(optimizer), "__module__", "") or ""
    if module.split(".")[0] == "optax" and not backend.has_autodiff:
        if moving:
            raise TypeError(
                f"cannot move the model to '{backend.name}': its optimizer is an optax "
                "transformation, which runs on the jax backend only. Set a wframe optimizer "
                "first (model.compile(optimizer=wf.optimizers.adam(...))), which runs on every "
                "backend"
            )
        raise TypeError(
            f"the optimizer is an optax transformation, which runs on the jax backend only, but "
            f"the model lives on '{backend.name}'. Use wframe's own (wf.optimizers.adam(...), "
            "sgd, adamw, rmsprop, chain, ...), which run on every backend, or move the model "
            "with model.to_backend('jax')"
        )


def check_opt_state(opt_state: Any, backend: Backend) -> None:
    for leaf in tree_leaves(opt_state):
        if hasattr(leaf, "shape") and backend_of(leaf) is not backend:
            raise TypeError(
                f"the optimizer built its state on backend '{backend_of(leaf).name}', but the "
                f"model lives on '{backend.name}'; use an optimizer written for "
                f"'{backend.name}' (wf.optimizers run on every backend)"
            )


def warn_softmax_with_logits(model, loss: losses_mod.Loss) -> None:
    if not getattr(loss, "from_logits", False):
        return
    layer: Any = model
    while layer.children():
        if not isinstance(layer, combinators.Sequential):
            return
        layer = layer.layers[-1]
    activation = getattr(layer, "activation", None)
    if activation == "softmax" or getattr(activation, "__name__", None) == "softmax":
        warnings.warn(
            f"the model's last layer {layer.label} applies softmax, but loss '{loss.name}' "
            "expects logits and applies softmax itself (a double softmax trains badly). Remove "
            f"the activation, or pass loss=wf.losses.get('{loss.name}', from_logits=False)",
            UserWarning,
            stacklevel=3,
        )
