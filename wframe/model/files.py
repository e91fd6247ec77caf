"""What a model does with files and its layers' names: weights, checkpoints, the summary.

:class:`Files` is a base of :class:`wframe.Model`; the files themselves are
:mod:`wframe.saving`'s, the table :mod:`wframe.model.summary`'s.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from wframe import saving
from wframe.model import summary as summary_mod
from wframe.model.arrays import Snapshot
from wframe.model.inputs import Inputs


class Files(Inputs):
    """Weights and checkpoints to and from files, and the layers by name."""

    # ----------------------------------------------------------------- files
    def save_weights(
        self, path: str | os.PathLike, *, max_shard_size: Any = None, sparse: Any = "auto"
    ) -> None:
        """Write params, state and masks to a safetensors file, atomically
        (:func:`wframe.saving.weights.save_weights`; ``max_shard_size="2GB"`` writes shards and
        an index beside ``path``; ``sparse`` packs mostly-zero kernels)."""
        saving.weights.save_weights(self, path, max_shard_size=max_shard_size, sparse=sparse)

    def save(self, path: str | os.PathLike, **options: Any) -> None:
        """Keras' ``model.save``: the whole model, :func:`wframe.save_model` (architecture,
        weights, optimizer state and counters), read back by :func:`wframe.load_model`."""
        saving.model_file.save_model(self, path, **options)

    def load_weights(self, path: str | os.PathLike, **options: Any) -> Files:
        """Load params and state by name, all checked first
        (:func:`wframe.saving.weights.load_weights`: ``strict``, ``skip_mismatch``,
        ``rename``, ``dtype``, ``allow_nonfinite``)."""
        self.refuse_while_running("load_weights", own_thread_ok=True)
        saving.weights.load_weights(self, path, **options)
        return self

    def save_checkpoint(
        self,
        path: str | os.PathLike,
        *,
        resume_at: tuple[int, int] | None = None,
        extra: dict | None = None,
        sparse: Any = "auto",
    ) -> None:
        """Write everything ``fit`` needs to go on exactly: params, state, masks, optimizer
        state, counters and seed (:func:`wframe.saving.checkpoint.save`), and with
        ``resume_at`` the ``(epoch, batch)`` where an interrupted ``fit`` goes on; ``extra``
        adds string metadata; ``sparse`` packs mostly-zero kernels, as ``save_weights``."""
        saving.checkpoint.save(self, path, resume_at=resume_at, extra=extra, sparse=sparse)

    def load_checkpoint(
        self,
        path: str | os.PathLike,
        *,
        allow_nonfinite: bool = False,
        check: Callable[[dict[str, str]], Any] | None = None,
    ) -> Files:
        """Restore what :meth:`save_checkpoint` (or
        :class:`~wframe.callbacks.ModelCheckpoint`) wrote: params, state, optimizer state and
        the step, epoch and RNG counters, all checked first
        (:func:`wframe.saving.checkpoint.read`; NaN and inf refused unless
        ``allow_nonfinite``); an unbuilt model is built for the checkpoint's input shape. A
        backup written within an epoch also sets :attr:`resume_at`, so the next ``fit`` goes
        on from its batch. ``check(metadata)``, given, runs on the file's metadata after the
        other checks and before anything changes (:class:`~wframe.callbacks.BackupAndRestore`
        parses what it stored with ``extra``): a ``ValueError`` it raises is reported as a
        :class:`~wframe.saving.io.WeightsFileError` naming the file."""
        self.refuse_while_running("load_checkpoint", own_thread_ok=True)
        saved = dict(vars(self))  # a build (or anything else) is undone on failure
        try:
            got = saving.checkpoint.read(self, path, allow_nonfinite=allow_nonfinite)
            if check is not None:
                _check_metadata(path, got.metadata, check)
            self.set_frozen(got.frozen)
            self.optimizer, self._optimizer_name = got.optimizer, got.optimizer_name
            self._now = Snapshot(got.arrays, got.steps, got.epochs)
            self.seed, self.resume_at = got.seed, got.resume_at
        except BaseException:
            vars(self).clear()
            vars(self).update(saved)
            raise
        return self

    # ----------------------------------------------------------------- reporting
    def get_layer(self, name: str | None = None, index: int | None = None) -> Any:
        """The layer called ``name``, or the ``index``-th (in call order), as Keras'."""
        layers = [layer for _, layer in self.children()]
        if (name is None) == (index is None):
            raise ValueError("get_layer takes a name or an index (exactly one)")
        if index is not None:
            if not -len(layers) <= index < len(layers):
                raise ValueError(f"get_layer: index {index} out of range: {len(layers)} layers")
            return layers[index]
        for layer in layers:
            if layer.name == name:
                return layer
        names = [layer.name for layer in layers]
        raise ValueError(f"{self.label} has no layer {name!r}; its layers are {names}")

    def summary(self, print_fn=print) -> str:
        """Print (and return) a table of layers, output shapes and parameter counts."""
        self.require_built("summary")
        return summary_mod.summary(self, print_fn)


def _check_metadata(path: str | os.PathLike, metadata: dict, check: Callable) -> None:
    """``check(metadata)``, its ``ValueError`` a :class:`WeightsFileError` naming the file."""
    try:
        check(dict(metadata))
    except saving.io.WeightsFileError:
        raise
    except ValueError as e:
        path = os.fspath(path)
        raise saving.io.WeightsFileError(
            f"cannot load checkpoint {path!r}: {e}", path, (str(e),)
        ) from None
