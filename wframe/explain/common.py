"""What every attribution method shares: the output explained and its targets, the inputs as a
tuple (one array per model input), their baselines, the selected output and its input
gradients, and the chunks of rows that each compiled call evaluates."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from wframe import data, data_rows
from wframe.backends import array_namespace, backend_of, to_numpy
from wframe.types import Array


class Head(NamedTuple):
    """The output explained (``output=``): its position among the model's outputs, how many
    outputs the model has, its name and its shape ``(None, ...)``."""

    index: int
    count: int
    name: str
    shape: tuple


class Prepared(NamedTuple):
    """What a method starts from: ``xs`` (one array per input, on the model's backend), the
    one-hot rows ``w`` of the targets (shaped like the explained output), the :class:`Head`
    and how ``x`` was given (``"array"``, ``"list"`` or ``"dict"``: how results come back)."""

    xs: tuple
    w: Array
    head: Head
    form: str

    @property
    def rows(self) -> int:
        return int(self.w.shape[0])

    @property
    def floats(self) -> tuple[bool, ...]:
        """Which inputs get attributions (integer inputs are held fixed)."""
        return tuple(is_float(a) for a in self.xs)


# ----------------------------------------------------------------- chunks of rows
def rows_per_call(model) -> int:
    """Rows per compiled call: as many as keep one activation near 4M elements (<= 4096)."""
    return model.default_batch_size(1 << 30)


def per_call(model, rows_each: int = 1) -> int:
    """Samples per compiled call when each sample takes ``rows_each`` rows (at least 1)."""
    return max(1, rows_per_call(model) // rows_each)


def chunks(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


def concat(parts: list[Array]) -> Array:
    return parts[0] if len(parts) == 1 else backend_of(*parts).xp.concat(parts, axis=0)


def concat_each(parts: list[tuple]) -> tuple:
    """Tuples of arrays (``None`` where an input gets no attribution) joined position-wise."""
    return tuple(
        None if parts[0][i] is None else concat([p[i] for p in parts]) for i in range(len(parts[0]))
    )


def take(xs: tuple, rows: slice) -> tuple:
    """Those rows of each array (``None`` stays ``None``)."""
    return tuple(None if a is None else a[rows] for a in xs)


def repeat_rows(a: Array, times: int) -> Array:
    """Each row of ``a`` ``times`` times in a row: (m, ...) -> (m * times, ...)."""
    xp = array_namespace(a)
    tiled = xp.broadcast_to(xp.expand_dims(a, axis=1), (a.shape[0], times, *a.shape[1:]))
    return xp.reshape(tiled, (a.shape[0] * times, *a.shape[1:]))


def compiled(model, name: str, head: Head, fn, *static: Any) -> Any:
    """``fn(model, head, *static, params, state, *arrays)`` compiled once per model build,
    backend, output explained and ``static`` values (all part of the memo key)."""
    twin = model.trainer.model  # array-less: the memo must not keep this model's arrays
    return model.trainer.memo(
        ("explain", name, head.index, *static),
        lambda: model.backend.jit(lambda p, s, *a: fn(twin, head, *static, p, s, *a)),
    )


# ----------------------------------------------------------------- outputs and targets
def select_output(model, output: Any, what: str) -> Head:
    """The :class:`Head` that ``output`` (a name, an index, or ``None`` for a model of one
    output) names; a ``ValueError`` lists the model's outputs otherwise."""
    names = tuple(model.output_names)
    count = len(names)
    if output is None and count > 1:
        raise ValueError(
            f"{what}: the model has {count} outputs {list(names)}; pass output= (a name or an "
            "index) to choose the one explained"
        )
    if output is None:
        index = 0
    elif isinstance(output, str):
        if output not in names:
            raise ValueError(f"{what}: output {output!r} is not one of the outputs {list(names)}")
        index = names.index(output)
    else:
        index = data.as_int(output, f"{what}: output", minimum=0)
        if index >= count:
            raise ValueError(
                f"{what}: output {index} is out of range: the model has {count} output"
                f"{'s' if count > 1 else ''} {list(names)}"
            )
    shape = model.output_shape if count == 1 else model.output_shape[index]
    return Head(index, count, names[index], tuple(shape))


def target_indices(model, head: Head, xs: tuple, target: Any) -> np.ndarray:
    """One index into the explained output per sample, checked on the host."""
    n, k = int(xs[0].shape[0]), math.prod(head.shape[1:])
    if target is None:
        pred = model.predict(xs if len(xs) > 1 else xs[0])
        if isinstance(pred, dict):
            pred = pred[head.name]
        elif isinstance(pred, (list, tuple)):
            pred = pred[head.index]
        return np.argmax(to_numpy(pred).reshape(n, -1), axis=1)
    t = to_numpy(target) if hasattr(target, "shape") else np.asarray(target)
    if t.dtype == np.bool_ or not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"target must be an int or an array of ints, got {t.dtype} {target!r}")
    if t.ndim not in (0, 1) or (t.ndim == 1 and t.shape[0] != n):
        raise ValueError(
            f"target must be an int or one index per sample (shape ({n},)), got shape {t.shape}"
        )
    if t.size and (t.min() < 0 or t.max() >= k):
        bad = t[(t < 0) | (t >= k)].ravel()[0]
        where = f"output {head.name!r}" if head.count > 1 else "the model"
        raise ValueError(f"target must be in [0, {k}): {where} has {k} outputs, got {bad}")
    return np.broadcast_to(t, (n,)).astype(np.int64)


def onehot(model, head: Head, t: np.ndarray) -> Array:
    """The one-hot rows that select the targets: ``dy`` of the backprop, weights of the scores."""
    hot = np.eye(math.prod(head.shape[1:]), dtype=model.dtype)[t]
    return model.backend.asarray(hot.reshape(len(t), *head.shape[1:]), dtype=model.dtype)


# ----------------------------------------------------------------- inputs
def is_float(a: Array) -> bool:
    """Whether input ``a`` gets attributions: integer and boolean inputs (token ids) do not."""
    return not array_namespace(a).isdtype(a.dtype, ("integral", "bool"))


def prepare(model, x: Any, target: Any, output: Any, what: str) -> Prepared:
    """``x`` on the model's backend as a tuple, the output explained and its target rows."""
    got = model.prepare_inputs(x)
    xs = got if isinstance(got, tuple) else (got,)
    if xs[0].shape[0] == 0:
        raise ValueError(f"x has no examples (shape {tuple(xs[0].shape)})")
    if not any(is_float(a) for a in xs):
        raise ValueError(
            f"{what}: the model's inputs {list(model.input_names)} are all integer (token ids?) "
            "and integer inputs get no attribution; explain a model that takes their float "
            "embeddings as input"
        )
    head = select_output(model, output, what)
    form = "dict" if isinstance(x, dict) else ("list" if len(xs) > 1 else "array")
    return Prepared(xs, onehot(model, head, target_indices(model, head, xs, target)), head, form)


def results(model, prep: Prepared, values: tuple) -> Any:
    """One result per input, given back as ``x`` was: an array, a list, or a dict by name."""
    if prep.form == "dict":
        return dict(zip(model.input_names, values, strict=True))
    return list(values) if prep.form == "list" else values[0]


def per_input(model, value: Any, what: str, used: tuple[bool, ...]) -> tuple:
    """``value`` as one entry per input: a list in input order or a dict by input name (a
    missing name is ``None``), or one value (``None``, a number) shared by every input. An
    input not in ``used`` (integer, say) takes no value: its own entry must be ``None``."""
    names = tuple(model.input_names)
    if len(names) == 1:
        return data_rows.per_name(value, names, what, "input")
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(f"{what}: unknown input names {unknown}; the inputs are {list(names)}")
        parts = tuple(value.get(name) for name in names)
    elif isinstance(value, (list, tuple)):
        if len(value) != len(names):
            raise ValueError(
                f"{what}: {len(value)} entries for the model's {len(names)} inputs "
                f"{list(names)}; give one per input (None for the default) or a dict by name"
            )
        parts = tuple(value)
    elif getattr(value, "ndim", 0):
        raise ValueError(
            f"{what}: the model has {len(names)} inputs {list(names)}; give a list of one per "
            "input or a dict by input name, got one array"
        )
    else:
        return tuple(v if u else None for v, u in zip((value,) * len(names), used, strict=True))
    for name, part, u in zip(names, parts, used, strict=True):
        if part is not None and not u:
            raise ValueError(
                f"{what}[{name!r}] must be None: input {name!r} gets no attribution here and "
                "is held at x"
            )
    return parts


def broadcast_baseline(model, x: Array, baseline: Any, what: str = "baseline") -> Array:
    """``baseline`` broadcast to ``x``: a number, one input (``x.shape[1:]``) or one per sample."""
    xp = model.backend.xp
    if baseline is None:
        return xp.zeros_like(x)
    if not hasattr(baseline, "shape"):
        baseline = np.asarray(baseline)
    shape = tuple(baseline.shape)
    if shape not in ((), tuple(x.shape), tuple(x.shape[1:])):
        raise ValueError(
            f"{what} must be a number, one input of shape {tuple(x.shape[1:])} or one per sample "
            f"of shape {tuple(x.shape)}, got shape {shape}"
        )
    whole = shape == tuple(x.shape)
    part = baseline if whole else baseline.reshape(1, *shape)
    return xp.broadcast_to(data.inputs(part, model.backend, model.dtype, what), x.shape)


def baselines(model, prep: Prepared, baseline: Any, what: str = "baseline") -> tuple:
    """One baseline per input (``None`` given: zeros); ``None`` for integer inputs, which stay
    at ``x``."""
    named = len(prep.xs) > 1
    parts = per_input(model, baseline, what, prep.floats)
    return tuple(
        broadcast_baseline(model, x, b, f"{what}[{name!r}]" if named else what)
        if is_float(x)
        else None
        for x, b, name in zip(prep.xs, parts, model.input_names, strict=True)
    )


# ----------------------------------------------------------------- outputs and gradients
def scores(model, head: Head, params, state, xs: tuple, w: Array) -> Array:
    """The selected output of each row: ``sum(f(x) * w)`` over the explained output's axes."""
    xp = backend_of(w).xp
    y = model.apply(params, state, xs if len(xs) > 1 else xs[0], train=False, vjp=False)[0]
    y = y[head.index] if head.count > 1 else y
    return xp.sum(xp.reshape(y * w, (y.shape[0], -1)), axis=1)


def input_grads(model, head: Head, params, state, xs: tuple, w: Array) -> tuple:
    """The gradient of each row's selected output w.r.t. that row of each input, ``None`` for
    integer inputs (traceable)."""
    backend = backend_of(w)
    if backend.has_autodiff:
        at = [i for i, a in enumerate(xs) if is_float(a)]

        def total(floats):
            full = list(xs)
            for i, f in zip(at, floats, strict=True):
                full[i] = f
            return backend.xp.sum(scores(model, head, params, state, tuple(full), w))

        grads = backend.value_and_grad(total)(tuple(xs[i] for i in at))[1]
        got = dict(zip(at, grads, strict=True))
        return tuple(got.get(i) for i in range(len(xs)))
    one = len(xs) == 1
    backprop = model.apply(params, state, xs[0] if one else xs, train=False)[2]
    # None: no cotangent from the outputs not explained.
    dy = w if head.count == 1 else tuple(w if i == head.index else None for i in range(head.count))
    dx = backprop(dy, input_grad=True, need={})[0]  # need={}: no parameter gradients
    return tuple(d if is_float(a) else None for a, d in zip(xs, (dx,) if one else dx, strict=True))
