"""The trainable model: Keras' ``compile``/``fit``/``evaluate``/``predict`` over the arrays a
:class:`~wframe.model.arrays.Holder` holds, plus files and configs.

:class:`Model` is the base every model kind implements (``wf.Sequential``, a chain, is one);
it is also a layer, so a trained model nests inside another. It runs no loop itself: data
checks live in :mod:`wframe.data`, the compiled functions and the loop in
:mod:`wframe.training`, files in :mod:`wframe.saving`, the table in :mod:`wframe.model.summary`.
"""

from __future__ import annotations

from typing import Any

from wframe import data, data_rows, saving, training
from wframe import losses as losses_mod
from wframe import optimizers as optimizers_mod
from wframe.callbacks import History
from wframe.layers import registry, symbolic
from wframe.model.inference import Inference, check_strategy
from wframe.model.keras_methods import KerasMethods, keras_values
from wframe.optimizers import clipping
from wframe.training import pipeline
from wframe.tree import tree_leaves


class Model(KerasMethods, Inference):
    """A trainable model: arrays on one backend and Keras' training API over them.

    ``wf.Model(inputs, outputs)`` makes a graph model (:mod:`wframe.model.functional`);
    ``wf.Sequential`` is a chain. Subclasses give the structure as a layer's
    ``init``/``forward`` and name their inputs and outputs (``input_names``,
    ``input_dtypes``, ``output_names``); everything here works the same for any of them.

    Args:
      seed: the integer (>= 0) that every random draw of this model derives from (initial
        weights, dropout, shuffling): one seed gives the same weights on every backend.
      dtype: the variables' dtype or precision policy: ``"float32"`` (default),
        ``"float64"``, ``"mixed_float16"``, ``"mixed_bfloat16"`` or a
        :class:`wframe.precision.Policy`.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Model:
        # wf.Model(inputs, outputs) is the graph model, registered where it is defined.
        return super().__new__(registry.lookup("wframe.Model") if cls is Model else cls)

    def __call__(self, *args: Any, training: bool | None = None, **kwargs: Any) -> Any:
        """On symbolic tensors: this model as a layer of a graph under construction; on
        arrays: :meth:`predict`, or with ``training=True`` the outputs in training mode
        (:meth:`~wframe.model.keras_methods.KerasMethods.call_training`: dropout active,
        BatchNorm on the batch's statistics, its moving statistics not updated)."""
        if any(symbolic.is_symbolic(a) for a in (*args, *kwargs.values())):
            if training is not None:
                kwargs["training"] = training
            return super().__call__(*args, **kwargs)
        if training:
            return self.call_training(*args, **kwargs)
        return self.predict(*args, **kwargs)

    # ----------------------------------------------------------------- compile
    def compile(
        self,
        optimizer: Any = "adam",
        loss: Any = "softmax_cross_entropy",
        loss_weights: Any = None,
        metrics: Any = None,
    ) -> Model:
        """Set the optimizer, loss and metrics that ``fit`` and ``evaluate`` use by default.

        A model of several outputs takes a loss per output (a list or a dict by output name;
        one loss alone applies to every output) and ``loss_weights`` (likewise) for their sum.
        ``metrics`` as Keras takes them: names (``"accuracy"``, ``"auc"``, ``"mae"``, ...),
        :class:`wframe.metrics.Metric` objects or ``fn(y_true, y_pred)`` callables; for several
        outputs a list for each, a list of lists or a dict by output name. ``None`` logs the
        loss's accuracy for a classification loss and nothing else; ``[]`` logs nothing."""
        loss = self.resolve_loss(loss, loss_weights)
        training.Tracker.of(loss, metrics, self.output_names)  # refused here, not in fit
        choice = self._choose_optimizer(optimizer, force=True)
        self.loss, self.compiled_metrics = loss, metrics
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

    def evaluate(
        self,
        x: Any,
        y: Any = None,
        *,
        batch_size: int | None = None,
        loss: Any = None,
        verbose: int = 0,
        strategy: Any = None,
        sample_weight: Any = None,
        return_dict: bool = True,
        steps: int | None = None,
    ) -> dict[str, float] | float | list[float]:
        """The loss and the compiled metrics in inference mode, batched.

        Returns a dict by log name; with ``return_dict=False`` Keras' form: the loss alone
        when nothing else is logged, else the list ``[loss, *metrics]`` in log order (the
        default differs from Keras', whose ``return_dict`` is ``False``). ``sample_weight``
        weighs the examples as in :meth:`fit`. ``verbose`` is accepted and prints nothing.
        With a :mod:`wframe.distributed` ``strategy`` each batch is split over its devices
        (padded, the padding masked out of the means). ``x`` may be an iterable of ``(x, y)``
        or ``(x, y, sample_weight)`` batches, as :meth:`fit` takes (``steps`` of them, default
        all), with ``y`` left out.
        """
        check_strategy(strategy, "evaluate")
        size = data.as_int(batch_size, "evaluate: batch_size", allow_none=True)
        loss = self.resolve_loss(loss if loss is not None else self.loss)
        if pipeline.is_batches(x):
            given = {"y": y, "batch_size": batch_size, "sample_weight": sample_weight}
            pipeline.refuse("evaluate", **given, strategy=strategy)
            logs = pipeline.evaluate_iterable(self, x, loss, pipeline.steps(steps, "evaluate"))
            return logs if return_dict else keras_values(logs)
        pipeline.refuse_steps(steps, "evaluate")
        x = self.prepare_inputs(x)
        size = size or self.default_batch_size(data_rows.rows(x))
        y = self.prepare_labels(y, data_rows.rows(x), loss, sample_weight=sample_weight)
        if strategy is not None and sample_weight is not None:
            raise ValueError("evaluate: sample_weight with a strategy is not supported")
        logs = training.evaluate(self, x, y, loss, size, strategy=strategy)
        return logs if return_dict else keras_values(logs)

    # ----------------------------------------------------------------- training
    def fit(
        self,
        x: Any,
        y: Any = None,
        *,
        epochs: int = 1,
        batch_size: int | None = None,
        optimizer: Any = None,
        loss: Any = None,
        validation_data: tuple[Any, Any] | None = None,
        validation_split: float = 0.0,
        shuffle: bool | None = None,
        seed: int | None = None,
        verbose: int | str = 1,
        callbacks: list | None = None,
        initial_epoch: int = 0,
        steps_per_execution: int | str = 1,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
        strategy: Any = None,
        metrics: Any = None,
        sample_weight: Any = None,
        class_weight: dict | None = None,
        steps_per_epoch: int | None = None,
        validation_steps: int | None = None,
        validation_freq: int = 1,
        validation_batch_size: int | None = None,
    ) -> History:
        """Train with mini-batches; returns the :class:`~wframe.callbacks.History`.

        Args:
          x, y: training inputs and labels (NumPy arrays, arrays of the model's backend, torch
            tensors, pandas DataFrames, anything with ``__array__``; a list or a dict by name
            for several inputs); checked (NaN, inf, overflow, label range) and moved to the
            backend once. Or ``x`` an iterable of ``(x, y)`` or ``(x, y, sample_weight)``
            batches and no ``y``: a generator, a list, a ``torch.utils.data.DataLoader``; each
            batch is converted, checked and moved in a background thread while the step
            before runs, and trained in its order (see :mod:`wframe.training.stream` for what
            is reproducible).
          epochs: train until this epoch index (Keras: ``epochs - initial_epoch`` epochs run).
          batch_size: examples per step (default 32); the last partial batch is kept.
          optimizer: name or ``(init, update)`` transformation; default: the compiled one or
            ``"adam"``; its state carries over while it is the same object (or name).
          loss: name or :class:`~wframe.losses.Loss`; default: the compiled one.
          validation_data: ``(x_val, y_val)`` evaluated after each epoch (``val_`` logs).
          validation_split: a fraction in [0, 1) of the last examples (before any shuffle, as
            Keras) held out instead, when ``validation_data`` is not given.
          shuffle, seed: reshuffle arrays each epoch (default); epoch ``e`` of the model's life
            always gets the same permutation, from ``seed`` (default the model's; also the
            dropout masks'). An iterable keeps its own order.
          verbose: 0 silent, 1 a progress bar (one line per epoch when not on a terminal);
            ``"auto"`` (Keras 3's default) is 1.
          callbacks, initial_epoch: :class:`~wframe.callbacks.Callback` instances; the epoch
            index to start at.
          steps_per_execution: train steps per compiled call (a ``lax.scan`` on JAX), or
            ``"epoch"`` for the whole epoch.
          clipnorm, clipvalue, global_clipnorm: clip each gradient to this L2 norm, each element
            to ``[-v, v]``, or all together to this global norm (Keras'; at most one); the
            pre-clip global norm is logged as ``grad_norm``.
          strategy: a :mod:`wframe.distributed` strategy (``DataParallel``, ``ModelParallel``:
            batches sharded over JAX devices; ``NcclDataParallel``: a process per GPU).
          metrics: as :meth:`compile`'s (and kept, as ``loss`` and ``optimizer`` are);
            default: the compiled ones.
          sample_weight: a weight per example (for several outputs: one array for all, a list
            or a dict by output name); ``validation_data`` may be ``(x, y, sample_weight)``.
          class_weight: ``{class index: weight}``, each example weighted by its label's class
            (1 for classes not named); with ``sample_weight``, their product. Weighted, the
            loss is Keras' ``sum_over_batch_size``: the sum of the weighted losses over the
            number of examples; a mean metric divides by the sum of the weights.
          steps_per_epoch: batches per epoch of an iterable (required for a generator that
            does not end): drawn from a stream that goes on across epochs, an iterable that
            can be iterated again starting a new pass where one ends; a generator that ends
            stops training with a warning. Default: one pass per epoch.
          validation_steps: batches of an iterable ``validation_data`` per validation.
          validation_freq: validate after every this many epochs.
          validation_batch_size: batch of array validation data (default
            ``max(batch_size, 256)``; the means do not depend on it).

        The logs hold ``loss``, the metrics (Keras' names: ``accuracy``, ``<output>_loss``,
        ``<output>_accuracy``), ``penalty`` (the regularizers, added to
        the loss differentiated) when there are any, and ``loss_scale`` for ``mixed_float16``
        (:class:`wframe.precision.DynamicLossScale`). Whatever ends ``fit`` (its end,
        ``stop_training``, an exception, Ctrl-C), the model holds the arrays of its last
        completed step with matching ``steps``/``epochs``; an exception propagates. A second
        ``fit`` (``build``, ``to_backend``, a load from another thread) meanwhile raises.
        """
        options, flow, clip = _fit_arguments(
            epochs=epochs,
            batch_size=batch_size,
            initial_epoch=initial_epoch,
            seed=seed,
            steps_per_execution=steps_per_execution,
            verbose=verbose,
            shuffle=shuffle,
            callbacks=callbacks,
            steps_per_epoch=steps_per_epoch,
            validation_steps=validation_steps,
            validation_freq=validation_freq,
            validation_batch_size=validation_batch_size,
            strategy=strategy,
            weighted=sample_weight is not None or class_weight is not None,
            clips=(clipnorm, clipvalue, global_clipnorm),
        )
        with self.exclusive("fit"):
            fitting = self._checked_fit(
                x,
                y,
                loss,
                optimizer,
                metrics,
                validation_data,
                validation_split,
                {"sample_weight": sample_weight, "class_weight": class_weight},
                options,
                flow,
                strategy,
            )
            x, y, validation, more = fitting
            self.history = training.fit(
                self, x, y, validation=validation, clip=clip, strategy=strategy, **options, **more
            )
        return self.history

    def _checked_fit(
        self,
        x,
        y,
        loss,
        optimizer,
        metrics,
        validation_data,
        split,
        weights,
        options,
        flow,
        strategy,
    ) -> tuple:
        """``fit``'s data, loss, metrics and optimizer, checked and committed only when all
        pass: a refused fit changes nothing (an unbuilt model the checks built is unbuilt
        again). Returns ``(x, y, validation, loop options)``."""
        saved = dict(vars(self))
        try:
            loss = self.resolve_loss(loss if loss is not None else self.loss)
            metrics = self.compiled_metrics if metrics is None else metrics
            training.Tracker.of(loss, metrics, self.output_names)
            x, y, validation, more = pipeline.fit_data(
                self, x, y, loss, validation_data, split, weights, options, flow
            )
            training.warn_all_frozen(self)
            training.check_loss_backend(loss, self.backend)
            self._commit_optimizer(loss, optimizer)
            self.compiled_metrics = metrics
            training.warn_softmax_with_logits(self, self.loss)
            if strategy is not None:
                strategy.check(self, options["batch_size"], data_rows.rows(x))
        except BaseException:
            vars(self).clear()
            vars(self).update(saved)
            raise
        return x, y, validation, more

    def _commit_optimizer(self, loss: losses_mod.Loss, optimizer: Any) -> None:
        tx, name, opt_state = self._choose_optimizer(optimizer)  # built here: checked
        if opt_state is None:
            # Compiled where the backend traces: one call instead of a dozen small programs
            # dispatched eagerly (Adam on the digits MLP, JAX:CPU: 1.7 ms -> 0.3 ms a call).
            init = self.backend.jit(tx.init) if self.backend.traced else tx.init
            opt_state = init(self.trainable_params)
            if tree_leaves(self.trainable_params):  # (nothing to train: no array to place)
                training.check_opt_state(opt_state, self.backend)
        self.loss, self.optimizer, self._optimizer_name = loss, tx, name
        self.opt_state = opt_state
        if self.policy.loss_scale is not None and self.loss_scale is None:
            self.loss_scale = self.policy.loss_scale.init(self.backend)

    def get_config(self) -> dict[str, Any]:
        """The model's constructor arguments as JSON values (layers by their configs, as
        :mod:`wframe.saving.config` writes them), ``seed`` and ``dtype`` (the policy name)."""
        return {**saving.fields_config(self), "seed": self.seed, "dtype": self.policy.name}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Model:
        """The (unbuilt) model :meth:`get_config` described (``wf.Model.from_config``: a
        graph model's, as ``wf.Model(...)`` makes one)."""
        if cls is Model:
            return registry.lookup("wframe.Model").from_config(config)
        return cls(**saving.fields_from_config(cls, config, cls.__name__))


def _fit_arguments(*, strategy, weighted, clips, **given) -> tuple:
    """``fit``'s arguments checked, before anything is touched: ``(loop options, pipeline
    options, gradient clipping)``."""
    flow_keys = ("steps_per_epoch", "validation_steps", "validation_freq", "validation_batch_size")
    flow = {k: given.pop(k) for k in flow_keys}
    options = data.fit_options(**given)
    flow = pipeline.options(
        **flow, batch_size=given["batch_size"], shuffle=given["shuffle"], strategy=strategy
    )
    clip = clipping.options(*clips)
    check_strategy(strategy, "fit")
    if strategy is not None and weighted:
        raise ValueError(
            "fit: sample_weight/class_weight with a strategy is not supported; weigh the "
            "examples by repeating them, or train without the strategy"
        )
    return options, flow, clip
