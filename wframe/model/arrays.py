"""What a model holds: its params, state, optimizer state, pruning masks and frozen set, on one
backend, with the step and epoch counters that match them, and how they are set, checked,
moved and frozen.

:class:`Holder` is the half of :class:`wframe.Model` that holds arrays; the other half
(``compile``/``fit``/``predict``/``evaluate``, in :mod:`wframe.model.base`) runs them. Every
array and both counters sit in one immutable :class:`Snapshot`, replaced by one assignment: a
thread reading the model while another trains it sees one complete step, never a mix. It never
changes the process's default backend: its arrays know theirs.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from wframe import assigned, data, precision
from wframe import losses as losses_mod
from wframe.backends import Backend, get_backend, resolve, use_backend
from wframe.callbacks import History
from wframe.layers.base import Layer
from wframe.model.copying import Copying
from wframe.model.trainable import Trainable
from wframe.optimizers.checks import check_optimizer
from wframe.training import Trainer, trainer_for
from wframe.tree import flatten, reorder, tree_leaves, tree_map
from wframe.types import Array, Params, Shape, State, TrainState


class Snapshot(NamedTuple):
    """A model at one instant: the arrays of one complete train step and its life counters
    (completed optimizer steps and epochs) that match them.

    Attributes:
      arrays: the params, state, optimizer state, masks and loss scale (a :class:`TrainState`).
      steps: optimizer steps completed.
      epochs: epochs completed.
    """

    arrays: TrainState
    steps: int = 0
    epochs: int = 0


class Holder(Copying, Trainable, Layer):
    """Arrays, counters and the compiled functions of a model (the base of :class:`Model`).

    A subclass is also a layer class whose ``init``/``forward`` follow its structure (a chain,
    a graph): :meth:`build` runs that ``init`` once, and a built model nested inside another
    starts from its own current params.

    Args:
      seed: the integer (>= 0) that every random draw of the model derives from.
      dtype: the variables' dtype or precision policy (:func:`wframe.precision.get`).
    """

    def __init__(self, *, seed: int = 0, dtype: Any = "float32"):
        what = type(self).__name__
        self.seed = data.as_int(seed, f"{what}: seed", minimum=0)
        # ``dtype`` stays the variables' dtype (files, checkpoints, data); the policy adds the
        # compute dtype of the mixed policies.
        self.policy = precision.get(dtype)
        self.dtype = self.policy.param_dtype
        self.loss: losses_mod.Loss = losses_mod.get("softmax_cross_entropy")
        self.optimizer: Any = None
        self.compiled_metrics: Any = None  # compile(metrics=...) as given (None: the loss's)
        self.stop_training = False
        self.history: History | None = None
        self._optimizer_name: str | None = None
        self._now: Snapshot | None = None  # None until built
        self._frozen: frozenset[str] = frozenset()
        self._backend: Backend | None = None
        self._shapes: tuple[Shape, Shape] | None = None
        self._trainer: Trainer | None = None
        self._lock = threading.RLock()
        self._running: tuple[str, int] | None = None  # (call, thread id) of a running fit
        # (epoch, batches done in it) where a restored backup stopped: fit goes on from there.
        self._resume_at: tuple[int, int] | None = None

    # A model is a mutable object: equal only to itself (the layers compare by value).
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    # ----------------------------------------------------------------- exclusive calls
    @contextlib.contextmanager
    def exclusive(self, call: str) -> Iterator[None]:
        """Run ``call`` (``"fit"``) as the model's only running call: another ``fit``,
        ``build``, ``to_backend``, ``load_weights`` or ``load_checkpoint`` meanwhile raises
        ``RuntimeError`` (but for loads from ``call``'s own thread, i.e. its callbacks)."""
        with self._lock:
            self.refuse_while_running(call)
            self._running = (call, threading.get_ident())
        try:
            yield
        finally:
            self._running = None

    def refuse_while_running(self, call: str, *, own_thread_ok: bool = False) -> None:
        """Raise ``RuntimeError`` if a ``fit`` is running on this model (from another thread,
        or from any thread unless ``own_thread_ok``)."""
        running = self._running
        if running is None or (own_thread_ok and running[1] == threading.get_ident()):
            return
        where = "this thread" if running[1] == threading.get_ident() else "another thread"
        raise RuntimeError(
            f"{self.label}: cannot {call} while {running[0]}() is running on this model (in "
            f"{where}); wait until it returns, or call it on a copy "
            "(wf.load_model after model.save_weights) instead"
        )

    # ----------------------------------------------------------------- building
    def build(self, input_shape: Shape) -> Holder:
        """Create params for inputs of ``input_shape`` such as ``(None, 64)``.

        The params live on the active backend; later calls use that backend whatever is active
        then (``to_backend`` moves them). On a built model this is a no-op when the shape is
        the one it was built for and a ``ValueError`` otherwise: it never re-initialises.
        """
        shape = self.build_shape(input_shape)
        if self._shapes is not None:
            if shape != self._shapes[0]:
                raise ValueError(
                    f"{self.label} is built for inputs {self._shapes[0]}, got build({shape}); "
                    "a built model keeps its weights: make a new model for another input shape"
                )
            return self
        self.refuse_while_running("build", own_thread_ok=True)  # fit builds an unbuilt model
        backend = self._backend or get_backend()
        precision.check_backend(self.policy, backend)
        with use_backend(backend):  # the initializers draw on the host (same on every backend)
            params, state, out = self.init(self.seed, shape, dtype=self.dtype)
        move = assigned.mover(backend)
        arrays = TrainState(tree_map(move, params), tree_map(move, state), None)
        self._backend, self._shapes = backend, (shape, out)
        self._now = Snapshot(arrays)
        self._frozen, self._trainer = frozenset(), None
        return self

    def rebuild(self, *, keep_built: bool = True) -> Holder:
        """Build again for the same input shape after the structure changed (``Sequential``'s
        ``add``/``pop``). Every param and state array still there (same flat name, shape and
        dtype) is kept as it is, the others are drawn from the seed; the frozen set and the
        pruning masks keep the names still there; the counters stay; the optimizer state
        restarts, as after a Keras recompile (its structure changed). A refused build changes
        nothing; ``keep_built=False`` (a chain left without layers) leaves the model unbuilt.
        """
        if self._now is None:
            return self
        self.refuse_while_running("change the layers")
        old, shapes, frozen = self._now, self._shapes, self._frozen
        self._now, self._shapes, self._trainer = None, None, None
        if not keep_built:
            return self
        try:
            self.build(shapes[0])
        except BaseException:
            self._now, self._shapes, self._frozen = old, shapes, frozen
            raise
        params = _kept(self.params, old.arrays.params)
        kept = dict(flatten(params))
        masks = {
            k: m
            for k, m in (old.arrays.masks or {}).items()
            if k in kept and tuple(kept[k].shape) == tuple(m.shape)
        }
        arrays = TrainState(
            params, _kept(self.state, old.arrays.state), None, masks or None, old.arrays.loss_scale
        )
        self._now = Snapshot(arrays, old.steps, old.epochs)
        self._frozen = frozen & kept.keys()
        return self

    def build_shape(self, input_shape: Any) -> Any:
        """``input_shape`` checked and with ``None`` for the batch axis (a subclass of several
        inputs takes a tuple of shapes)."""
        return data.input_shape(input_shape)

    def init(self, key, in_shape, *, dtype="float32"):
        """As a layer inside another model: this model's current params if it is built."""
        if not self.built:
            return super().init(key, in_shape, dtype=dtype)
        try:
            same = self.build_shape(in_shape) == self._shapes[0]
        except (TypeError, ValueError):
            same = False
        if not same or dtype != self.dtype:
            raise ValueError(
                f"{self.label} was built for inputs {self._shapes[0]} in {self.dtype}, but is "
                f"used on inputs {tuple(in_shape)} in {dtype}; nest an unbuilt model instead"
            )
        xp = self.backend.xp
        own = tree_map(lambda a: xp.asarray(a, copy=True), (self.params, self.state))
        return (*own, self._shapes[1])

    def call_args(self, *args: Any, training: bool | None = None, **kwargs: Any) -> tuple:
        """A model called as a layer takes Keras' ``training=False``: it then runs in
        inference mode inside the graph, even while that trains (dropout off, BatchNorm on
        its moving statistics: the transfer-learning idiom ``base(inputs, training=False)``);
        gradients still flow through it."""
        inputs, options = super().call_args(*args, **kwargs)
        if training is not None and not isinstance(training, bool):
            raise TypeError(f"{self.label}: training must be True, False or None, got {training!r}")
        return inputs, ({**options, "training": False} if training is False else options)

    def forward(self, params, state, x, *, train=False, key=None, vjp=True, training=None):
        train = train and training is not False
        # Half-precision x: nested in a mixed model, which has cast everything already.
        first = x[0] if isinstance(x, tuple) else x
        if not self.policy.mixed or precision.is_half(first.dtype):
            return super().forward(params, state, x, train=train, key=key, vjp=vjp)
        return precision.mixed_forward(
            self.policy, super().forward, params, state, x, train=train, key=key, vjp=vjp
        )

    @property
    def plan_dtype(self) -> str:
        return self.dtype

    def plan(self, xp, in_shape, train=True):
        # A mixed policy casts around its layers: its forward (Layer's default plan) does.
        if self.policy.mixed:
            return Layer.plan(self, xp, in_shape, train)
        return super().plan(xp, in_shape, train)

    def _counters(self) -> tuple[int, int]:
        return (self._now.steps, self._now.epochs) if self._now is not None else (0, 0)

    @property
    def built(self) -> bool:
        return self._now is not None

    def require_built(self, what: str = "this") -> None:
        """Raise a ``RuntimeError`` that says how to build the model if it has no params."""
        if self._now is None:
            raise RuntimeError(
                f"{self.label} has no params yet, so {what} cannot run: call "
                "model.build((None, features)) or pass it data (fit/predict build it)"
            )

    @property
    def input_shape(self) -> Shape:
        """The input shape the model was built for, ``(None, features...)``."""
        self.require_built("input_shape")
        return self._shapes[0]

    @property
    def output_shape(self) -> Shape:
        """The model's output shape, ``(None, outputs...)``."""
        self.require_built("output_shape")
        return self._shapes[1]

    @property
    def backend(self) -> Backend:
        """The backend the model's arrays live on."""
        self.require_built("backend")
        return self._backend

    @property
    def trainer(self) -> Trainer:
        """The compiled functions of the model's current build, backend and frozen set (made
        on first use; replaced when any of those change)."""
        self.require_built("trainer")
        trainer = self._trainer
        if trainer is None:
            with self._lock:
                trainer = self._trainer = self._trainer or trainer_for(self)
        return trainer

    @property
    def compute_dtype(self) -> str:
        """The dtype layers compute in: ``dtype`` but for the mixed policies (``"bfloat16"``,
        ``"float16"``), whose params, optimizer state and outputs stay float32."""
        return self.policy.compute_dtype

    # ----------------------------------------------------------------- the snapshot
    @property
    def train_state(self) -> TrainState:
        """Everything a train step updates, as one :class:`~wframe.TrainState` of one step."""
        self.require_built("train_state")
        return self._now.arrays

    @property
    def steps(self) -> int:
        """Completed optimizer steps over the model's life (they pick the dropout masks)."""
        return self._counters()[0]

    @property
    def epochs(self) -> int:
        """Completed epochs over the model's life (epoch ``e`` always shuffles the same way)."""
        return self._counters()[1]

    def commit(self, arrays: TrainState, *, steps: int, epochs: int) -> None:
        """Make ``arrays`` (this model's structure, on its backend) and the counters that match
        them the model's, in one assignment. The fit loop and checkpoints use it; the arrays
        must not be donated or updated in place afterwards (keep a copy for that)."""
        self.require_built("commit")
        old = self._now.arrays
        arrays = TrainState(
            reorder(arrays.params, old.params),
            reorder(arrays.state, old.state),
            reorder(arrays.opt_state, old.opt_state),
            arrays.masks,
            arrays.loss_scale,
        )
        self._now = Snapshot(arrays, int(steps), int(epochs))

    def _set(self, **arrays: Any) -> None:
        self._now = self._now._replace(arrays=self._now.arrays._replace(**arrays))

    @property
    def params(self) -> Params:
        """``{"dense_0": {"W": ..., "b": ...}, ...}``: arrays of the model's backend."""
        return self.train_state.params

    @params.setter
    def params(self, new: Params) -> None:
        self._set(params=self._validated(new, self.params, "params"))

    @property
    def state(self) -> State:
        """Non-trainable layer state (e.g. BatchNorm running statistics)."""
        return self.train_state.state

    @state.setter
    def state(self, new: State) -> None:
        self._set(state=self._validated(new, self.state, "state"))

    @property
    def opt_state(self) -> Any:
        """The optimizer's state (``None`` before the first ``fit``; reset by ``freeze``)."""
        return None if self._now is None else self._now.arrays.opt_state

    @opt_state.setter
    def opt_state(self, new: Any) -> None:
        if self._now is None:  # nothing to hold it yet (compile before build resets it)
            if new is not None:
                self.require_built("opt_state")
            return
        self._set(opt_state=new)

    @property
    def masks(self) -> dict[str, Array] | None:
        """Pruning masks ``{"dense_0/W": array of 0 and 1}`` (``None``: none): training keeps
        the weights where a mask is 0 at exactly zero (see :mod:`wframe.pruning`)."""
        return None if self._now is None else self._now.arrays.masks

    @masks.setter
    def masks(self, new: dict[str, Any] | None) -> None:
        self.require_built("masks")
        self._set(masks=assigned.check_masks(new, self.params, self._backend) or None)

    @property
    def loss_scale(self) -> precision.LossScaleState | None:
        """The dynamic loss scale of a ``mixed_float16`` model (``None`` before its first
        ``fit`` and for the other policies): ``float(model.loss_scale.scale)``."""
        return None if self._now is None else self._now.arrays.loss_scale

    @loss_scale.setter
    def loss_scale(self, new: precision.LossScaleState | None) -> None:
        self.require_built("loss_scale")
        self._set(loss_scale=new)

    @property
    def optimizer_name(self) -> str | None:
        """The name the optimizer was given by (``"adam"``), ``None`` for an object."""
        return self._optimizer_name

    @property
    def resume_at(self) -> tuple[int, int] | None:
        """``(epoch, batches done in it)`` where a restored backup stopped: the next ``fit``
        starts there (then this is ``None`` again). Set by
        :class:`~wframe.callbacks.BackupAndRestore`."""
        return self._resume_at

    @resume_at.setter
    def resume_at(self, where: tuple[int, int] | None) -> None:
        if where is not None:
            epoch, batch = (data.as_int(v, "resume_at", minimum=0) for v in where)
            where = (epoch, batch)
        self._resume_at = where

    def _validated(self, new: Any, old: Any, what: str) -> Any:
        return reorder(assigned.check_tree(new, old, what, self._backend), old)

    # ----------------------------------------------------------------- moving
    def to_backend(self, name: str | Backend) -> Holder:
        """Move params, state and optimizer state to backend ``name``, keeping their dtypes.

        Changes no default: only this model moves. Raises before moving anything if the target
        cannot hold the model's dtype or run its optimizer.
        """
        self.refuse_while_running("to_backend")
        target = resolve(name)
        if self.built and target is not self._backend:
            target.asarray(np.zeros(1, self.dtype), dtype=self.dtype)  # raises if it lacks it
            precision.check_backend(self.policy, target)
            if self.optimizer is not None:
                check_optimizer(self.optimizer, target, moving=True)
            self._now = self._now._replace(
                arrays=tree_map(assigned.mover(target), self._now.arrays)
            )
        self._backend, self._trainer = target, None
        return self

    # ----------------------------------------------------------------- reporting
    def count_params(self) -> int:
        """The number of values of every weight, as Keras counts them: params (frozen ones
        included) and state (BatchNorm's moving statistics)."""
        return sum(math.prod(a.shape) for a in tree_leaves((self.params, self.state)))


def _kept(new: dict, old: dict) -> dict:
    """``new`` with each leaf that ``old`` holds at the same path, shape and dtype taken from
    ``old``."""
    out = {}
    for k, v in new.items():
        o = old.get(k)
        if isinstance(v, dict):
            out[k] = _kept(v, o) if isinstance(o, dict) else v
            continue
        same = hasattr(o, "shape") and (tuple(o.shape), o.dtype) == (tuple(v.shape), v.dtype)
        out[k] = o if same else v
    return out
