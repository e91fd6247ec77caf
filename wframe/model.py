"""The trainable model: a chain of layers plus its params, state and optimizer state.

``wf.Sequential`` is a :class:`wframe.layers.Sequential` (so it nests inside other chains) that
also holds arrays. It runs no loop itself: data checks live in :mod:`wframe.data`, the loop in
:mod:`wframe.training`, callbacks in :mod:`wframe.callbacks`, the table in :mod:`wframe.summary`.
It never changes the process's default backend: its arrays know theirs.
"""

from __future__ import annotations

import copy
import math
import threading
from typing import Any

import numpy as np

from wframe import clipping, data, fitting, training
from wframe import losses as losses_mod
from wframe import optimizers as optimizers_mod
from wframe.backends import Backend, _resolve, get_backend, use_backend
from wframe.callbacks import History
from wframe.layers import combinators
from wframe.random import array_key
from wframe.summary import layer_rows
from wframe.summary import summary as _summary
from wframe.tree import reorder, tree_leaves, tree_map
from wframe.types import Array, Grads, Params, Shape, State


class Sequential(combinators.Sequential):
    """A chain of layers that trains: Keras' ``compile``/``fit``/``evaluate``/``predict``.

    Args:
      layers: :class:`~wframe.layers.Layer` instances (chains, residual blocks and other models
        included); unnamed ones are named ``dense_0``, ``dense_1``, ... per kind.
      seed: int seed of the initial weights; the same seed gives bit-identical weights on every
        backend.
      dtype: floating dtype of params and inputs, ``"float32"`` (default) or ``"float64"``.
      name: the model's name when it is nested inside another chain.
    """

    def __init__(self, layers=(), *, seed: int = 0, dtype: str = "float32", name=None):
        super().__init__(layers, name=name)
        self.seed = data.as_int(seed, "Sequential: seed", minimum=0)
        self.dtype = data.model_dtype(dtype)
        self.loss: losses_mod.Loss = losses_mod.get("softmax_cross_entropy")
        self.optimizer: Any = None
        self.opt_state: Any = None
        self.stop_training = False
        self.history: History | None = None
        self._optimizer_spec: str | None = None
        self._params: Params | None = None
        self._state: State = {}
        self._masks: dict[str, Array] | None = None
        self._backend: Backend | None = None
        self._shapes: tuple[Shape, Shape] | None = None
        self._compiled: dict[tuple, Any] = {}
        self._lock = threading.Lock()
        # Completed epochs and steps over the model's life: epoch e always shuffles the same
        # way and step s always draws the same dropout masks, however fit calls are split.
        self._epochs = self._steps = 0

    # A model is a mutable object: equal only to itself (the layers compare by value).
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def named(self, name):
        if name == self.name:
            return self
        clone = copy.copy(self)  # a snapshot that shares the arrays, not the compiled state
        object.__setattr__(clone, "name", name)
        clone._compiled, clone._lock = {}, threading.Lock()
        return clone

    # ----------------------------------------------------------------- building and params
    def build(self, input_shape: Shape) -> Sequential:
        """Create params for inputs of ``input_shape`` such as ``(None, 64)``.

        The params live on the active backend; later calls use that backend whatever is active
        then (``to_backend`` moves them).
        """
        shape = data.input_shape(input_shape)
        backend = self._backend or get_backend()
        with use_backend(backend):
            params, state, out = combinators.Sequential.init(self, self.seed, shape,
                                                             dtype=self.dtype)
        move = data.mover(backend)
        self._params, self._state = tree_map(move, params), tree_map(move, state)
        self._backend, self._shapes = backend, (shape, tuple(out))
        self._compiled = {}
        self.opt_state = self._masks = None
        return self

    def init(self, key, in_shape, *, dtype="float32"):
        """As a layer inside another chain: this model's current params if it is built."""
        if not self.built:
            return super().init(key, in_shape, dtype=dtype)
        if tuple(in_shape[1:]) != self._shapes[0][1:] or dtype != self.dtype:
            raise ValueError(
                f"{self.label} was built for inputs {self._shapes[0]} in {self.dtype}, but is "
                f"used on inputs {tuple(in_shape)} in {dtype}; nest an unbuilt model instead"
            )
        own = tree_map(lambda a: self.backend.xp.asarray(a, copy=True), (self._params, self._state))
        return (*own, self._shapes[1])

    @property
    def built(self) -> bool:
        return self._params is not None

    @property
    def backend(self) -> Backend:
        """The backend the model's arrays live on."""
        self._require_built()
        return self._backend

    @property
    def params(self) -> Params:
        """``{"dense_0": {"W": ..., "b": ...}, ...}``: arrays of the model's backend."""
        self._require_built()
        return self._params

    @params.setter
    def params(self, new: Params) -> None:
        self._require_built()
        self._params = self._validated(new, self._params, "params")

    @property
    def state(self) -> State:
        """Non-trainable layer state (e.g. BatchNorm running statistics)."""
        self._require_built()
        return self._state

    @state.setter
    def state(self, new: State) -> None:
        self._require_built()
        self._state = self._validated(new, self._state, "state")

    @property
    def masks(self) -> dict[str, Array] | None:
        """Pruning masks ``{"dense_0/W": array of 0 and 1}`` (``None``: none): training keeps
        the weights where a mask is 0 at exactly zero (see :mod:`wframe.pruning`)."""
        return self._masks

    @masks.setter
    def masks(self, new: dict[str, Any] | None) -> None:
        self._require_built()
        self._masks = data.check_masks(new, self._params, self._backend) or None

    def _validated(self, new: Any, old: Any, what: str) -> Any:
        return reorder(data.check_tree(new, old, what, self._backend), old)

    def _require_built(self) -> None:
        if self._params is None:
            raise RuntimeError(
                "the model has no params yet: call model.build((None, features)) or pass it data"
            )

    def _publish(self, ts: training.TrainState) -> None:
        """Expose a train state's arrays as the model's, in the model's key order."""
        self._params = reorder(ts.params, self._params)
        self._state = reorder(ts.state, self._state)
        self.opt_state = reorder(ts.opt_state, self.opt_state)
        self._masks = ts.masks

    def to_backend(self, name: str | Backend) -> Sequential:
        """Move params, state and optimizer state to backend ``name``, keeping their dtypes.

        Changes no default: only this model moves. Raises before moving anything if the target
        cannot hold the model's dtype or run its optimizer.
        """
        target = _resolve(name)
        if self.built and target is not self._backend:
            target.asarray(np.zeros(1, self.dtype), dtype=self.dtype)  # raises if it lacks it
            if self.optimizer is not None:
                training.check_optimizer(self.optimizer, target, moving=True)
            move = data.mover(target)
            self._params, self._state = tree_map(move, self._params), tree_map(move, self._state)
            self.opt_state = tree_map(move, self.opt_state)
            self._masks = tree_map(move, self._masks)
        self._backend = target
        self._compiled = {}
        return self

    # ----------------------------------------------------------------- compiled functions
    def _compiled_fn(self, kind: str, *args: Any) -> Any:
        key = (kind, *args)
        fn = self._compiled.get(key)
        if fn is not None:
            return fn
        with self._lock:
            if kind == "run":  # only the current loss and optimizer's steps are kept
                stale = [k for k in self._compiled if k[0] == "run" and k[1:3] != args[:2]]
                for k in stale:
                    del self._compiled[k]
                fn = training.make_runner(self, *args[:-1], clip=args[-1])
            elif kind == "eval":
                fn = training.make_eval_step(self, args[0], metrics=args[1])
            elif kind == "grad":
                fn = self.backend.jit(training.make_grad_fn(self, args[0]))
            else:
                fn = self.backend.jit(
                    lambda p, s, x: self.apply(p, s, x, train=False, vjp=False)[0]
                )
            self._compiled[key] = fn
        return fn

    def _cached(self, key: tuple, make: Any) -> Any:
        """``make()`` once per build and backend (the cache ``to_backend`` clears)."""
        if key not in self._compiled:
            self._compiled[key] = make()
        return self._compiled[key]

    def _widest(self) -> int:
        """Elements per example of the widest activation (sizes the default inference batch)."""
        shapes = lambda: [self._shapes[1], *(row[2] for row in layer_rows(self))]  # noqa: E731
        return self._cached(("widest",), lambda: max(math.prod(s[1:]) for s in shapes()))

    def _inputs(self, x: Any, what: str = "x", *, finite: bool = False) -> Array:
        if not self.built:
            shape = data.shape_of(x, what)
            if len(shape) < 2:
                raise ValueError(
                    f"{what} must have a batch axis and at least one feature axis, got shape "
                    f"{shape}; for one feature per example use {what}[:, None]"
                )
            self.build((None, *shape[1:]))
        return data.inputs(x, self._backend, self.dtype, what, finite=finite)

    def _labels(self, y: Any, n: int, loss: losses_mod.Loss, what: str = "y") -> Array:
        return data.labels(y, n, self._shapes[1], loss, self._backend, self.dtype, what)

    # ----------------------------------------------------------------- Keras-like API
    def compile(self, optimizer: Any = "adam", loss: Any = "softmax_cross_entropy") -> Sequential:
        """Set the optimizer and loss that ``fit`` and ``evaluate`` use by default."""
        loss = losses_mod.get(loss)
        choice = self._choose_optimizer(optimizer, force=True)
        self.loss = loss
        self.optimizer, self._optimizer_spec, self.opt_state = choice
        return self

    def _choose_optimizer(self, optimizer: Any, *, force: bool = False) -> tuple:
        """``(optimizer, spec, opt_state)`` that ``optimizer`` asks for; commits nothing."""
        current = (self.optimizer, self._optimizer_spec, self.opt_state)
        if optimizer is None and self.optimizer is not None:
            choice = current
        elif isinstance(optimizer or "adam", str):
            name = (optimizer or "adam").lower()
            # The same named optimizer keeps its state across fit calls.
            same = name == self._optimizer_spec and not force
            choice = current if same else (optimizers_mod.get(name), name, None)
        elif optimizer is not self.optimizer or force:
            choice = (optimizers_mod.get(optimizer), None, None)
        else:
            choice = current
        if self.built:
            training.check_optimizer(choice[0], self._backend)
        return choice

    def predict(self, x: Any, *, batch_size: int | None = None, verbose: int = 0) -> Array:
        """Outputs in inference mode, computed in batches, as an array of the model's backend.

        Args:
          x: inputs (NumPy or the model's backend); NumPy input moves one batch at a time.
          batch_size: rows per batch; default: as many as keep activations near 4M elements.
          verbose: accepted as in Keras; nothing is printed.
        """
        size = data.as_int(batch_size, "predict: batch_size", allow_none=True)
        n = data.shape_of(x, "x")[0]
        if not self.built:
            self._inputs(x[:1] if hasattr(x, "shape") else np.asarray(x)[:1])
        xp = self.backend.xp
        size = size or data.default_batch(self._widest(), n)
        fn = self._compiled_fn("predict")
        parts = [
            fn(self._params, self._state, self._inputs(x[i : i + size]))
            for i in range(0, max(n, 1), size)
        ]
        return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)

    __call__ = predict

    def value_and_grad(
        self, x: Any, y: Any, *, loss: Any = None, key: Any = None
    ) -> tuple[Array, Grads]:
        """Mean loss on ``(x, y)`` in training mode (plus the layers' regularization penalty)
        and its gradient w.r.t. every param.

        Args:
          x, y: inputs and labels.
          loss: name or :class:`~wframe.losses.Loss`; default: the compiled one.
          key: array key (:func:`wframe.random.array_key`) for stochastic layers such as
            Dropout; default: the key the next ``fit`` step would use.

        Returns:
          ``(loss, grads)``, ``grads`` a dict shaped (and ordered) like ``params``.
        """
        loss = losses_mod.get(loss) if loss is not None else self.loss
        x = self._inputs(x)
        y = self._labels(y, x.shape[0], loss)
        if key is None and self.uses_key:
            key = array_key(self.seed, self._steps, self.backend)
        fn = self._compiled_fn("grad", loss)
        value, grads, _, _, penalty = fn(self._params, self._state, x, y, key)
        return value + penalty, reorder(grads, self._params)

    def evaluate(
        self, x: Any, y: Any, *, batch_size: int | None = None, loss: Any = None,
        verbose: int = 0,
    ) -> dict[str, float]:
        """Mean loss (and accuracy for classification losses) in inference mode, batched.

        Returns a dict (Keras' ``return_dict=True``); ``verbose`` is accepted and prints nothing.
        """
        size = data.as_int(batch_size, "evaluate: batch_size", allow_none=True)
        loss = losses_mod.get(loss) if loss is not None else self.loss
        x = self._inputs(x)
        size = size or data.default_batch(self._widest(), x.shape[0])
        return self._evaluate(x, self._labels(y, x.shape[0], loss), loss, size)

    def _evaluate(self, x: Array, y: Array, loss: losses_mod.Loss, size: int, params=None,
                  state=None) -> dict[str, float]:
        """:meth:`evaluate` on inputs and labels already checked and on the backend."""
        step = self._compiled_fn("eval", loss, (loss.metric,) if loss.metric else ())
        params = self._params if params is None else params
        state = self._state if state is None else state
        n = x.shape[0]
        totals = None
        for i in range(0, n, size):
            logs = step(params, state, x[i : i + size], y[i : i + size])
            part = {k: v * min(size, n - i) for k, v in logs.items()}
            totals = part if totals is None else {k: totals[k] + part[k] for k in part}
        names = ("loss", loss.metric) if loss.metric else ("loss",)  # JAX returns sorted keys
        return {k: float(totals[k]) / n for k in names} if totals else {}

    def fit(
        self,
        x: Any,
        y: Any,
        *,
        epochs: int = 1,
        batch_size: int = 32,
        optimizer: Any = None,
        loss: Any = None,
        validation_data: tuple[Any, Any] | None = None,
        validation_split: float = 0.0,
        shuffle: bool = True,
        seed: int | None = None,
        verbose: int = 1,
        callbacks: list | None = None,
        initial_epoch: int = 0,
        steps_per_execution: int | str = 1,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
    ) -> History:
        """Train with mini-batches; returns the :class:`~wframe.callbacks.History`.

        Args:
          x, y: training inputs and labels (NumPy arrays or arrays of the model's backend);
            checked (NaN, inf, overflow, label range) and moved to the backend once.
          epochs: train until this epoch index (Keras: ``epochs - initial_epoch`` epochs run).
          batch_size: examples per step; the last partial batch is kept.
          optimizer: name or ``(init, update)`` transformation; default: the compiled one or
            ``"adam"``. Its state carries over to the next ``fit`` while the optimizer is the
            same object (or the same name).
          loss: name or :class:`~wframe.losses.Loss`; default: the compiled one
            (``softmax_cross_entropy``).
          validation_data: ``(x_val, y_val)`` evaluated after each epoch (``val_`` logs).
          validation_split: a fraction in [0, 1): the last examples of ``x`` and ``y`` (before
            any shuffle, as Keras) are held out as validation data instead; ignored when
            ``validation_data`` is given.
          shuffle: reshuffle each epoch; epoch ``e`` of the model's life always gets the same
            permutation (from ``seed``, default the model seed).
          seed: seed of the shuffles and dropout masks.
          verbose: 0 silent, 1 a progress bar (one line per epoch when not on a terminal).
          callbacks: :class:`~wframe.callbacks.Callback` instances.
          initial_epoch: the epoch index to start at (for the logs and callbacks).
          steps_per_execution: train steps per compiled call (a ``lax.scan`` on JAX), or
            ``"epoch"`` for the whole epoch.
          clipnorm, clipvalue, global_clipnorm: clip each parameter's gradient to this L2 norm,
            each element to ``[-v, v]``, or all gradients together to this global norm (Keras'
            names; at most one); the pre-clip global norm is logged as ``grad_norm``.

        The logs hold ``loss`` (the data loss), the loss's metric, and ``penalty`` (the
        layers' regularizers, added to the loss that is differentiated) when there are any.
        """
        options = data.fit_options(
            epochs=epochs, batch_size=batch_size, initial_epoch=initial_epoch, seed=seed,
            steps_per_execution=steps_per_execution, verbose=verbose, shuffle=shuffle,
            callbacks=callbacks,
        )  # fmt: skip
        clip = clipping.options(clipnorm, clipvalue, global_clipnorm)
        # Everything is checked before anything is committed: a refused fit changes nothing.
        loss = losses_mod.get(loss) if loss is not None else self.loss
        validation = None if validation_data is None else data.pair(
            validation_data, "fit: validation_data"
        )
        if validation is None and validation_split:
            x, y, validation = data.split(x, y, validation_split)
        x = self._inputs(x, finite=True)
        n = x.shape[0]
        if n == 0:
            raise ValueError(f"fit: x has no examples (shape {tuple(x.shape)})")
        y = self._labels(y, n, loss)
        if validation is not None:  # checked and moved once, not at every epoch
            x_val = self._inputs(validation[0], "x_val", finite=True)
            validation = (x_val, self._labels(validation[1], x_val.shape[0], loss, "y_val"))
        tx, spec, opt_state = self._choose_optimizer(optimizer)  # built here: checked
        if opt_state is None:
            opt_state = tx.init(self._params)
            training.check_opt_state(opt_state, self.backend)
        self.loss, self.optimizer, self._optimizer_spec, self.opt_state = loss, tx, spec, opt_state
        training.warn_softmax_with_logits(self, self.loss)
        self.history = fitting.fit(self, x, y, validation=validation, clip=clip, **options)
        return self.history

    # ----------------------------------------------------------------- reporting
    def count_params(self) -> int:
        """Total number of parameters."""
        return sum(math.prod(a.shape) for a in tree_leaves(self.params))

    def summary(self, print_fn=print) -> str:
        """Print (and return) a table of layers, output shapes and parameter counts."""
        self._require_built()
        return _summary(self, print_fn)
