"""The trainable model: Keras' ``compile``/``fit``/``evaluate``/``predict`` over the arrays a
:class:`~wframe.model.arrays.Holder` holds, plus files and configs.

:class:`Model` is the base every model kind implements (``wf.Sequential``, a chain, is one);
it is also a layer, so a trained model nests inside another. It runs no loop itself: data
checks live in :mod:`wframe.data`, the compiled functions and the loop in
:mod:`wframe.training`, files in :mod:`wframe.saving`, the table in :mod:`wframe.model.summary`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from wframe import data, saving, training
from wframe import losses as losses_mod
from wframe import optimizers as optimizers_mod
from wframe.callbacks import History
from wframe.layers import registry, symbolic
from wframe.model import summary as summary_mod
from wframe.model.arrays import Snapshot
from wframe.model.inputs import Inputs
from wframe.optimizers import clipping
from wframe.random import array_key
from wframe.tree import reorder, split
from wframe.types import Array, Grads


class Model(Inputs):
    """A trainable model: arrays on one backend and Keras' training API over them.

    ``wf.Model(inputs, outputs)`` makes a graph model (:mod:`wframe.model.functional`);
    ``wf.Sequential`` is a chain. Subclasses give the structure as a layer's
    ``init``/``forward`` and name their inputs and outputs (``input_names``,
    ``input_dtypes``, ``output_names``); everything here works the same for any of them.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Model:
        # wf.Model(inputs, outputs) is the graph model, registered where it is defined.
        return super().__new__(registry.lookup("wframe.Model") if cls is Model else cls)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """On symbolic tensors: this model as a layer of a graph under construction; on
        arrays: :meth:`predict`."""
        if any(symbolic.is_symbolic(a) for a in (*args, *kwargs.values())):
            return super().__call__(*args, **kwargs)
        return self.predict(*args, **kwargs)

    # ----------------------------------------------------------------- compile
    def compile(
        self, optimizer: Any = "adam", loss: Any = "softmax_cross_entropy", loss_weights: Any = None
    ) -> Model:
        """Set the optimizer and loss that ``fit`` and ``evaluate`` use by default; a model of
        several outputs takes a loss per output (a list or a dict by output name; one loss
        alone applies to every output) and ``loss_weights`` (likewise) for their sum."""
        loss = self.resolve_loss(loss, loss_weights)
        choice = self._choose_optimizer(optimizer, force=True)
        self.loss = loss
        self.optimizer, self._optimizer_name, self.opt_state = choice
        return self

    def _choose_optimizer(self, optimizer: Any, *, force: bool = False) -> tuple:
        """``(optimizer, name, opt_state)`` that ``optimizer`` asks for; commits nothing."""
        current = (self.optimizer, self._optimizer_name, self.opt_state)
        if optimizer is None and self.optimizer is not None:
            choice = current
        elif isinstance(optimizer or "adam", str):
            name = (optimizer or "adam").lower()
            # The same named optimizer keeps its state across fit calls.
            same = name == self._optimizer_name and not force
            choice = current if same else (optimizers_mod.get(name), name, None)
        elif optimizer is not self.optimizer or force:
            choice = (optimizers_mod.get(optimizer), None, None)
        else:
            choice = current
        if self.built:
            training.check_optimizer(choice[0], self._backend)
        return choice

    # ----------------------------------------------------------------- inference
    def predict(
        self, x: Any, *, batch_size: int | None = None, verbose: int = 0, strategy: Any = None
    ) -> Array:
        """Outputs in inference mode, computed in batches, as an array of the model's backend.

        Safe to call from any thread while another trains the model: it reads the arrays of
        one complete step.

        Args:
          x: inputs (NumPy or the model's backend); NumPy input moves one batch at a time.
          batch_size: rows per batch; default: as many as keep activations near 4M elements.
          verbose: accepted as in Keras; nothing is printed.
          strategy: a :mod:`wframe.distributed` strategy: each batch split over its devices
            (padded where it does not divide; the padding's outputs are dropped).
        """
        _check_strategy(strategy, "predict")
        size = data.as_int(batch_size, "predict: batch_size", allow_none=True)
        parts = tuple(
            p if hasattr(p, "shape") else np.asarray(p)
            for p in data.per_name(x, self.input_names, "x", "input")
        )
        n = data.shape_of(parts[0], "x")[0]
        if not self.built:
            self.prepare_inputs(parts[0][:1])
        size = size or self.default_batch_size(n)
        if strategy is not None:
            return strategy.predict(self, parts[0], size)
        fn, arrays = self.trainer.predict_fn(), self.train_state  # one step's arrays
        outs = []
        for i in range(0, max(n, 1), size):
            batch = tuple(p[i : i + size] for p in parts)
            outs.append(fn(arrays.params, arrays.state, self.prepare_inputs(_one(batch))))
        return self.format_outputs(data.concat_rows(outs, self.backend.xp))

    def format_outputs(self, y: Any) -> Any:
        """``predict``'s outputs as the model gives them (a graph: as its outputs were given,
        one array, a list or a dict by output name)."""
        return y

    def value_and_grad(
        self, x: Any, y: Any, *, loss: Any = None, key: Any = None
    ) -> tuple[Array, Grads]:
        """Mean loss on ``(x, y)`` in training mode (plus the layers' regularization penalty)
        and its gradient w.r.t. every trainable param.

        Args:
          x, y: inputs and labels.
          loss: name or :class:`~wframe.losses.Loss`; default: the compiled one.
          key: array key (:func:`wframe.random.array_key`) for stochastic layers such as
            Dropout; default: the key the next ``fit`` step would use.

        Returns:
          ``(loss, grads)``, ``grads`` a dict shaped (and ordered) like ``params``, without
          the frozen params (``trainable_params``' shape).
        """
        loss = self.resolve_loss(loss if loss is not None else self.loss)
        x = self.prepare_inputs(x)
        y = self.prepare_labels(y, data.rows(x), loss)
        arrays = self.train_state
        if key is None and self.uses_key:
            key = array_key(self.seed, self.steps, self.backend)
        fn = self.trainer.grad_fn(loss)
        value, grads, _, _, penalty = fn(arrays.params, arrays.state, x, y, key)
        trained = split(arrays.params, self.frozen)[0] if self.frozen else arrays.params
        return value + penalty, reorder(grads, trained)

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
        loss = self.resolve_loss(loss if loss is not None else self.loss)
        x = self.prepare_inputs(x)
        size = size or self.default_batch_size(data.rows(x))
        y = self.prepare_labels(y, data.rows(x), loss)
        return training.evaluate(self, x, y, loss, size, strategy=strategy)

    # ----------------------------------------------------------------- training
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
            ``"adam"``; its state carries over while it is the same object (or name).
          loss: name or :class:`~wframe.losses.Loss`; default: the compiled one.
          validation_data: ``(x_val, y_val)`` evaluated after each epoch (``val_`` logs).
          validation_split: a fraction in [0, 1) of the last examples (before any shuffle, as
            Keras) held out instead, when ``validation_data`` is not given.
          shuffle, seed: reshuffle each epoch; epoch ``e`` of the model's life always gets the
            same permutation, from ``seed`` (default the model's; also the dropout masks').
          verbose: 0 silent, 1 a progress bar (one line per epoch when not on a terminal).
          callbacks, initial_epoch: :class:`~wframe.callbacks.Callback` instances; the epoch
            index to start at.
          steps_per_execution: train steps per compiled call (a ``lax.scan`` on JAX), or
            ``"epoch"`` for the whole epoch.
          clipnorm, clipvalue, global_clipnorm: clip each gradient to this L2 norm, each element
            to ``[-v, v]``, or all together to this global norm (Keras'; at most one); the
            pre-clip global norm is logged as ``grad_norm``.
          strategy: a :mod:`wframe.distributed` strategy (``DataParallel``, ``ModelParallel``:
            batches sharded over JAX devices; ``NcclDataParallel``: a process per GPU).

        The logs hold ``loss``, the loss's metric, ``penalty`` (the regularizers, added to
        the loss differentiated) when there are any, and ``loss_scale`` for ``mixed_float16``
        (:class:`wframe.precision.DynamicLossScale`). Whatever ends ``fit`` (its end,
        ``stop_training``, an exception, Ctrl-C), the model holds the arrays of its last
        completed step with matching ``steps``/``epochs``; an exception propagates. A second
        ``fit`` (``build``, ``to_backend``, a load from another thread) meanwhile raises.
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
        with self.exclusive("fit"):
            # Everything is checked before anything is committed: a refused fit changes nothing.
            loss = self.resolve_loss(loss if loss is not None else self.loss)
            x, y, validation = self._fit_data(x, y, loss, validation_data, validation_split)
            self._commit_optimizer(loss, optimizer)
            training.warn_softmax_with_logits(self, self.loss)
            if strategy is not None:
                strategy.check(self, options["batch_size"], data.rows(x))
            self.history = training.fit(
                self, x, y, validation=validation, clip=clip, strategy=strategy, **options
            )
        return self.history

    def _fit_data(self, x, y, loss, validation_data, validation_split) -> tuple:
        """``(x, y, (x_val, y_val) or None)`` checked and on the backend (the model built)."""
        validation = None
        if validation_data is not None:
            validation = data.pair(validation_data, "fit: validation_data")
        elif validation_split:
            x, y, validation = data.split(x, y, validation_split)
        x = self.prepare_inputs(x, finite=True)
        if data.rows(x) == 0:
            raise ValueError("fit: x has no examples")
        y = self.prepare_labels(y, data.rows(x), loss)
        if validation is not None:  # checked and moved once, not at every epoch
            x_val = self.prepare_inputs(validation[0], "x_val", finite=True)
            y_val = self.prepare_labels(validation[1], data.rows(x_val), loss, "y_val")
            validation = (x_val, y_val)
        return x, y, validation

    def _commit_optimizer(self, loss: losses_mod.Loss, optimizer: Any) -> None:
        tx, name, opt_state = self._choose_optimizer(optimizer)  # built here: checked
        if opt_state is None:
            opt_state = tx.init(self.trainable_params)
            training.check_opt_state(opt_state, self.backend)
        self.loss, self.optimizer, self._optimizer_name = loss, tx, name
        self.opt_state = opt_state
        if self.policy.loss_scale is not None and self.loss_scale is None:
            self.loss_scale = self.policy.loss_scale.init(self.backend)

    # ----------------------------------------------------------------- files
    def save_weights(self, path: str | os.PathLike) -> None:
        """Write params, state and masks to a safetensors file, atomically
        (:func:`wframe.saving.weights.save_weights`)."""
        saving.weights.save_weights(self, path)

    def load_weights(self, path: str | os.PathLike, **options: Any) -> Model:
        """Load params and state by name, all checked first
        (:func:`wframe.saving.weights.load_weights`: ``strict``, ``skip_mismatch``,
        ``rename``, ``dtype``, ``allow_nonfinite``)."""
        self.refuse_while_running("load_weights", own_thread_ok=True)
        saving.weights.load_weights(self, path, **options)
        return self

    def save_checkpoint(
        self,
        path: str | os.PathLike,
        *,
        resume_at: tuple[int, int] | None = None,
        extra: dict | None = None,
    ) -> None:
        """Write everything ``fit`` needs to go on exactly: params, state, masks, optimizer
        state, counters and seed (:func:`wframe.saving.checkpoint.save`), and with
        ``resume_at`` the ``(epoch, batch)`` where an interrupted ``fit`` goes on; ``extra``
        adds string metadata."""
        saving.checkpoint.save(self, path, resume_at=resume_at, extra=extra)

    def load_checkpoint(self, path: str | os.PathLike) -> Model:
        """Restore what :meth:`save_checkpoint` (or
        :class:`~wframe.callbacks.ModelCheckpoint`) wrote: params, state, optimizer state and
        the step, epoch and RNG counters, all checked first; an unbuilt model is built for the
        checkpoint's input shape. A backup written within an epoch also sets
        :attr:`resume_at`, so the next ``fit`` goes on from its batch."""
        self.refuse_while_running("load_checkpoint", own_thread_ok=True)
        saved = dict(vars(self))  # a build (or anything else) is undone on failure
        try:
            got = saving.checkpoint.read(self, path)
            self.set_frozen(got.frozen)
            self.optimizer, self._optimizer_name = got.optimizer, got.optimizer_name
            self._now = Snapshot(got.arrays, got.steps, got.epochs)
            self.seed, self.resume_at = got.seed, got.resume_at
        except BaseException:
            vars(self).clear()
            vars(self).update(saved)
            raise
        return self

    def get_config(self) -> dict[str, Any]:
        """The model's constructor arguments as JSON values (layers by their configs, as
        :mod:`wframe.saving.config` writes them), ``seed`` and ``dtype`` (the policy name)."""
        return {**saving.fields_config(self), "seed": self.seed, "dtype": self.policy.name}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Model:
        """The (unbuilt) model :meth:`get_config` described."""
        return cls(**saving.fields_from_config(cls, config, cls.__name__))

    # ----------------------------------------------------------------- reporting
    def get_layer(self, name: str | None = None, index: int | None = None) -> Any:
        """The layer called ``name``, or the ``index``-th (in call order), as Keras'."""
        layers = [layer for _, layer in self.children()]
        if (name is None) == (index is None):
            raise ValueError("get_layer takes a name or an index (exactly one)")
        if index is not None:
            if not -len(layers) <= index < len(layers):
                raise ValueError(f"get_layer: index {index} out of range: {len(layers)} layers")
            return layers[index]
        for layer in layers:
            if layer.name == name:
                return layer
        names = [layer.name for layer in layers]
        raise ValueError(f"{self.label} has no layer {name!r}; its layers are {names}")

    def summary(self, print_fn=print) -> str:
        """Print (and return) a table of layers, output shapes and parameter counts."""
        self.require_built("summary")
        return summary_mod.summary(self, print_fn)


def _one(parts: tuple) -> Any:
    return parts if len(parts) > 1 else parts[0]


def _check_strategy(strategy: Any, what: str) -> None:
    if strategy is not None and not hasattr(strategy, "shard_batch"):
        raise TypeError(
            f"{what}: strategy must be a wf.distributed.DataParallel, ModelParallel or "
            f"NcclDataParallel, got {type(strategy).__name__}"
        )
