"""Hinge losses (Keras' ``hinge`` and ``squared_hinge``) with hand-written gradients."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wframe.backends import kinks
from wframe.losses.base import Reduced


def _signs(xp, labels):
    """Labels as -1/1: a batch of labels all in {0, 1} is mapped with 2y - 1, as Keras does
    (on the device: no host read, no branch); labels already -1/1 are kept."""
    binary = xp.all((labels == 0) | (labels == 1))
    return xp.where(binary, 2 * labels - 1, labels)


@dataclass(frozen=True)
class Hinge(Reduced):
    """Keras' ``hinge``: the mean of ``max(1 - y * pred, 0)`` with labels ``y`` in {-1, 1}
    (labels in {0, 1} are converted to -1/1). The predictions are raw scores (no activation).

    Args:
      metric: a metric logged beside the loss in ``fit``/``evaluate``: ``"accuracy"``,
        ``"probability_accuracy"`` or ``None`` (default, none).
    """

    name = "hinge"

    def check(self, pred_shape, labels):
        labels = super().check(pred_shape, labels)
        signs = np.all((labels == -1) | (labels == 1))
        if labels.size and not (signs or np.all((labels == 0) | (labels == 1))):
            raise ValueError(
                f"loss '{self.name}' expects labels in {{-1, 1}} (or {{0, 1}}, converted to "
                f"-1/1 as Keras does), got values in [{labels.min()}, {labels.max()}]"
            )
        return labels

    def terms(self, xp, pred, labels, scale):
        t = _signs(xp, labels)
        margin = 1 - t * pred
        return kinks.maximum(margin, 0), -t * xp.astype(margin > 0, pred.dtype) * scale


@dataclass(frozen=True)
class SquaredHinge(Hinge):
    """Keras' ``squared_hinge``: the mean of ``max(1 - y * pred, 0)²`` (labels as for
    :class:`Hinge`).

    Args:
      metric: a metric logged beside the loss in ``fit``/``evaluate``: ``"accuracy"``,
        ``"probability_accuracy"`` or ``None`` (default, none).
    """

    name = "squared_hinge"

    def terms(self, xp, pred, labels, scale):
        t = _signs(xp, labels)
        m = xp.maximum(1 - t * pred, 0)
        return m * m, t * m * (-2 * scale)
