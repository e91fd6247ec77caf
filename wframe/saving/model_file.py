"""Whole models in one file: :func:`save_model` writes the architecture (its config, as JSON in
the metadata) beside the weights; :func:`load_model` rebuilds the model from the file alone."""

from __future__ import annotations

import json
from typing import Any

from wframe.saving import io, weights
from wframe.saving.config import model_config, model_from_config


def save_model(model: Any, path: str) -> None:
    """Write ``model`` (architecture, params, state such as BatchNorm statistics, and pruning
    masks) to one safetensors file, atomically; :func:`load_model` rebuilds it from the file
    alone, on any backend.

    Raises:
      ConfigError: the model holds something a config cannot store (named), before anything
        is written.
    """
    model_config(model)  # refuse unsaveable models before the file is touched
    weights.save_weights(model, path)


def load_model(path: str) -> Any:
    """The model :func:`save_model` wrote, built on the active backend with its weights.

    Raises:
      wframe.saving.io.WeightsFileError: the file is unreadable, has no model config, or its config
        is malformed or names a class this process has not registered.
    """
    tensors, metadata = io.read_safetensors(path)
    raw = metadata.get("config")
    try:
        config = None if raw is None else json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise io.WeightsFileError(f"{path}: the model config is not valid JSON: {e}") from None
    if config is None or config == {}:
        raise io.WeightsFileError(
            f"{path}: the file has no model config (it holds weights only); build the model in "
            "code and call model.load_weights(path)"
        )
    # Building allocates the layers' arrays: a config whose sizes exceed every array the file
    # holds (Dense(units=10**9) with a few kB of weights) is refused before anything is made.
    limit = max(sum(a.size for a in tensors.values()), 1)
    too_big = [f"{k}={v}" for k, v in _ints(config) if v > limit] if tensors else []
    if too_big:
        raise io.WeightsFileError(
            f"{path}: the model config asks for sizes ({', '.join(too_big[:5])}) larger than the "
            f"{limit} values the file holds; it does not describe these weights"
        )
    try:
        model = model_from_config(config)
    except (TypeError, ValueError, RecursionError) as e:
        raise io.WeightsFileError(f"{path}: cannot rebuild the model from its config: {e}") from e
    if not model.built:
        raise io.WeightsFileError(
            f"{path}: the model config has no input_shape, so the model cannot be built"
        )
    weights.load_weights(model, path)
    return model


def _ints(tree: Any, key: str = ""):
    """``(field, int)`` pairs anywhere in a config, but the seed (it sizes nothing)."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k != "seed":
                yield from _ints(v, k)
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            yield from _ints(v, key)
    elif isinstance(tree, int) and not isinstance(tree, bool):
        yield key, tree
