"""A check made before training starts: a softmax layer in front of a loss that applies
softmax itself."""

from __future__ import annotations

import warnings
from typing import Any

from wframe import losses as losses_mod
from wframe.layers import combinators


def warn_softmax_with_logits(model, loss: losses_mod.Loss) -> None:
    if not getattr(loss, "from_logits", False):
        return
    layer: Any = model
    while layer.children():
        if not isinstance(layer, combinators.Sequential):
            return
        layer = layer.layers[-1]
    activation = getattr(layer, "activation", None)
    if activation == "softmax" or getattr(activation, "__name__", None) == "softmax":
        warnings.warn(
            f"the model's last layer {layer.label} applies softmax, but loss '{loss.name}' "
            "expects logits and applies softmax itself (a double softmax trains badly). Remove "
            f"the activation, or pass loss=wf.losses.get('{loss.name}', from_logits=False)",
            UserWarning,
            stacklevel=3,
        )
