"""``fit``, ``evaluate`` and ``predict`` on an iterable of batches (:mod:`.stream`): each batch
converted (torch, pandas, ``__array__``, DLPack), checked and moved to the model's backend by
the model's own ``prepare_inputs``/``prepare_labels``, one call ahead in a background thread,
and run as one compiled call of the same runner as arrays (its data the batch itself).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from wframe import data, data_rows
from wframe.training.epoch_iterator import Call
from wframe.training.evaluate import evaluate_batches
from wframe.training.runner import RunSpec
from wframe.training.stream import Prefetch, Source, is_batches, prefetched, unpack
from wframe.types import Weighted

__all__ = ["BatchPlan", "EvalBatches", "fit_data", "is_batches", "options"]

_WHY = {
    "y": "give each batch as (x, y)",
    "sample_weight": "give each batch as (x, y, sample_weight)",
    "batch_size": "the batches are as the iterable gives them (a DataLoader's batch_size)",
    "validation_split": "hold out batches of your own and pass them as validation_data",
    "strategy": "a distributed strategy takes arrays",
}


def refuse(what: str, **given: Any) -> None:
    """Refuse arguments that do not apply to an iterable of batches (``None``: not given)."""
    for name, value in given.items():
        if value is not None and not (name == "validation_split" and value == 0):
            raise ValueError(
                f"{what}: {name} does not apply when x is an iterable of batches: {_WHY[name]}"
            )


def steps(value: Any, what: str) -> int | None:
    """``steps=`` of ``evaluate``/``predict`` on an iterable: ``None`` (all) or an int >= 1."""
    return data.as_int(value, f"{what}: steps", allow_none=True)


def refuse_steps(value: Any, what: str) -> None:
    """``steps=`` given with arrays: refused (arrays are used whole, in batches)."""
    if value is not None:
        raise ValueError(
            f"{what}: steps applies to x given as an iterable of batches; arrays are used "
            "whole (choose batch_size)"
        )


def options(
    *,
    steps_per_epoch,
    validation_steps,
    validation_freq,
    validation_batch_size,
    batch_size,
    shuffle,
    strategy,
) -> dict[str, Any]:
    """``fit``'s data-flow arguments checked, with ``batch_size``, ``shuffle`` and
    ``strategy`` as given (``None`` unless set: they do not apply to an iterable)."""
    return {
        "batch_size": batch_size,
        "strategy": strategy,
        "steps_per_epoch": data.as_int(steps_per_epoch, "fit: steps_per_epoch", allow_none=True),
        "validation_steps": data.as_int(validation_steps, "fit: validation_steps", allow_none=True),
        "validation_freq": data.as_int(validation_freq, "fit: validation_freq (epochs)"),
        "validation_batch_size": data.as_int(
            validation_batch_size, "fit: validation_batch_size", allow_none=True
        ),
        "shuffle": shuffle,
    }


def preparer(
    model: Any, loss: Any, what: str, *, labels: bool = True, finite: bool = True, **weights: Any
) -> Callable:
    """``prepare(batch, index) -> (x, y, n)``: a batch unpacked (:func:`~.stream.unpack`),
    its inputs and (with ``labels``) labels checked and on ``model``'s backend as
    ``model.prepare_inputs``/``prepare_labels`` make them (``finite``: NaN and inf refused;
    ``weights``: ``class_weight``, with the batch's sample weights, makes ``y``
    :class:`~wframe.types.Weighted`); errors name ``what`` and the batch."""
    class_weight = weights.get("class_weight")

    def prepare(batch: Any, index: int) -> tuple[Any, Any, int]:
        x, y, w = unpack(batch, what, index)
        try:
            x = model.prepare_inputs(x, finite=finite)
            n = data_rows.rows(x)
            if not labels:
                return model.backend.synchronize(x), None, n
            if y is None:
                raise ValueError(
                    "a batch needs labels: each must be (x, y) or (x, y, sample_weight), got x "
                    "alone"
                )
            extra = {} if w is None else {"sample_weight": data.host_array(w, "sample_weight")}
            if class_weight is not None:
                extra["class_weight"] = class_weight
            y = model.prepare_labels(y, n, loss, **extra)
        except (TypeError, ValueError) as e:
            if type(e) not in (TypeError, ValueError):
                raise
            raise type(e)(f"{what}: batch {index}: {e}") from e
        # On the device before it is handed over (made in another thread: on CuPy, another
        # thread's stream).
        return model.backend.synchronize((x, y))[0], y, n

    return prepare


def concat(parts: list, xp: Any) -> Any:
    """Prepared batches (arrays, tuples of them, :class:`Weighted` labels) joined along the
    batch axis."""
    first = parts[0]
    if len(parts) == 1:
        return first
    if isinstance(first, Weighted):
        return Weighted(
            concat([p.labels for p in parts], xp), concat([p.weights for p in parts], xp)
        )
    if isinstance(first, tuple):
        return tuple(concat([p[i] for p in parts], xp) for i in range(len(first)))
    return xp.concat(parts, axis=0)


class BatchPlan:
    """The batch plan of a ``fit`` on an iterable, :class:`~.epoch_iterator.EpochIterator`'s
    twin: each epoch's batches drawn from ``source`` (``steps_per_epoch`` of them or a whole
    pass), prepared by ``prepare`` one call ahead in a background thread, and grouped into
    compiled calls of up to ``steps_per_execution`` batches of one size (``"epoch"``: all); each
    :class:`~.epoch_iterator.Call` reads the batches it carries, in order. ``steps`` is
    ``None`` when neither ``steps_per_epoch`` nor ``len(data)`` says it."""

    def __init__(
        self,
        source: Source,
        prepare: Callable,
        backend: Any,
        *,
        steps_per_epoch: int | None,
        steps_per_execution: int | str,
        seed: int,
    ):
        self.source, self.prepare, self.backend, self.seed = source, prepare, backend, seed
        self.epoch_steps = steps_per_epoch
        self.steps = steps_per_epoch if steps_per_epoch is not None else source.length
        self.per_call = None if steps_per_execution == "epoch" else steps_per_execution
        self._orders: dict[tuple[int, int], Any] = {}
        self._prefetch: Prefetch | None = None

    @property
    def exhausted(self) -> bool:
        """Whether the data ran out (an iterator that ended before ``steps_per_epoch``)."""
        return self.source.ran_out

    def calls(self, life_epoch: int, first: int = 0) -> Iterator[Call]:
        """The calls of one epoch (the iterable's order whatever ``life_epoch``), from batch
        ``first`` on (after a restored backup: that many batches of a new pass skipped)."""
        self.close()
        batches = self.source.epoch(self.epoch_steps, first)
        self._prefetch = Prefetch(self._group(batches, first))
        try:
            yield from self._prefetch
        finally:
            self.close()

    def close(self) -> None:
        """Stop the prefetching thread (the loop's end, whatever ends it)."""
        if self._prefetch is not None:
            self._prefetch.close()
            self._prefetch = None

    def _group(self, batches: Iterator, done: int) -> Iterator[Call]:
        group: list = []
        for i, batch in enumerate(batches, start=done):
            x, y, n = self.prepare(batch, i)
            if group and n != group[0][2]:  # a batch of another size: a call of its own
                yield self._call(group, done)
                done, group = done + len(group), []
            group.append((x, y, n))
            if len(group) == self.per_call:
                yield self._call(group, done)
                done, group = done + len(group), []
        if group:
            yield self._call(group, done)

    def _call(self, group: list, done: int) -> Call:
        k, n, xp = len(group), group[0][2], self.backend.xp
        order = self._orders.get((k, n))
        if order is None:  # rows of example indices into the call's own batches, in order
            rows = np.arange(k * n, dtype=np.int32).reshape(k, n)
            order = self._orders[(k, n)] = self.backend.asarray(rows)
        x, y = concat([g[0] for g in group], xp), concat([g[1] for g in group], xp)
        return Call(RunSpec(k), order, 0, done + k, (x, y))


class EvalBatches:
    """Batches of an iterable for evaluation: ``steps`` of them or a whole pass, from a new
    pass each use (an iterator goes on where the last use stopped), prepared ahead by
    ``prepare``."""

    def __init__(self, source: Source, prepare: Callable, steps: int | None):
        self.source, self.prepare, self.steps = source, prepare, steps

    @contextlib.contextmanager
    def batches(self) -> Iterator[Iterator[tuple[Any, Any]]]:
        """``with plan.batches() as b:`` the prepared ``(x, y)`` of one use (a new pass of an
        iterable that can be iterated again, as Keras; an iterator goes on)."""
        self.source.restart()
        made = prefetched(self.source, lambda b, i: self.prepare(b, i)[:2], self.steps)
        try:
            yield made
        finally:
            made.close()


def fit_plan(model: Any, x: Any, loss: Any, options: dict, **weights: Any) -> BatchPlan:
    """The :class:`BatchPlan` of ``fit(x)``, ``x`` an iterable of batches: its first batch
    prepared here (so an unbuilt model is built from it, in the caller's thread); a generator
    or other iterator that more than one epoch would use up is refused up front.

    ``options``: ``steps_per_epoch``, ``steps_per_execution``, ``epochs``, ``initial_epoch``
    and ``seed`` (``None``: the model's).
    """
    source = Source(x, "fit: x")
    steps = options["steps_per_epoch"]
    if steps is None and not source.again and options["epochs"] - options["initial_epoch"] > 1:
        raise ValueError(
            f"fit: x is a {type(x).__name__}, used up after one pass, but {options['epochs']} "
            "epochs were asked for; pass steps_per_epoch (with a generator that does not end), "
            "an iterable that can be iterated again (a list, a DataLoader), or epochs=1"
        )
    prepare = preparer(model, loss, "fit", **weights)
    prepare(source.peek(), 0)
    seed = model.seed if options["seed"] is None else options["seed"]
    return BatchPlan(
        source,
        prepare,
        model.backend,
        steps_per_epoch=steps,
        steps_per_execution=options["steps_per_execution"],
        seed=seed,
    )


def eval_plan(model: Any, x: Any, loss: Any, steps: int | None, what: str, runs: int = 1):
    """The :class:`EvalBatches` of ``x`` (``fit``'s ``validation_data``: ``runs`` uses), its
    first batch prepared here; an iterator that more than one use would exhaust is refused."""
    source = Source(x, what)
    if steps is None and not source.again and runs > 1:
        raise ValueError(
            f"{what} is a {type(x).__name__}, used up after one pass, but validation runs "
            f"{runs} times; pass validation_steps (with a generator that does not end), an "
            "iterable that can be iterated again (a list, a DataLoader), or validation_freq"
        )
    prepare = preparer(model, loss, what.split(":")[0])
    prepare(source.peek(), 0)
    return EvalBatches(source, prepare, steps)


def evaluate_iterable(model: Any, x: Any, loss: Any, steps: int | None, **kw: Any) -> dict:
    """``evaluate(x)`` of an iterable of ``(x, y)`` batches (``steps`` of them, or all):
    the logs of :func:`~.evaluate.evaluate_batches` (``kw``: its ``tracker``)."""
    source = Source(x, "evaluate: x")
    prepare = preparer(model, loss, "evaluate", finite=False)
    prepare(source.peek(), 0)  # builds an unbuilt model, here
    with EvalBatches(source, prepare, steps).batches() as batches:
        return evaluate_batches(model, batches, loss, **kw)


def predict_iterable(model: Any, x: Any, steps: int | None) -> list:
    """``predict(x)`` of an iterable of batches (``x``, ``(x,)`` or ``(x, y, ...)``, ``y``
    ignored), ``steps`` of them or all: the outputs of each batch, in order."""
    source = Source(x, "predict: x")
    prepare = preparer(model, None, "predict", labels=False, finite=False)
    prepare(source.peek(), 0)
    fn, arrays = model.trainer.predict_fn(), model.train_state  # one step's arrays
    made = prefetched(source, prepare, steps)
    try:
        return [fn(arrays.params, arrays.state, x) for x, _, _ in made]
    finally:
        made.close()


def fit_data(
    model: Any,
    x: Any,
    y: Any,
    loss: Any,
    validation_data: Any,
    split: Any,
    weights: dict,
    fit: dict,
    flow: dict,
) -> tuple:
    """``fit``'s data, checked and on the backend (the model built): ``(x, y, validation,
    loop)``; arrays as ``model.fit_data`` gives them, an iterable ``x`` as a
    :class:`BatchPlan` (``x``, ``y`` ``None``), an iterable ``validation_data`` as an
    :class:`EvalBatches`; ``loop``: the arguments of :func:`wframe.training.fit` about them
    (``plan``, ``validation_freq``, ``validation_batch_size``). ``fit``:
    :func:`wframe.data.fit_options`'; ``flow``: :func:`options`'."""
    # A tuple is Keras' (x_val, y_val[, sample_weight]), even of dicts or lists of arrays.
    val_batches = not isinstance(validation_data, tuple) and is_batches(validation_data)
    if val_batches and flow["validation_batch_size"] is not None:
        raise ValueError(
            "fit: validation_batch_size applies to validation arrays; an iterable's batches "
            "are as it gives them"
        )
    if not val_batches and flow["validation_steps"] is not None:
        raise ValueError(
            "fit: validation_steps applies to validation_data given as an iterable of batches; "
            "arrays are evaluated whole (set validation_batch_size)"
        )
    plan = None
    if is_batches(x):
        refuse("fit", y=y, sample_weight=weights["sample_weight"], batch_size=flow["batch_size"])
        refuse("fit", validation_split=split, strategy=flow["strategy"])
        if flow["shuffle"]:
            warnings.warn(
                "fit: shuffle=True does not apply to an iterable of batches, taken in its own "
                "order; shuffle in the iterable (e.g. DataLoader(shuffle=True))",
                stacklevel=3,
            )
        plan = fit_plan(model, x, loss, {**fit, **flow}, class_weight=weights["class_weight"])
        given = validation_data is not None and not val_batches
        validation = _arrays(model, validation_data, loss) if given else None
        x = y = None
    elif flow["steps_per_epoch"] is not None:
        raise ValueError(
            "fit: steps_per_epoch applies to x given as an iterable of batches; with arrays "
            "an epoch is every example once (choose batch_size, or pass a generator)"
        )
    else:
        arrays_val = None if val_batches else validation_data
        split = 0 if val_batches else split  # validation_data wins over it, as in Keras
        x, y, validation = model.fit_data(x, y, loss, arrays_val, split, weights)
    if val_batches:
        epochs = range(fit["initial_epoch"], fit["epochs"])
        runs = sum((e + 1) % flow["validation_freq"] == 0 for e in epochs)
        what = "fit: validation_data"
        validation = eval_plan(model, validation_data, loss, flow["validation_steps"], what, runs)
    loop = {k: flow[k] for k in ("validation_freq", "validation_batch_size")}
    return x, y, validation, {**loop, "plan": plan}


def _arrays(model: Any, validation_data: Any, loss: Any) -> tuple:
    """``(x_val, y_val)`` of validation arrays ``(x, y)`` or ``(x, y, sample_weight)``,
    checked and on the backend (as ``model.fit_data`` makes them)."""
    if isinstance(validation_data, (tuple, list)) and len(validation_data) == 3:
        x, y, w = validation_data
    else:
        (x, y), w = data.pair(validation_data, "fit: validation_data"), None
    x_val = model.prepare_inputs(x, "x_val", finite=True)
    data_rows.require_examples(x_val, "fit: validation_data", "pass examples, or leave it out")
    extra = {} if w is None else {"sample_weight": w}
    return x_val, model.prepare_labels(y, data_rows.rows(x_val), loss, "y_val", **extra)
