"""What a step logs after its loss: each output's loss (a model of several outputs) and each
metric's statistics, under the names Keras gives them.

A metric logs additive statistics (:class:`wframe.metrics.Metric`): a step adds them to the
epoch's running sums on the device, and the host turns the sums into the metric only where a
reading is logged. An output's loss is a mean, summed weighted by the batch size as the loss is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wframe import losses as losses_mod
from wframe import metrics as metrics_mod
from wframe.types import Weighted


@dataclass(frozen=True)
class Entry:
    """One logged name: a metric of output ``output`` (``None``: the model's only output), or
    with ``metric=None`` that output's loss."""

    name: str
    output: int | None = None
    metric: Any = None


def unweighted(y: Any) -> tuple[Any, Any]:
    """``(labels, sample weights or None)`` of a step's ``y``."""
    return (y.labels, y.weights) if isinstance(y, Weighted) else (y, None)


def _nth(w: Any, i: int | None) -> Any:
    """Output ``i``'s weights: one array serves every output, a tuple has one per output."""
    return w[i] if isinstance(w, tuple) and i is not None else w


@dataclass(frozen=True)
class Tracker:
    """The entries a step logs after ``loss``, in order (hashable: compiled functions are
    cached by it).

    Args:
      entries: the :class:`Entry` of each logged name, in log order (for a model of several
        outputs, output by output: its loss, then its metrics); build them with :meth:`of`.
    """

    entries: tuple[Entry, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.entries)

    @property
    def metrics(self) -> dict[str, Any]:
        """The entries whose sums are statistics, by name (the others are means)."""
        return {e.name: e.metric for e in self.entries if e.metric is not None}

    def values(self, loss: losses_mod.Loss, pred: Any, y: Any) -> list:
        """Each entry's value on one batch: a loss (a scalar mean) or a metric's statistics."""
        labels, w = unweighted(y)
        out = []
        for e in self.entries:
            i = e.output
            p, t, sw = (pred, labels, w) if i is None else (pred[i], labels[i], _nth(w, i))
            if e.metric is not None:
                out.append(e.metric.stats(p, t, sw))
            else:
                out.append(loss.losses[i].value(p, t, sw))
        return out

    @classmethod
    def of(cls, loss: losses_mod.Loss, metrics: Any, names: tuple[str, ...]) -> Tracker:
        """The entries of ``compile(metrics=...)`` for outputs ``names`` under ``loss``.

        ``metrics`` as Keras takes it: ``None`` (the loss's default: accuracy for a
        classification loss), a list applied to every output, a list of lists (one per
        output) or a dict by output name. Several outputs log ``<output>_loss`` and
        ``<output>_<metric>``.
        """
        if not isinstance(loss, losses_mod.Outputs):
            got = _metric_list(metrics, loss, names[0] if len(names) == 1 else None)
            return cls._unique(tuple(Entry(m.name, None, m) for m in got))
        per = _per_output(metrics, names)
        entries = []
        for i, (name, one) in enumerate(zip(names, loss.losses, strict=True)):
            entries.append(Entry(f"{name}_loss", i))
            entries += [Entry(f"{name}_{m.name}", i, m) for m in _metric_list(per[i], one)]
        return cls._unique(tuple(entries))

    @classmethod
    def _unique(cls, entries: tuple[Entry, ...]) -> Tracker:
        names = [e.name for e in entries]
        twice = sorted({n for n in names if names.count(n) > 1} | ({"loss"} & set(names)))
        if twice:
            raise ValueError(
                f"metrics: the names {twice} would be logged twice (or shadow the loss); give "
                "the metric objects distinct names, e.g. wf.metrics.AUC(name='auc_2')"
            )
        return cls(entries)


#: Nothing logged after the loss.
NOTHING = Tracker()


def _metric_list(metrics: Any, loss: losses_mod.Loss, output: str | None = None) -> tuple:
    """The metrics of one output: the loss's default for ``None``, else each looked up."""
    if metrics is None:
        return tuple(metrics_mod.default_for(loss))
    if isinstance(metrics, dict) and output is not None and set(metrics) == {output}:
        metrics = metrics[output]  # a one-output model given {output_name: metrics}
    if isinstance(metrics, dict):
        raise TypeError(
            f"metrics: a dict by output name for a model of one output; give a list, e.g. "
            f"metrics=['accuracy'] (got keys {sorted(metrics)})"
        )
    items = metrics if isinstance(metrics, (list, tuple)) else [metrics]
    return tuple(metrics_mod.get(m, loss) for m in items)


def _per_output(metrics: Any, names: tuple[str, ...]) -> list:
    """One entry (``None``, a metric or a list) per output from Keras' forms."""
    if metrics is None:
        return [None] * len(names)
    if isinstance(metrics, dict):
        unknown = sorted(set(metrics) - set(names))
        if unknown:
            raise ValueError(
                f"metrics: the dict names outputs {unknown} the model does not have; its "
                f"outputs are {list(names)}"
            )
        return [metrics.get(n, []) for n in names]
    items = list(metrics) if isinstance(metrics, (list, tuple)) else [metrics]
    if items and all(isinstance(m, (list, tuple)) for m in items):
        if len(items) != len(names):
            raise ValueError(
                f"metrics: {len(items)} lists for the model's {len(names)} outputs "
                f"{list(names)}; give one list per output, or a dict by output name"
            )
        return items
    return [items] * len(names)  # a flat list: every output logs each
