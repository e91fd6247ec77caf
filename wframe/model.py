"""Sequential: a stack of layers, its params and state, and the Keras-like training API."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from wframe import losses as losses_mod
from wframe import optimizers as optimizers_mod
from wframe.backends import Backend, array_namespace, get_backend, to_numpy
from wframe.layers.base import Layer
from wframe.random import array_key, fold_in, generator
from wframe.training import (
    History,
    TrainState,
    make_eval_step,
    make_grad_fn,
    make_train_step,
)
from wframe.tree import flatten, tree_map
from wframe.types import Array, Grads, Params, Shape, State

_FLOAT_DTYPES = ("float16", "float32", "float64")


class Sequential:
    """A linear stack of layers.

    Args:
      layers: :class:`~wframe.layers.Layer` instances; unnamed ones are named ``dense_0``,
        ``dense_1``, ... per kind.
      seed: int seed of the initial weights; the same seed gives bit-identical weights on every
        backend.
      dtype: floating dtype of params and inputs (``"float32"``; ``"float64"`` on request).
    """

    def __init__(self, layers: Sequence[Layer], *, seed: int = 0, dtype: str = "float32"):
        if (
            str(dtype) not in _FLOAT_DTYPES
            and getattr(dtype, "__name__", None) not in _FLOAT_DTYPES
        ):
            raise ValueError(f"Sequential dtype must be one of {_FLOAT_DTYPES}, got {dtype!r}")
        counts: dict[str, int] = {}
        named = []
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(
                    f"Sequential layer {i} must be a wframe Layer, got {type(layer).__name__}"
                )
            if layer.name is None:
                layer = dataclasses.replace(layer, name=f"{layer.kind}_{counts.get(layer.kind, 0)}")
                counts[layer.kind] = counts.get(layer.kind, 0) + 1
            named.append(layer)
        names = [layer.name for layer in named]
        if len(set(names)) != len(names):
            raise ValueError(f"Sequential layer names must be unique, got {names}")
        self.layers = tuple(named)
        self.seed = seed
        self.dtype = np.dtype(dtype).name
        self.loss: losses_mod.Loss = losses_mod.get("softmax_cross_entropy")
        self.optimizer: Any = None
        self.opt_state: Any = None
        self._params: Params | None = None
        self._state: State = {}
        self._shapes: list[Shape] = []
        self._backend: Backend | None = None
        self._compiled: dict[tuple, Any] = {}
        # Counters of completed training, so that a second fit continues the shuffles and
        # dropout masks instead of repeating them.
        self._steps = self._epochs = 0

    # ----------------------------------------------------------------- building and params
    def build(self, input_shape: Shape) -> Sequential:
        """Create params for inputs of ``input_shape`` (batch axis ``None`` or any int)."""
        shape = (None, *tuple(input_shape)[1:])
        backend = get_backend()
        params, state, shapes = {}, {}, []
        for i, layer in enumerate(self.layers):
            p, s, shape = layer.init(fold_in(self.seed, i), shape, dtype=self.dtype)
            if p:
                params[layer.name] = p
            if s:
                state[layer.name] = s
            shapes.append(shape)
        self._params, self._state, self._shapes = params, state, shapes
        self._backend = backend
        self._compiled = {}
        self.opt_state = None
        return self

    @property
    def built(self) -> bool:
        return self._params is not None

    @property
    def params(self) -> Params:
        """``{"dense_0": {"W": ..., "b": ...}, ...}``: arrays of the backend the model is on."""
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

    def _validated(self, new: Any, old: Any, what: str) -> Any:
        old_flat, new_flat = dict(flatten(old)), dict(flatten(new))
        if old_flat.keys() != new_flat.keys():
            missing = sorted(old_flat.keys() - new_flat.keys())
            unexpected = sorted(new_flat.keys() - old_flat.keys())
            raise ValueError(f"{what} names differ: missing {missing}, unexpected {unexpected}")
        backend = self._active()
        for name, a in new_flat.items():
            ref = old_flat[name]
            if tuple(a.shape) != tuple(ref.shape) or str(a.dtype) != str(ref.dtype):
                raise ValueError(
                    f"{what} '{name}' must have shape {tuple(ref.shape)} and dtype {ref.dtype}, "
                    f"got shape {tuple(a.shape)} and dtype {a.dtype}"
                )
            self._check_array(a, f"{what} '{name}'", backend)
        return tree_map(lambda a: a, new)

    @staticmethod
    def _check_array(a: Any, what: str, backend: Backend) -> None:
        xp = array_namespace(a)
        if xp is not backend.xp:
            raise TypeError(
                f"{what} is an array of {xp.__name__}, but the active backend is "
                f"'{backend.name}'; convert it, or move the model with "
                f"model.to_backend('{backend.name}')"
            )

    def _require_built(self) -> None:
        if self._params is None:
            raise RuntimeError(
                "the model has no params yet: call model.build(input_shape) or pass it data"
            )

    def _active(self) -> Backend:
        """The active backend, checked to be the one the params live on."""
        backend = get_backend()
        if self._backend is not None and backend is not self._backend:
            raise RuntimeError(
                f"the model's params live on backend '{self._backend.name}' but the active "
                f"backend is '{backend.name}'; call model.to_backend('{backend.name}') first"
            )
        return backend

    def to_backend(self, name: str) -> Sequential:
        """Move params, state and optimizer state to backend ``name`` and make it active."""
        from wframe.backends import set_backend

        target = set_backend(name) if get_backend().name != name else get_backend()
        if self.built:

            def move(a):
                return target.asarray(to_numpy(a)) if hasattr(a, "shape") else a

            self._params = tree_map(move, self._params)
            self._state = tree_map(move, self._state)
            self.opt_state = tree_map(move, self.opt_state)
            self._backend = target
            if self.optimizer is not None:
                self.optimizer = optimizers_mod.rebuild(self.optimizer)
        self._compiled = {}
        return self

    # ----------------------------------------------------------------- pure functions
    def apply(
        self, params: Params, state: State, x: Array, *, train: bool = False, key: Any = None
    ):
        """Pure forward pass: ``(y, new_state, backprop)``.

        ``backprop(dy, input_grad=True) -> (dx, grads)`` chains the layers' hand-written
        vector-Jacobian products; ``grads`` mirrors ``params``.
        """
        backprops = []
        new_state = {}
        for i, layer in enumerate(self.layers):
            layer_key = fold_in(key, i) if key is not None and layer.uses_key else None
            x, s, back = layer.forward(
                params.get(layer.name, {}), state.get(layer.name, {}), x, train=train, key=layer_key
            )
            if s:
                new_state[layer.name] = s
            backprops.append((layer.name, back))

        def backprop(dy, input_grad=True):
            grads = {}
            for i in range(len(backprops) - 1, -1, -1):
                name, back = backprops[i]
                dy, g = back(dy, input_grad=input_grad or i > 0)
                if g:
                    grads[name] = g
            return dy, dict(reversed(grads.items()))  # in the params' order

        return x, new_state, backprop

    # ----------------------------------------------------------------- data handling
    def _input(self, x: Any, what: str = "x") -> Array:
        """``x`` as an array of the active backend in the model's dtype; builds lazily."""
        backend = get_backend()
        if isinstance(x, np.ndarray) or not hasattr(x, "shape"):
            host = np.asarray(x)
            if not (np.issubdtype(host.dtype, np.number) or host.dtype == np.bool_):
                raise ValueError(f"{what} must be numeric, got dtype {host.dtype}")
            if not self.built:
                self.build(host.shape)
            self._active()
            return backend.asarray(host, dtype=self.dtype)
        self._check_array(x, what, backend)
        if not self.built:
            self.build(tuple(x.shape))
        self._active()
        return backend.xp.astype(x, backend.dtype(self.dtype))

    def _labels(self, y: Any, n: int, loss: losses_mod.Loss, what: str = "y") -> Array:
        host = np.asarray(to_numpy(y) if hasattr(y, "shape") else y)
        if host.ndim == 0 or host.shape[0] != n:
            raise ValueError(f"{what} must have {n} rows like x, got shape {host.shape}")
        host = loss.check((n, *self._shapes[-1][1:]), host)
        return get_backend().asarray(host, dtype=loss.label_dtype(host, self.dtype))

    @staticmethod
    def _finite(host: np.ndarray, what: str) -> None:
        if np.issubdtype(host.dtype, np.floating) and not np.isfinite(host).all():
            bad = np.argwhere(~np.isfinite(host))[0]
            raise ValueError(
                f"{what} contains NaN or inf (first at index {tuple(int(i) for i in bad)}); "
                "clean the data before training"
            )

    def _compiled_fn(self, kind: str, *args: Any) -> Any:
        key = (kind, *args)
        if key not in self._compiled:
            if kind == "train":
                self._compiled[key] = make_train_step(self, *args[:2], metrics=args[2])
            elif kind == "eval":
                self._compiled[key] = make_eval_step(self, args[0], metrics=args[1])
            elif kind == "grad":
                self._compiled[key] = get_backend().jit(make_grad_fn(self, args[0]))
            else:
                self._compiled[key] = get_backend().jit(
                    lambda p, s, x: self.apply(p, s, x, train=False)[0]
                )
        return self._compiled[key]

    # ----------------------------------------------------------------- Keras-like API
    def compile(self, optimizer: Any = "adam", loss: Any = "softmax_cross_entropy") -> Sequential:
        """Set the optimizer and loss that ``fit`` and ``evaluate`` use by default."""
        self.loss = losses_mod.get(loss)
        self.optimizer = optimizers_mod.get(optimizer)
        self.opt_state = None
        return self

    def predict(self, x: Any, *, batch_size: int | None = None) -> Array:
        """Outputs in inference mode, as an array of the active backend."""
        x = self._input(x)
        fn = self._compiled_fn("predict")
        if batch_size is None or batch_size >= x.shape[0]:
            return fn(self._params, self._state, x)
        xp = array_namespace(x)
        parts = [
            fn(self._params, self._state, x[i : i + batch_size])
            for i in range(0, x.shape[0], batch_size)
        ]
        return xp.concat(parts, axis=0)

    __call__ = predict

    def value_and_grad(
        self, x: Any, y: Any, *, loss: Any = None, key: Any = None
    ) -> tuple[Array, Grads]:
        """Mean loss on ``(x, y)`` in training mode and its gradient w.r.t. every param.

        Args:
          x, y: inputs and labels.
          loss: name or :class:`~wframe.losses.Loss`; default: the compiled one.
          key: array key (:func:`wframe.random.array_key`) for stochastic layers such as
            Dropout; default: the key the next ``fit`` step would use.

        Returns:
          ``(loss, grads)``, ``grads`` a dict shaped like ``params``.
        """
        loss = losses_mod.get(loss) if loss is not None else self.loss
        x = self._input(x)
        y = self._labels(y, x.shape[0], loss)
        if key is None and any(layer.uses_key for layer in self.layers):
            key = array_key(self.seed, self._steps)
        value, grads, _, _ = self._compiled_fn("grad", loss)(self._params, self._state, x, y, key)
        return value, grads

    def evaluate(
        self, x: Any, y: Any, *, batch_size: int | None = None, loss: Any = None
    ) -> dict[str, float]:
        """Mean loss (and accuracy for classification losses) in inference mode."""
        loss = losses_mod.get(loss) if loss is not None else self.loss
        x = self._input(x)
        return self._evaluate(x, self._labels(y, x.shape[0], loss), loss, batch_size)

    def _evaluate(self, x: Array, y: Array, loss: losses_mod.Loss, batch_size: int | None):
        """:meth:`evaluate` on inputs and labels already checked and on the backend."""
        metrics = (loss.metric,) if loss.metric else ()
        step = self._compiled_fn("eval", loss, metrics)
        n = x.shape[0]
        size = batch_size or n
        totals: dict[str, float] = {}
        for i in range(0, n, size):
            logs = step(self._params, self._state, x[i : i + size], y[i : i + size])
            weight = min(size, n - i) / n
            for k, v in logs.items():
                totals[k] = totals.get(k, 0.0) + float(to_numpy(v)) * weight
        return totals

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
        shuffle: bool = True,
        seed: int | None = None,
        verbose: int = 1,
    ) -> History:
        """Train with mini-batches; returns a :class:`~wframe.training.History`.

        Args:
          x, y: training inputs and labels (NumPy arrays or arrays of the active backend).
          epochs: passes over the data.
          batch_size: examples per step; the last partial batch is kept.
          optimizer: name or ``(init, update)`` transformation; default: the compiled one or
            ``"adam"``. Its state carries over to the next ``fit`` while the optimizer is the same.
          loss: name or :class:`~wframe.losses.Loss`; default: the compiled one
            (``softmax_cross_entropy``).
          validation_data: ``(x_val, y_val)`` evaluated after each epoch (``val_`` logs).
          shuffle: reshuffle the examples each epoch, from ``seed`` (default: the model seed).
          verbose: 0 silent, 1 a progress bar per epoch.
        """
        if not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"fit: epochs must be a non-negative int, got {epochs!r}")
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"fit: batch_size must be a positive int, got {batch_size!r}")
        if loss is not None:
            self.loss = losses_mod.get(loss)
        if optimizer is not None:
            optimizer = optimizers_mod.get(optimizer)
            if optimizer is not self.optimizer:
                self.optimizer, self.opt_state = optimizer, None
        elif self.optimizer is None:
            self.optimizer = optimizers_mod.get("adam")
        for data, what in ((x, "x"), (y, "y")):
            if isinstance(data, np.ndarray) or not hasattr(data, "shape"):
                self._finite(np.asarray(data), f"fit: {what}")
        x = self._input(x)
        n = x.shape[0]
        if n == 0:
            raise ValueError(f"fit: x has no examples (shape {tuple(x.shape)})")
        y = self._labels(y, n, self.loss)
        if validation_data is not None:
            for data, what in zip(validation_data, ("x_val", "y_val"), strict=True):
                if isinstance(data, np.ndarray) or not hasattr(data, "shape"):
                    self._finite(np.asarray(data), f"fit: {what}")
            # Checked and moved once, not at every epoch.
            x_val = self._input(validation_data[0], "x_val")
            y_val = self._labels(validation_data[1], x_val.shape[0], self.loss, "y_val")
        if self.opt_state is None:
            self.opt_state = self.optimizer.init(self._params)

        backend = get_backend()
        xp = backend.xp
        metrics = (self.loss.metric,) if self.loss.metric else ()
        step = self._compiled_fn("train", self.loss, self.optimizer, metrics)
        train_state = TrainState(self._params, self._state, self.opt_state)
        history = History()
        seed = self.seed if seed is None else seed
        stochastic = any(layer.uses_key for layer in self.layers)
        global_step = self._steps
        steps = math.ceil(n / batch_size)
        for epoch in range(epochs):
            # The weights a non-finite loss rolls back to; a copy, since the step donates its
            # input state on JAX.
            start = tree_map(lambda a: xp.asarray(a, copy=True), train_state)
            order = (
                generator(fold_in(seed, epoch + self._epochs)).permutation(n)
                if shuffle
                else np.arange(n)
            )
            batches = []
            bar = tqdm(
                range(steps), desc=f"epoch {epoch + 1}/{epochs}", disable=verbose == 0, leave=True
            )
            for b in bar:
                idx = backend.asarray(order[b * batch_size : (b + 1) * batch_size])
                xb, yb = xp.take(x, idx, axis=0), xp.take(y, idx, axis=0)
                key = array_key(seed, global_step) if stochastic else None
                train_state, logs = step(train_state, xb, yb, key)
                global_step += 1
                batches.append((xb.shape[0], logs))
                if verbose and (b % 10 == 0 or b == steps - 1):
                    bar.set_postfix({k: f"{float(to_numpy(v)):.4f}" for k, v in logs.items()})
            # Expose the weights before validation so evaluate sees the new ones.
            self._params, self._state, self.opt_state = train_state
            epoch_logs = {
                k: sum(size * float(to_numpy(logs[k])) for size, logs in batches) / n
                for k in batches[0][1]
            }
            losses = [float(to_numpy(logs["loss"])) for _, logs in batches]
            if not all(map(math.isfinite, losses)):
                bad = next(i for i, v in enumerate(losses) if not math.isfinite(v))
                self._params, self._state, self.opt_state = start
                warnings.warn(
                    f"fit: the loss became {losses[bad]} at step {global_step - steps + bad + 1} "
                    f"(epoch {epoch + 1}, batch {bad + 1}); training stopped and the weights are "
                    f"back to those at the start of epoch {epoch + 1}, the last with finite "
                    "losses. Lower the learning rate, clip gradients or check the data.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                break
            if validation_data is not None:
                val = self._evaluate(x_val, y_val, self.loss, max(batch_size, 256))
                epoch_logs.update({f"val_{k}": v for k, v in val.items()})
            if verbose:
                bar.write(
                    f"epoch {epoch + 1}/{epochs}: "
                    + " - ".join(f"{k}: {v:.4f}" for k, v in epoch_logs.items())
                )
            history.append(epoch, epoch_logs)
            self._steps, self._epochs = global_step, self._epochs + 1
        return history

    # ----------------------------------------------------------------- reporting
    def count_params(self) -> int:
        """Total number of parameters."""
        return sum(math.prod(a.shape) for _, a in flatten(self.params))

    def summary(self, print_fn=print) -> str:
        """Print (and return) a table of layers, output shapes and parameter counts."""
        self._require_built()
        rows = [("Layer (type)", "Output shape", "Params")]
        for layer, shape in zip(self.layers, self._shapes, strict=True):
            count = sum(math.prod(a.shape) for _, a in flatten(self._params.get(layer.name, {})))
            rows.append((f"{layer.name} ({type(layer).__name__})", str(shape), f"{count:,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        line = "-" * (sum(widths) + 6)
        fmt = [f"{r[0]:<{widths[0]}}   {r[1]:<{widths[1]}}   {r[2]:>{widths[2]}}" for r in rows]
        total = self.count_params()
        state = sum(math.prod(a.shape) for _, a in flatten(self._state))
        text = "\n".join(
            [
                line,
                fmt[0],
                line,
                *fmt[1:],
                line,
                f"Total params: {total:,} ({self.dtype}, backend {self._backend.name})"
                + (f"; non-trainable state: {state:,}" if state else ""),
                line,
            ]
        )
        print_fn(text)
        return text
