"""Keras' model methods over the arrays a model holds: its weights as lists
(``get_weights``/``set_weights``, ``weights``, ``trainable_weights``,
``non_trainable_weights``), calls on one batch (``train_on_batch``, ``test_on_batch``,
``predict_on_batch``) and a call in training mode (``model(x, training=True)``).

:class:`KerasMethods` is a base of :class:`wframe.Model`: it adds names Keras users reach for,
each running through what the model already has (``fit``, ``evaluate``, ``predict``, the
snapshot of one step), so nothing here trains, counts or checks in a second way.

**The order of the weights** is Keras': layer by layer, in the order of ``model.params``, each
layer's params then its state (BatchNorm: ``gamma``, ``beta``, ``mean``, ``var``, as Keras'
``gamma, beta, moving_mean, moving_variance``); a layer that holds only state comes after the
layers with params at its level. :meth:`KerasMethods.weight_names` gives the flat names in
that order.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from wframe import data, data_rows, training
from wframe.backends import resolve, to_numpy
from wframe.random import array_key, fold_in
from wframe.types import Array

#: One weight: ``(kind, flat name, array, trainable)``, ``kind`` ``"param"`` or ``"state"``.
Item = tuple[str, str, Array, bool]


class KerasMethods:
    """``get_weights``, ``set_weights``, the weight lists, the one-batch calls and the call in
    training mode of :class:`wframe.Model` (a base class; it holds nothing of its own but the
    count of calls in training mode, which draws their dropout masks)."""

    #: Calls in training mode so far: each draws new dropout masks, as Keras' do.
    _calls_in_training = 0

    # ----------------------------------------------------------------- weights as lists
    def _weight_items(self) -> list[Item]:
        """``(kind, flat name, array, trainable)`` of every param and state array, in Keras'
        order (see the module docstring); frozen params and state are not trainable. None
        before the model is built, as Keras' lists are empty then."""
        if not self.built:
            return []
        ts, frozen = self.train_state, self.frozen
        return _items(ts.params, ts.state, frozen, "")

    def weight_names(self) -> list[str]:
        """The flat names (``"dense_0/W"``, ``"batch_norm_0/mean"``) of :attr:`weights`, in
        its order: what each entry of ``get_weights()`` is."""
        return [name for _, name, _, _ in self._weight_items()]

    @property
    def weights(self) -> list[Array]:
        """Every param and state array (arrays of the model's backend), in Keras' order."""
        return [a for _, _, a, _ in self._weight_items()]

    @property
    def trainable_weights(self) -> list[Array]:
        """The params ``fit`` trains (all but the frozen ones), in :attr:`weights`' order."""
        return [a for _, _, a, trainable in self._weight_items() if trainable]

    @property
    def non_trainable_weights(self) -> list[Array]:
        """The frozen params and the state (BatchNorm statistics), in :attr:`weights`' order."""
        return [a for _, _, a, trainable in self._weight_items() if not trainable]

    def get_weights(self) -> list[np.ndarray]:
        """Copies of :attr:`weights` as NumPy arrays (of the model's dtype), in Keras' order:
        per layer its params then its state (:meth:`weight_names` names them)."""
        return [np.array(to_numpy(a)) for a in self.weights]

    def set_weights(self, weights: Any) -> None:
        """Set every param and state array from a list in :meth:`get_weights`' order.

        Each entry (a NumPy array, an array of any backend or anything ``np.asarray`` takes)
        must have the shape and dtype of the weight it replaces; the values are copied to the
        model's backend (the list stays the caller's) and replace the old ones in one
        assignment. The optimizer state and the counters stay, as in Keras.

        Raises:
          TypeError: ``weights`` is not a list or tuple.
          ValueError: a wrong count, or an entry of the wrong shape or dtype (named).
        """
        self.refuse_while_running("set_weights", own_thread_ok=True)
        self.require_built("set_weights")
        items = self._weight_items()
        if not isinstance(weights, (list, tuple)):
            raise TypeError(
                f"set_weights: {self.label} takes a list of arrays as get_weights() gives, got "
                f"{type(weights).__name__}"
            )
        if len(weights) != len(items):
            raise ValueError(
                f"set_weights: {self.label} has {len(items)} weights "
                f"({', '.join(n for _, n, _, _ in items)}), got a list of {len(weights)}; pass "
                "one array per weight in the order of model.get_weights() (model.weight_names())"
            )
        new: dict[str, dict[str, Any]] = {"param": {}, "state": {}}
        for i, ((kind, name, old, _), value) in enumerate(zip(items, weights, strict=True)):
            host = _host(value)
            want = (tuple(old.shape), str(old.dtype))
            if (host.shape, str(host.dtype)) != want:
                fix = f".astype({want[1]!r})" if host.shape == want[0] else "an array of that shape"
                raise ValueError(
                    f"set_weights: entry {i} ({kind} {name!r} of {self.label}) must have shape "
                    f"{want[0]} and dtype {want[1]}, got shape {host.shape} and dtype "
                    f"{host.dtype}; pass {fix} (model.weight_names() lists the order)"
                )
            new[kind][name] = self.backend.asarray(np.array(host))  # a copy: never the caller's
        ts = self.train_state
        arrays = ts._replace(
            params=_replaced(ts.params, new["param"], ""),
            state=_replaced(ts.state, new["state"], ""),
        )
        self.commit(arrays, steps=self.steps, epochs=self.epochs)

    # ----------------------------------------------------------------- one batch
    def train_on_batch(
        self,
        x: Any,
        y: Any = None,
        sample_weight: Any = None,
        class_weight: dict | None = None,
        return_dict: bool = False,
    ) -> float | list[float] | dict[str, float]:
        """One optimizer step on the batch ``(x, y)``, exactly as ``fit`` runs it.

        It is ``fit(x, y, batch_size=len(x), shuffle=False, verbose=0)`` over one epoch: the
        same compiled step, optimizer (the compiled one; ``"adam"`` if none) and state, the
        step counter (``model.steps`` grows by one; it picks the dropout masks) and the
        non-finite guard (a NaN or inf loss or gradient leaves the weights unchanged, with
        ``fit``'s ``RuntimeWarning``). Unlike ``fit`` it counts no epoch (``model.epochs``
        and so the next ``fit``'s shuffling are unchanged) and leaves ``model.history`` alone.

        Returns:
          As Keras: the loss alone when nothing else is logged, else ``[loss, *metrics]`` in
          log order; with ``return_dict`` the dict of logs (as ``fit`` logs them: the loss, the
          compiled metrics, ``penalty`` for regularizers). After a non-finite step each value
          is ``nan``.
        """
        n = self._batch_rows(x)
        epochs, history = self.epochs, self.history
        weights = {"sample_weight": sample_weight, "class_weight": class_weight}
        weights = {k: v for k, v in weights.items() if v is not None}
        try:
            ran = self.fit(
                x,
                y,
                batch_size=n,
                epochs=epochs + 1,
                initial_epoch=epochs,
                shuffle=False,
                verbose=0,
                **weights,
            )
        finally:
            self.history = history
        self.commit(self.train_state, steps=self.steps, epochs=epochs)  # no epoch counted
        logs = {k: v[-1] for k, v in ran.history.items()}
        if not logs:  # the step was non-finite (fit warned): no epoch was logged
            names = training.log_names(self, self.tracker(self.loss), None)
            logs = dict.fromkeys(names, math.nan)
        return logs if return_dict else keras_values(logs)

    def test_on_batch(
        self, x: Any, y: Any = None, sample_weight: Any = None, return_dict: bool = False
    ) -> float | list[float] | dict[str, float]:
        """The loss and metrics on one batch in inference mode: ``evaluate`` in one step,
        returned as Keras' ``test_on_batch`` returns them (as :meth:`train_on_batch`)."""
        n = self._batch_rows(x)
        weights = {} if sample_weight is None else {"sample_weight": sample_weight}
        logs = self.evaluate(x, y, batch_size=n, return_dict=True, **weights)
        return logs if return_dict else keras_values(logs)

    def predict_on_batch(self, x: Any) -> Any:
        """The outputs on one batch in inference mode, in one call (``predict`` with the batch
        as its only batch), as arrays of the model's backend as ``predict`` gives them."""
        return self.predict(x, batch_size=self._batch_rows(x))

    def _batch_rows(self, x: Any) -> int:
        parts = data_rows.per_name(x, self.input_names, "x", "input")
        return max(data.shape_of(parts[0], "x")[0], 1)

    # ----------------------------------------------------------------- training mode
    def call_training(self, x: Any, *, key: Any = None) -> Any:
        """The outputs on ``x`` in training mode, in one call: ``model(x, training=True)``.

        Dropout drops and BatchNorm normalizes with the batch's statistics. Each call draws
        new dropout masks (from the model's seed, its step count and a count of these calls,
        so a run repeats exactly), or those of ``key`` (:func:`wframe.random.array_key`).
        Unlike Keras, the BatchNorm moving statistics are **not** updated: a model's arrays
        change only by ``fit``, ``train_on_batch`` and the setters, so a call never races a
        ``predict`` in another thread (Monte Carlo dropout leaves the model as it was).

        Returns:
          The outputs as arrays of the model's backend (several outputs as ``predict``).
        """
        x = self.prepare_inputs(x)
        backend = self.backend
        if key is None and self.uses_key:
            calls = self._calls_in_training
            self._calls_in_training = calls + 1
            # Derived on the host and moved once (eager device ops cost ~50 us each).
            host = fold_in(array_key(self.seed, self.steps, resolve("numpy")), calls)
            key = backend.asarray(host)

        # The trainer's own model (array-less, shared by the architecture), not this one: a
        # memo closing over this model would keep its arrays alive.
        twin = self.trainer.model

        def forward(params, state, x, key):
            return twin.apply(params, state, x, train=True, key=key, vjp=False)[0]

        fn = self.trainer.memo(("call_training",), lambda: backend.jit(forward))
        arrays = self.train_state  # one step's arrays
        return self.format_outputs(fn(arrays.params, arrays.state, x, key))


def _items(params: dict, state: dict, frozen: frozenset[str], prefix: str) -> list[Item]:
    """The weights under one level of ``params`` and ``state``: per key, params first."""
    out: list[Item] = []
    for k in [*params, *(k for k in state if k not in params)]:
        name = f"{prefix}/{k}" if prefix else str(k)
        p, s = params.get(k), state.get(k)
        if isinstance(p, dict) or isinstance(s, dict):
            sub_p = p if isinstance(p, dict) else {}
            out += _items(sub_p, s if isinstance(s, dict) else {}, frozen, name)
            continue
        if p is not None:
            out.append(("param", name, p, name not in frozen))
        if s is not None:
            out.append(("state", name, s, False))
    return out


def _replaced(tree: dict, values: dict[str, Any], prefix: str) -> dict:
    """``tree`` with the leaves named in ``values`` (flat names) replaced."""
    out = {}
    for k, v in tree.items():
        name = f"{prefix}/{k}" if prefix else str(k)
        out[k] = _replaced(v, values, name) if isinstance(v, dict) else values.get(name, v)
    return out


def _host(value: Any) -> np.ndarray:
    """``value`` as a NumPy array (an array of any backend through the host)."""
    if hasattr(value, "shape") and not isinstance(value, np.ndarray):
        return to_numpy(value)
    return np.asarray(value)


def keras_values(logs: dict[str, float]) -> float | list[float]:
    """Keras' ``return_dict=False`` form of ``logs``: the loss alone, or ``[loss, *rest]``."""
    values = list(logs.values())
    return values[0] if len(values) == 1 else values
