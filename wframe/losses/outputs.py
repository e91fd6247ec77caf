"""The loss of a model of several outputs: a loss per output, their weighted sum."""

from __future__ import annotations

from dataclasses import dataclass

from wframe.losses.base import Loss
from wframe.losses.registry import get


@dataclass(frozen=True)
class Outputs(Loss):
    """The loss of a model of several outputs: a loss per output, their weighted sum.

    Predictions and labels are tuples in the order of ``names``. The logs add each output's
    (unweighted) loss and metric as Keras names them: ``"<output>_loss"``,
    ``"<output>_accuracy"``.

    Args:
      losses: a :class:`Loss` per output.
      names: the outputs' names.
      weights: a weight per output (Keras' ``loss_weights``).
      metric: unused here: each output's loss logs its own metric.
    """

    losses: tuple = ()
    names: tuple = ()
    weights: tuple = ()
    name = "loss"

    def __call__(self, preds, labels, sample_weight=None):
        """``(weighted sum of the outputs' losses, a gradient per output)``; ``sample_weight``
        is one array for every output, or a tuple of one (array or ``None``) per output."""
        total, grads = 0.0, []
        weights = self.sample_weights(sample_weight)
        parts = zip(self.losses, self.weights, preds, labels, weights, strict=True)
        for loss, w, p, y, sw in parts:
            value, grad = loss(p, y) if sw is None else loss(p, y, sw)
            total = total + (value if w == 1 else w * value)
            grads.append(grad if w == 1 else grad * w)
        return total, tuple(grads)

    def sample_weights(self, sample_weight) -> tuple:
        """One sample weight (or ``None``) per output from ``None``, one array for all, or a
        tuple/list of one per output."""
        if not isinstance(sample_weight, (tuple, list)):
            return (sample_weight,) * len(self.losses)
        if len(sample_weight) != len(self.losses):
            raise ValueError(
                f"sample_weight: {len(sample_weight)} entries for the model's "
                f"{len(self.losses)} outputs {list(self.names)}; give one array for all "
                "outputs, or one (array or None) per output"
            )
        return tuple(sample_weight)

    @property
    def needs_autodiff(self) -> bool:  # type: ignore[override]
        return any(loss.needs_autodiff for loss in self.losses)

    def check(self, pred_shape, labels):
        return tuple(
            loss.check(shape, y)
            for loss, shape, y in zip(self.losses, pred_shape, labels, strict=True)
        )

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(
            f"{name}_{what}"
            for name, loss in zip(self.names, self.losses, strict=True)
            for what in ("loss", *loss.metric_names)
        )

    def metric_fn(self, name: str):
        for i, (out, loss) in enumerate(zip(self.names, self.losses, strict=True)):
            if name == f"{out}_loss":
                return lambda p, y, i=i, loss=loss: loss(p[i], y[i])[0]
            for metric in loss.metric_names:
                if name == f"{out}_{metric}":
                    fn = loss.metric_fn(metric)
                    return lambda p, y, i=i, fn=fn: fn(p[i], y[i])
        raise KeyError(name)

    @classmethod
    def of(cls, loss, names: tuple[str, ...], weights=None) -> Outputs:
        """The loss of outputs ``names`` from Keras' ``compile`` arguments: one loss for every
        output, a list (in output order) or a dict by output name; ``weights`` likewise."""
        if isinstance(loss, Outputs):
            return (
                loss
                if weights is None
                else cls(
                    losses=loss.losses,
                    names=names,
                    weights=_per_output(weights, names, "loss_weights", float),
                )
            )
        losses = _per_output(loss, names, "loss", get, broadcast=True)
        w = (
            (1.0,) * len(names)
            if weights is None
            else _per_output(weights, names, "loss_weights", float)
        )
        return cls(losses=losses, names=tuple(names), weights=w)


def _per_output(value, names, what, convert, broadcast=False) -> tuple:
    """One ``convert``-ed entry per output from a dict by name, a list in order, or (with
    ``broadcast``) one value for all."""
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(names))
        missing = [n for n in names if n not in value]
        if unknown or missing:
            raise ValueError(
                f"{what}: the dict names outputs {sorted(value)}, the model's outputs are "
                f"{list(names)} (missing {missing}, unknown {unknown})"
            )
        return tuple(convert(value[n]) for n in names)
    if isinstance(value, (list, tuple)):
        if len(value) != len(names):
            raise ValueError(
                f"{what}: a list of {len(value)} for the model's {len(names)} outputs "
                f"{list(names)}; give one per output, or a dict by output name"
            )
        return tuple(convert(v) for v in value)
    if broadcast:
        return (convert(value),) * len(names)
    raise TypeError(f"{what} must be a list or a dict by output name {list(names)}, got {value!r}")
