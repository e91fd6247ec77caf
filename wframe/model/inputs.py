"""What a model takes and gives: its inputs and labels checked and moved to its backend (one
array, or one per named input and output), the loss of its outputs, its inference batch size.

:class:`Inputs` is the layer of :class:`wframe.Model` between the arrays it holds
(:class:`~wframe.model.arrays.Holder`) and the calls that run them (:mod:`wframe.model.base`).
Subclasses name their inputs and outputs (``input_names``, ``input_dtypes``, ``output_names``).
"""

from __future__ import annotations

import math
from typing import Any

from wframe import data
from wframe import losses as losses_mod
from wframe.model import summary as summary_mod
from wframe.model.arrays import Holder


class Inputs(Holder):
    """Data checks per named input and output, and the loss of the outputs."""

    def prepare_inputs(self, x: Any, what: str = "x", *, finite: bool = False) -> Any:
        """``x`` checked (shape, dtype, and with ``finite`` NaN/inf) and on the model's backend
        in its dtype (integer inputs as ``int32``); an unbuilt model is built for ``x``'s shape
        first. A model of several inputs takes a list (in input order) or a dict by input name
        and gives a tuple."""
        parts = data.per_name(x, self.input_names, what, "input")
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
            )
            for part, name, dtype in zip(parts, self.input_names, self.input_dtypes, strict=True)
        )
        data.same_rows(out, self.input_names, what)
        return out if named else out[0]

    def prepare_labels(self, y: Any, n: int, loss: losses_mod.Loss, what: str = "y") -> Any:
        """``y`` checked against ``n`` examples, the output shape and ``loss``, on the backend
        (a tuple for several outputs, from a list in output order or a dict by output name)."""
        names = self.output_names
        if not isinstance(loss, losses_mod.Outputs):
            y = data.per_name(y, names, what, "output")[0]
            return data.labels(y, n, self.output_shape, loss, self._backend, self.dtype, what)
        parts = data.per_name(y, names, what, "output")
        return tuple(
            data.labels(part, n, shape, one, self._backend, self.dtype, f"{what}[{name!r}]")
            for part, shape, one, name in zip(
                parts, self.output_shape, loss.losses, names, strict=True
            )
        )

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
