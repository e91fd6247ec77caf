"""What a model takes and gives: its inputs and labels checked and moved to its backend (one
array, or one per named input and output), the loss of its outputs, its inference batch size.

:class:`Inputs` is the layer of :class:`wframe.Model` between the arrays it holds
(:class:`~wframe.model.arrays.Holder`) and the calls that run them (:mod:`wframe.model.base`).
Subclasses name their inputs and outputs (``input_names``, ``input_dtypes``, ``output_names``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from wframe import data, data_rows, training
from wframe import losses as losses_mod
from wframe.backends import to_numpy
from wframe.model import summary as summary_mod
from wframe.model.arrays import Holder
from wframe.model.device_copies import DEVICE_COPIES
from wframe.types import Weighted


class Inputs(Holder):
    """Data checks per named input and output, and the loss of the outputs."""

    def prepare_inputs(self, x: Any, what: str = "x", *, finite: bool = False) -> Any:
        """``x`` checked (shape, dtype, and with ``finite`` NaN/inf) and on the model's backend
        in its dtype (integer inputs as ``int32``); an unbuilt model is built for ``x``'s shape
        first. A model of several inputs takes a list (in input order) or a dict by input name
        and gives a tuple."""
        parts = data_rows.per_name(x, self.input_names, what, "input")
        if not self.built:
            shape = data.shape_of(parts[0], what)
            if len(shape) < 2:
                raise ValueError(
                    f"{what} must have a batch axis and at least one feature axis, got shape "
                    f"{shape}; for one feature per example use {what}[:, None]"
                )
            self.build((None, *shape[1:]))
        named = len(parts) > 1
        out = tuple(
            data.inputs(
                part,
                self._backend,
                dtype or self.dtype,
                f"{what}[{name!r}]" if named else what,
                finite=finite,
                put=self._put,
            )
            for part, name, dtype in zip(parts, self.input_names, self.input_dtypes, strict=True)
        )
        data_rows.same_rows(out, self.input_names, what)
        return out if named else out[0]

    def prepare_labels(
        self,
        y: Any,
        n: int,
        loss: losses_mod.Loss,
        what: str = "y",
        *,
        sample_weight: Any = None,
        class_weight: dict | None = None,
    ) -> Any:
        """``y`` checked against ``n`` examples, the output shape and ``loss``, on the backend
        (a tuple for several outputs, from a list in output order or a dict by output name).

        With ``sample_weight`` (an array of ``n`` weights; for several outputs one array for
        all, a list or a dict by output name) or ``class_weight`` (``{class: weight}``, each
        example weighted by its label's class, 1 for classes it omits; both: their product, as
        Keras), a :class:`~wframe.types.Weighted` pair of the labels and the weights."""
        names = self.output_names
        if not isinstance(loss, losses_mod.Outputs):
            y = data_rows.per_name(y, names, what, "output")[0]
            weights = _example_weights(y, n, sample_weight, class_weight, what)
            y = data.labels(
                y, n, self.output_shape, loss, self._backend, self.dtype, what, self._put
            )
            return y if weights is None else Weighted(y, self._float(weights))
        parts = data_rows.per_name(y, names, what, "output")
        labels = tuple(
            data.labels(
                part, n, shape, one, self._backend, self.dtype, f"{what}[{name!r}]", self._put
            )
            for part, shape, one, name in zip(
                parts, self.output_shape, loss.losses, names, strict=True
            )
        )
        if class_weight is not None:
            raise ValueError(
                f"class_weight weighs the classes of one output; this model has {len(names)} "
                f"outputs {list(names)}: pass sample_weight per output (a dict by output name)"
            )
        if sample_weight is None:
            return labels
        if isinstance(sample_weight, (dict, list, tuple)):
            per = data_rows.per_name(sample_weight, names, "sample_weight", "output")
            weights = tuple(
                self._float(_example_weights(part, n, w, None, f"{what}[{name!r}]"))
                for part, w, name in zip(parts, per, names, strict=True)
            )
        else:
            weights = self._float(_example_weights(parts[0], n, sample_weight, None, what))
        return Weighted(labels, weights)

    def fit_data(
        self, x: Any, y: Any, loss: Any, validation_data: Any, split: Any, weights: dict
    ) -> tuple:
        """``fit``'s ``(x, y, (x_val, y_val) or None)`` checked and on the backend (the model
        built); ``weights`` holds ``sample_weight`` and ``class_weight`` (``y`` then
        :class:`~wframe.types.Weighted`; a held-out split keeps its rows' sample weights and a
        ``validation_data`` triple its own)."""
        validation, sample_weight = None, weights["sample_weight"]
        if validation_data is not None:
            if isinstance(validation_data, (tuple, list)) and len(validation_data) == 3:
                validation = tuple(validation_data)
            else:
                validation = (*data.pair(validation_data, "fit: validation_data"), None)
        elif split:
            x, y, (x_val, y_val) = data_rows.split(x, y, split)
            w_val = None
            if sample_weight is not None and not isinstance(sample_weight, (dict, list)):
                cut = data_rows.rows(x)
                sample_weight, w_val = sample_weight[:cut], sample_weight[cut:]
            validation = (x_val, y_val, w_val)
        x = self.prepare_inputs(x, finite=True)
        if data_rows.rows(x) == 0:
            raise ValueError("fit: x has no examples")
        y = self.prepare_labels(
            y, data_rows.rows(x), loss, **{**weights, "sample_weight": sample_weight}
        )
        if validation is not None:  # checked and moved once, not at every epoch
            x_val = self.prepare_inputs(validation[0], "x_val", finite=True)
            data_rows.require_examples(x_val, "fit: validation_data", _NO_VALIDATION)
            y_val = self.prepare_labels(
                validation[1], data_rows.rows(x_val), loss, "y_val", sample_weight=validation[2]
            )
            validation = (x_val, y_val)
        return x, y, validation

    def _put(self, host: np.ndarray, dtype: Any) -> Any:
        """Checked NumPy data on the backend: a copy moved by an earlier call of the same bits
        where there is one (:mod:`wframe.model.device_copies`), else moved now."""
        return DEVICE_COPIES.put(self._backend, host, dtype)

    def _float(self, weights: np.ndarray) -> Any:
        return self._backend.asarray(weights, dtype=self.dtype)

    def tracker(self, loss: losses_mod.Loss) -> Any:
        """What ``fit``/``evaluate`` log after ``loss``: ``compile(metrics=...)`` (default: the
        loss's accuracy for classification) for this model's outputs."""
        return training.Tracker.of(loss, self.compiled_metrics, self.output_names)

    def resolve_loss(self, loss: Any, loss_weights: Any = None) -> losses_mod.Loss:
        """The loss ``loss`` names for this model's outputs: for several outputs a
        :class:`~wframe.losses.Outputs` (one loss for all, a list or a dict by output name,
        weighted by ``loss_weights``), else the one loss."""
        names = self.output_names
        if len(names) == 1 and loss_weights is None and not isinstance(loss, (list, dict)):
            return losses_mod.get(loss)
        if len(names) == 1 and loss_weights is None:  # [loss] or {name: loss}
            return losses_mod.Outputs.of(loss, names).losses[0]
        return losses_mod.Outputs.of(loss, names, loss_weights)

    def default_batch_size(self, n: int) -> int:
        """The inference batch for ``n`` examples: as many as keep activations near 4M
        elements (from the widest activation of one example)."""
        widest = self.trainer.memo(("widest",), self._widest)
        return data.default_batch(widest, n)

    def _widest(self) -> int:
        shapes = [self.input_shape, *(row[2] for row in summary_mod.layer_rows(self))]
        flat = [t for s in shapes for t in (s if s and isinstance(s[0], tuple) else (s,))]
        return max(math.prod(d or 1 for d in s[1:]) for s in flat)


#: What to do about empty validation data (``fit`` would log nothing for it).
_NO_VALIDATION = "pass at least one example, or leave validation_data out"


def _example_weights(
    y: Any, n: int, sample_weight: Any, class_weight: dict | None, what: str
) -> np.ndarray | None:
    """The host weights of ``n`` examples: ``sample_weight`` times the class weights of the
    labels ``y`` (Keras' ``class_weight_to_sample_weights``), or ``None`` for neither."""
    if sample_weight is None and class_weight is None:
        return None
    w = None
    if sample_weight is not None:
        w = _host(sample_weight, "sample_weight")
        data.refuse_complex(w.dtype, "sample_weight")
        w = w.astype(np.float64)
        if w.ndim == 0 or w.shape[0] != n:
            raise ValueError(
                f"sample_weight must hold one weight per example of {what} ({n}), got shape "
                f"{w.shape}"
            )
        if w.ndim == 2 and w.shape[1] == 1:
            w = w[:, 0]
        data.check_finite(w, "sample_weight")
    if class_weight is not None:
        cw = _class_weights(class_weight, _host(y, what), what)
        w = cw if w is None else w * cw.reshape(cw.shape + (1,) * (w.ndim - 1))
    return w


def _host(a: Any, what: str) -> np.ndarray:
    """``a`` on the host: converted once from torch, pandas or a backend's array."""
    a = data.host_array(a, what)
    return to_numpy(a) if hasattr(a, "shape") and not isinstance(a, np.ndarray) else np.asarray(a)


def _class_weights(class_weight: Any, y: np.ndarray, what: str) -> np.ndarray:
    """Each example's class weight: its label's class (the argmax of a one-hot row, a binary
    label rounded), 1 for a class ``class_weight`` does not name."""
    if not isinstance(class_weight, dict):
        raise TypeError(
            "class_weight must be a dict {class index: weight}, got "
            f"{type(class_weight).__name__}"
        )
    bad = [k for k in class_weight if not isinstance(k, (int, np.integer)) or k < 0]
    if bad:
        raise ValueError(f"class_weight keys must be class indices (ints >= 0), got {bad}")
    if y.ndim > 1:
        y = np.argmax(y, axis=-1) if y.shape[-1] != 1 else y[..., 0]
    if y.ndim != 1:
        raise ValueError(
            f"class_weight needs one class per example; {what} has shape {y.shape}: weigh "
            "positions with sample_weight instead"
        )
    ids = np.round(y).astype(np.int64)
    table = np.ones(max(int(ids.max(initial=0)), *class_weight) + 1)
    for k, v in class_weight.items():
        table[int(k)] = float(v)
    return table[np.clip(ids, 0, None)]
