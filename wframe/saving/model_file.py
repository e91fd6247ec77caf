"""Whole models in one file: :func:`save_model` writes the architecture (its config, as JSON in
the metadata) beside everything a checkpoint holds (weights, optimizer state, counters);
:func:`load_model` rebuilds the model from the file alone, after checking the config against
the file's header (:mod:`wframe.saving.expected`).

The three kinds of file, each a safetensors file whose metadata ``kind`` says which:

* ``"weights"`` (``model.save_weights``): params, layer state, pruning masks. Read by
  ``model.load_weights``, ``wf.transfer.load_pretrained``.
* ``"model"`` (:func:`save_model`): the same, the architecture, and, as Keras' ``model.save``
  keeps them, the optimizer's state and the model's step/epoch counters and seed. Read by
  :func:`load_model` (and by the two readers of weights, and by ``model.load_checkpoint``).
* ``"checkpoint"`` (``model.save_checkpoint``, ``ModelCheckpoint``, ``BackupAndRestore``):
  a model file (the architecture where a config can describe it) plus where an interrupted
  ``fit`` goes on and what its callbacks held. Read by ``model.load_checkpoint`` (and by the
  others).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from wframe.backends import get_backend
from wframe.placeholders import shape_only
from wframe.saving import checkpoint, compile_config, expected, io, sparse_pack, weights
from wframe.saving.config import model_config


def save_model(
    model: Any, path: str | os.PathLike, *, max_shard_size: Any = None, sparse: Any = "auto"
) -> None:
    """Write ``model`` to one safetensors file (or shards and an index), atomically:
    architecture, params, state such as BatchNorm statistics, pruning masks, and, once it is
    compiled, its optimizer's state and its counters; :func:`load_model` rebuilds it from the
    file alone, on any backend, ready to go on training.

    Args:
      model: a built model whose layers a config can describe.
      path: the file to write.
      max_shard_size: as ``save_weights``'s (shards beside ``path`` and an index).
      sparse: as ``save_weights``'s: ``"auto"`` stores mostly-zero float kernels (a pruned
        model's) packed, ``True`` every float kernel, ``False`` none
        (:mod:`wframe.saving.sparse_pack`).

    Raises:
      ConfigError: the model holds something a config cannot store (named), before anything
        is written.
    """
    model_config(model)  # refuse unsaveable models before the file is touched
    checkpoint.save(model, path, kind="model", max_shard_size=max_shard_size, sparse=sparse)


def load_model(path: str | os.PathLike, *, compile: bool = True) -> Any:  # noqa: A002 (Keras')
    """The model :func:`save_model` wrote, built on the active backend with its weights; with
    its optimizer (and that optimizer's state) and counters where it was compiled with an
    optimizer given by name, so that ``fit`` goes on where it stopped (an optimizer given as
    an object cannot be rebuilt from a file: compile the loaded model with the same optimizer
    and call ``model.load_checkpoint(path)`` to restore its state). With ``compile`` (Keras'
    default) it also has the loss and metrics it was compiled with
    (:mod:`~wframe.saving.compile_config`): built-in ones by name or object; a user's function
    or class is not in the file, and the model warns and keeps the default until
    ``model.compile(optimizer=None, loss=..., metrics=...)``, which keeps the loaded optimizer.

    Nothing is allocated before the file is known to fit its config: the header is read
    alone, the config is bounded by the file's tensor count
    (:func:`~wframe.saving.expected.max_layers`), and the model's arrays are derived from the
    config without allocating them (shape inference under
    :func:`~wframe.placeholders.shape_only`, at most the file's data bytes) and compared with
    the file's names, shapes and dtypes. Then the model is built (a chain with zero-memory
    placeholders, not random draws that the file would replace at once) and every array is
    read from the file. The model is the caller's only once all of it is loaded.

    Args:
      path: the path :func:`save_model` was given (a sharded save is found through its
        ``.index.json``; the index's own path works too).
      compile: give the model the loss and metrics in the file (``False``: the default
        loss, ``softmax_cross_entropy``, and its default metric).

    Returns:
      The rebuilt model, on the active backend.

    Raises:
      wframe.saving.io.WeightsFileError: the file is unreadable, has no model config, its
        config is malformed, names a class this process has not registered, declares more
        layers or bytes than the file holds, describes other arrays than the file's (the
        first differences named), or holds a loss and metrics that are malformed or do not fit
        the model.
    """
    path = os.fspath(path)
    header = sparse_pack.declared(io.read_header(path))  # packed tensors as their dense selves
    config = expected.file_config(header)
    if config is None or config == {}:
        raise io.WeightsFileError(
            f"{path}: the file has no model config (it holds weights only); build the model in "
            "code and call model.load_weights(path)",
            path,
        )
    shape = expected.check_config(config, header)
    if header.metadata.get("dtype") == "float64":  # placeholders below would not ask for it
        get_backend().asarray(np.zeros(0), dtype="float64")  # the backend's refusal, if any
    # Placeholders, not random draws: every one is replaced from the file just below (graphs
    # build as they are decoded, chains when given their input shape).
    with shape_only(expected.data_bytes(header)):
        model = expected.decode(config, path)
        if not model.built:
            model.build(shape)
    _fill(model, path, header.metadata)
    expected.check_filled(model, path)
    if compile:
        compile_config.restore(model, path, header.metadata)
    return model


def _fill(model: Any, path: str, metadata: dict[str, str]) -> None:
    """Load the file into the model built from its config: everything a checkpoint holds
    where it is one (optimizer state and counters included), else the weights."""
    if metadata.get("format") != checkpoint.FORMAT:
        weights.load_weights(model, path)  # a weights file of an older wframe, with a config
        return
    if metadata.get("opt_state") == "present" and not metadata.get("optimizer"):
        # An optimizer given as an object: a file cannot rebuild it, so its state waits in
        # the file for model.compile(optimizer=<the same>) and model.load_checkpoint(path).
        weights.load_weights(model, path)
        return
    model.load_checkpoint(path)
