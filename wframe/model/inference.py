"""A model's outputs and gradients on data: ``predict`` (arrays or an iterable of batches,
on one device or split over a strategy's) and ``value_and_grad``.

:class:`Inference` is a base of :class:`wframe.Model`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wframe import data, data_rows
from wframe.model.files import Files
from wframe.random import array_key
from wframe.training import pipeline
from wframe.tree import reorder, split
from wframe.types import Array, Grads


class Inference(Files):
    """Outputs in inference mode, and the loss and gradients in training mode."""

    def predict(
        self,
        x: Any,
        *,
        batch_size: int | None = None,
        verbose: int = 0,
        strategy: Any = None,
        steps: int | None = None,
    ) -> Array:
        """Outputs in inference mode, computed in batches, as an array of the model's backend.

        Safe to call from any thread while another trains the model: it reads the arrays of
        one complete step.

        Args:
          x: inputs (NumPy, the model's backend's, torch tensors, a DataFrame, anything with
            ``__array__``); NumPy input moves one batch at a time. Or an iterable of batches
            (a generator, a DataLoader, a list), each ``x``, ``(x,)`` or ``(x, y, ...)`` (``y``
            ignored), prepared one batch ahead in a background thread.
          batch_size: rows per batch; default: as many as keep activations near 4M elements.
          verbose: accepted as in Keras; nothing is printed.
          strategy: a :mod:`wframe.distributed` strategy: each batch split over its devices
            (padded where it does not divide; the padding's outputs are dropped).
          steps: for an iterable, how many of its batches (default: all).
        """
        check_strategy(strategy, "predict")
        size = data.as_int(batch_size, "predict: batch_size", allow_none=True)
        if pipeline.is_batches(x):
            pipeline.refuse("predict", batch_size=batch_size, strategy=strategy)
            outs = pipeline.predict_iterable(self, x, pipeline.steps(steps, "predict"))
            return self.format_outputs(data_rows.concat_rows(outs, self.backend.xp))
        pipeline.refuse_steps(steps, "predict")
        parts = tuple(
            p if hasattr(p, "shape") else np.asarray(p)
            for p in data_rows.per_name(x, self.input_names, "x", "input")
        )
        n = data.shape_of(parts[0], "x")[0]
        if not self.built:
            self.prepare_inputs(parts[0][:1])
        size = size or self.default_batch_size(n)
        if strategy is not None:
            return strategy.predict(self, parts[0], size)
        fn, arrays = self.trainer.predict_fn(), self.train_state  # one step's arrays
        # On the host nothing moves: the inputs are checked once and sliced (a batch of 32 of
        # the digits MLP: 67 us a batch checked one by one, 31 so).
        whole = self.backend.on_host and n > size
        if whole:
            prepared = self.prepare_inputs(_one(parts))
            parts = prepared if isinstance(prepared, tuple) else (prepared,)
        outs = []
        with self.backend.host_threads(self.count_params() * size):
            for i in range(0, max(n, 1), size):
                batch = _one(tuple(p[i : i + size] for p in parts))
                outs.append(
                    fn(arrays.params, arrays.state, batch if whole else self.prepare_inputs(batch))
                )
        return self.format_outputs(data_rows.concat_rows(outs, self.backend.xp))

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
        y = self.prepare_labels(y, data_rows.rows(x), loss)
        arrays = self.train_state
        if key is None and self.uses_key:
            key = array_key(self.seed, self.steps, self.backend)
        fn = self.trainer.grad_fn(loss)
        value, grads, _, _, penalty = fn(arrays.params, arrays.state, x, y, key)
        trained = split(arrays.params, self.frozen)[0] if self.frozen else arrays.params
        return value + penalty, reorder(grads, trained)


def _one(parts: tuple) -> Any:
    return parts if len(parts) > 1 else parts[0]


def check_strategy(strategy: Any, what: str) -> None:
    """Refuse what is not a :mod:`wframe.distributed` strategy, naming the call."""
    if strategy is not None and not hasattr(strategy, "shard_batch"):
        raise TypeError(
            f"{what}: strategy must be a wf.distributed.DataParallel, ModelParallel or "
            f"NcclDataParallel, got {type(strategy).__name__}"
        )
