"""Type aliases used in public signatures, and the train state every layer above shares."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

Array = Any
"""An array of the active backend (numpy.ndarray, cupy.ndarray, jax.Array) or a tracer."""
Params = dict[str, Any]
"""Nested dict of arrays: ``{"dense_0": {"W": ..., "b": ...}}``."""
Grads = Params
State = Params
Shape = tuple[int | None, ...]
Key = int | np.random.SeedSequence
Namespace = Any


class TrainState(NamedTuple):
    """Everything a train step updates: the model's params and state, the optimizer's state,
    the pruning masks it keeps (``{"dense_0/W": 0/1 array}``, ``None`` for none) and the
    dynamic loss scale of a ``mixed_float16`` model (``None`` for the other policies; a step
    of :func:`wframe.make_train_step` starts one where it is missing).

    Attributes:
      params: the model's trainable arrays, a nested dict (``{"dense_0": {"W": ...}}``).
      state: the model's non-trainable arrays (BatchNorm's moving statistics), same form.
      opt_state: the optimizer's state (its ``init(params)``).
      masks: the pruning masks by flat name, or ``None`` for none.
      loss_scale: the dynamic loss scale (:class:`wframe.precision.LossScaleState`), or
        ``None``.
    """

    params: Params
    state: State
    opt_state: Any
    masks: dict[str, Any] | None = None
    loss_scale: Any = None


class Weighted(NamedTuple):
    """Labels with a weight per example (``fit(sample_weight=..., class_weight=...)``): what a
    train or eval step receives as ``y`` when the data are weighted. ``labels`` is one array or
    a tuple per output; ``weights`` an array of shape ``(N,)`` in the model's float dtype."""

    labels: Any
    weights: Any
