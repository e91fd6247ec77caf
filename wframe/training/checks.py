"""Checks made before training starts: the output activation against the loss (a double
softmax or sigmoid, or logits fed to a loss that expects probabilities), and a loss that needs
autodiff on a backend without it."""

from __future__ import annotations

import warnings
from typing import Any

from wframe import losses as losses_mod
from wframe.layers import combinators
from wframe.layers.graph import Graph
from wframe.tree import tree_leaves

_PROBABILITY_LOSSES = (losses_mod.SoftmaxCrossEntropy, losses_mod.BinaryCrossEntropy)


def warn_softmax_with_logits(model: Any, loss: losses_mod.Loss) -> None:
    """Warn when an output's final activation and its loss disagree, naming the fix.

    A softmax or sigmoid output trained with a loss that expects logits (``from_logits=True``)
    squashes twice; a linear output trained with a cross-entropy that expects probabilities
    (``from_logits=False``, Keras' default for its names) is clipped into nonsense. The final
    layer is found through chains (``Sequential``) and graph models (their output layers).

    Args:
      model: the model (or root layer) whose output layers are checked.
      loss: the compiled loss; an :class:`~wframe.losses.Outputs` is matched to the outputs
        one by one (nothing is checked when the counts differ).
    """
    losses = loss.losses if isinstance(loss, losses_mod.Outputs) else (loss,)
    layers = output_layers(model)
    if len(layers) != len(losses):
        return
    for layer, one in zip(layers, losses, strict=True):
        message = None if layer is None else _mismatch(layer, one)
        if message:
            warnings.warn(message, UserWarning, stacklevel=4)  # at the user's fit call


def check_loss_backend(loss: losses_mod.Loss, backend: Any) -> None:
    """A ``TypeError`` before training when ``loss`` (or an output's loss) is a plain function
    that needs autodiff and ``backend`` has none (NumPy, CuPy).

    Args:
      loss: the compiled loss, or an :class:`~wframe.losses.Outputs` of one per output.
      backend: the model's backend (its ``has_autodiff``).
    """
    losses = loss.losses if isinstance(loss, losses_mod.Outputs) else (loss,)
    for one in losses:
        if one.needs_autodiff and not backend.has_autodiff:
            refusal = getattr(one, "refusal", None)
            raise TypeError(
                refusal(backend.name)
                if refusal
                else f"loss '{one.name}' needs autodiff, which the {backend.name} backend lacks"
            )


def output_layers(layer: Any) -> tuple:
    """The layer that computes each output of ``layer`` (``None`` where it is not one plain
    layer: a graph input, one entry of a layer's several outputs, a residual block, ...)."""
    if isinstance(layer, Graph):
        found: list = []
        for ref in layer.outputs:
            k = ref.value - len(layer.inputs)
            inner = () if k < 0 or ref.index is not None else output_layers(_node_layer(layer, k))
            found.append(inner[0] if len(inner) == 1 else None)
        return tuple(found)
    if isinstance(layer, combinators.Sequential):
        return output_layers(layer.layers[-1]) if layer.layers else (None,)
    return (None,) if layer.children() else (layer,)


def _node_layer(graph: Graph, k: int) -> Any:
    return graph.get_layer(graph.nodes[k].layer)


def _activation(layer: Any) -> str | None:
    """The name of ``layer``'s activation (``"linear"`` for none), or ``None`` without one."""
    if not hasattr(layer, "activation"):
        return None
    act = layer.activation
    if act is None:
        return "linear"
    name = act if isinstance(act, str) else getattr(act, "__name__", "")
    return "linear" if name.lower() == "identity" else name.lower()


def _mismatch(layer: Any, loss: losses_mod.Loss) -> str | None:
    """The warning for ``layer``'s activation before ``loss``, or ``None`` when they agree."""
    act, from_logits = _activation(layer), getattr(loss, "from_logits", None)
    if act is None or from_logits is None:
        return None
    binary = isinstance(loss, losses_mod.BinaryCrossEntropy)
    squash = "sigmoid" if binary else "softmax"
    if from_logits and act in ("softmax", "sigmoid"):
        return (
            f"the model's last layer {layer.label} applies {act}, but loss '{loss.name}' "
            f"expects logits and applies {squash} itself (a double {act} trains badly). Remove "
            f"the activation, or pass loss=wf.losses.get('{loss.name}', from_logits=False)"
        )
    if not from_logits and act == "linear" and isinstance(loss, _PROBABILITY_LOSSES):
        return (
            f"the model's last layer {layer.label} has no activation (it outputs logits), but "
            f"loss '{loss.name}' expects probabilities (from_logits=False), which it clips to "
            f"[1e-7, 1 - 1e-7]. Add activation='{squash}' to that layer, or pass "
            f"loss=wf.losses.get('{loss.name}', from_logits=True)"
        )
    return None


def warn_all_frozen(model: Any) -> None:
    """Warn that ``fit`` will update no weight: every param of ``model`` is frozen.

    Args:
      model: a built model (its ``frozen`` set and ``trainable_params`` are read).
    """
    if model.frozen and not tree_leaves(model.trainable_params):
        warnings.warn(
            f"fit: every param of {model.label} is frozen, so fit updates no weight (only "
            "layer state such as BatchNorm statistics); unfreeze what should train, e.g. "
            "model.unfreeze('dense_2/*') or model.unfreeze()",
            UserWarning,
            stacklevel=4,
        )
