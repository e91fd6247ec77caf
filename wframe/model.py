"""The trainable model: a chain of layers plus its params, state and optimizer state.

``wf.Sequential`` is a :class:`wframe.layers.Sequential` (so it nests inside other chains) that
also holds arrays (:class:`wframe.model_arrays.Holder`: params, state, masks, freezing, files).
This half is Keras' API over them. It runs no loop itself: data checks live in
:mod:`wframe.data`, the steps in :mod:`wframe.training`, the loop in :mod:`wframe.fitting`,
callbacks in :mod:`wframe.callbacks`, the table in :mod:`wframe.summary`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from wframe import clipping, data, fitting, training
from wframe import losses as losses_mod
from wframe import optimizers as optimizers_mod
from wframe.callbacks import History
from wframe.model_arrays import Holder
from wframe.random import array_key
from wframe.summary import layer_rows
from wframe.tree import reorder
from wframe.types import Array, Grads


class Sequential(Holder):
    """A chain of layers that trains: Keras' ``compile``/``fit``/``evaluate``/``predict``.

    Args:
      layers: :class:`~wframe.layers.Layer` instances (chains, residual blocks and other models
        included); unnamed ones are named ``dense_0``, ``dense_1``, ... per kind.
      seed: int seed of the initial weights; the same seed gives bit-identical weights on every
        backend.
      dtype: ``"float32"`` (default) or ``"float64"``: the dtype of params, inputs and
        computation; or a mixed policy (Keras' names), ``"mixed_bfloat16"`` or
        ``"mixed_float16"``: layers compute in that half type while params, optimizer state,
        outputs and the loss stay float32 (``model.dtype`` is then ``"float32"``,
        ``model.compute_dtype`` the half type; see :mod:`wframe.precision`).
      name: the model's name when it is nested inside another chain.
    """

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
                fn = training.make_runner(self, *args[:-2], clip=args[-2], strategy=args[-1])
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

    def predict(
        self, x: Any, *, batch_size: int | None = None, verbose: int = 0, strategy: Any = None
    ) -> Array:
        """Outputs in inference mode, computed in batches, as an array of the model's backend.

        Args:
          x: inputs (NumPy or the model's backend); NumPy input moves one batch at a time.
          batch_size: rows per batch; default: as many as keep activations near 4M elements.
          verbose: accepted as in Keras; nothing is printed.
          strategy: a :mod:`wframe.distributed` strategy: each batch split over its devices
            (padded where it does not divide; the padding's outputs are dropped).
        """
        _check_strategy(strategy, "predict")
        size = data.as_int(batch_size, "predict: batch_size", allow_none=True)
        n = data.shape_of(x, "x")[0]
        if not self.built:
            self._inputs(x[:1] if hasattr(x, "shape") else np.asarray(x)[:1])
        xp = self.backend.xp
        size = size or data.default_batch(self._widest(), n)
        if strategy is not None:
            return strategy.predict(self, x, size)
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
        self,
        x: Any,
        y: Any,
        *,
        batch_size: int | None = None,
        loss: Any = None,
        verbose: int = 0,
        strategy: Any = None,
    ) -> dict[str, float]:
        """Mean loss (and accuracy for classification losses) in inference mode, batched.

        Returns a dict (Keras' ``return_dict=True``); ``verbose`` is accepted and prints nothing.
        With a :mod:`wframe.distributed` ``strategy`` each batch is split over its devices
        (padded, the padding masked out of the means).
        """
        _check_strategy(strategy, "evaluate")
        size = data.as_int(batch_size, "evaluate: batch_size", allow_none=True)
        loss = losses_mod.get(loss) if loss is not None else self.loss
        x = self._inputs(x)
        size = size or data.default_batch(self._widest(), x.shape[0])
        y = self._labels(y, x.shape[0], loss)
        return self._evaluate(x, y, loss, size, strategy=strategy)

    def _evaluate(
        self,
        x: Array,
        y: Array,
        loss: losses_mod.Loss,
        size: int,
        params=None,
        state=None,
        strategy=None,
    ) -> dict[str, float]:
        """:meth:`evaluate` on inputs and labels already checked and on the backend."""
        if strategy is not None:
            return strategy.evaluate(self, x, y, loss, size, params, state)
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
        strategy: Any = None,
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
          strategy: a :mod:`wframe.distributed` strategy: ``DataParallel`` or
            ``ModelParallel`` to shard each batch over several JAX devices (every batch must
            divide over them), ``NcclDataParallel`` for one process per GPU (cupy). Validation
            runs under it too.

        The logs hold ``loss`` (the data loss), the loss's metric, and ``penalty`` (the
        layers' regularizers, added to the loss that is differentiated) when there are any;
        a ``mixed_float16`` model adds ``loss_scale``, its dynamic loss scale at the log's time
        (a step whose float16 gradients overflow is skipped and halves it, see
        :class:`wframe.precision.DynamicLossScale`; it is no non-finite step for ``fit``).
        """
        options = data.fit_options(
            epochs=epochs,
            batch_size=batch_size,
            initial_epoch=initial_epoch,
            seed=seed,
            steps_per_execution=steps_per_execution,
            verbose=verbose,
            shuffle=shuffle,
            callbacks=callbacks,
        )
        clip = clipping.options(clipnorm, clipvalue, global_clipnorm)
        _check_strategy(strategy, "fit")
        # Everything is checked before anything is committed: a refused fit changes nothing.
        loss = losses_mod.get(loss) if loss is not None else self.loss
        validation = (
            None if validation_data is None else data.pair(validation_data, "fit: validation_data")
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
            opt_state = tx.init(self.trainable_params)
            training.check_opt_state(opt_state, self.backend)
        self.loss, self.optimizer, self._optimizer_spec, self.opt_state = loss, tx, spec, opt_state
        if self.policy.loss_scale is not None and self._loss_scale is None:
            self._loss_scale = self.policy.loss_scale.init(self.backend)
        training.warn_softmax_with_logits(self, self.loss)
        if strategy is not None:
            strategy.check(self, options["batch_size"], n)
        self.history = fitting.fit(
            self, x, y, validation=validation, clip=clip, strategy=strategy, **options
        )
        return self.history


def _check_strategy(strategy: Any, what: str) -> None:
    if strategy is not None and not hasattr(strategy, "shard_batch"):
        raise TypeError(
            f"{what}: strategy must be a wf.distributed.DataParallel, ModelParallel or "
            f"NcclDataParallel, got {type(strategy).__name__}"
        )
