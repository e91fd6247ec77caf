""":class:`LambdaCallback`: a callback made of functions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wframe.callbacks.base import Callback


class LambdaCallback(Callback):
    """A callback whose hooks are the functions given, as Keras'.

    ``on_epoch_begin`` and ``on_epoch_end`` are called as ``fn(epoch, logs)``,
    ``on_train_begin`` and ``on_train_end`` as ``fn(logs)``, ``on_train_batch_begin`` and
    ``on_train_batch_end`` as ``fn(batch, logs)`` (``logs`` positional, so any parameter name
    works; Keras passes batch logs by keyword). Any other hook goes in ``kwargs``
    (``on_batch_end=fn``), and other keyword arguments become attributes.

    Args:
      on_epoch_begin, on_epoch_end: ``fn(epoch, logs)``, called before and after each epoch;
        ``None`` leaves the hook a no-op.
      on_train_begin, on_train_end: ``fn(logs)``, called once before and after training.
      on_train_batch_begin, on_train_batch_end: ``fn(batch, logs)``, called around each
        training step (a callback with these makes the loop read its logs every step).
      **kwargs: other hooks by name (``on_batch_end=fn``, ``on_grad_stats=fn``), or attributes
        to set on the callback.

    Example::

        wf.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: print(epoch, logs["loss"]))
    """

    def __init__(
        self,
        on_epoch_begin: Callable | None = None,
        on_epoch_end: Callable | None = None,
        on_train_begin: Callable | None = None,
        on_train_end: Callable | None = None,
        on_train_batch_begin: Callable | None = None,
        on_train_batch_end: Callable | None = None,
        **kwargs: Any,
    ):
        self.__dict__.update(kwargs)
        hooks = {
            "on_epoch_begin": on_epoch_begin,
            "on_epoch_end": on_epoch_end,
            "on_train_begin": on_train_begin,
            "on_train_end": on_train_end,
            "on_train_batch_begin": on_train_batch_begin,
            "on_train_batch_end": on_train_batch_end,
        }
        for name, fn in hooks.items():
            if fn is not None:
                setattr(self, name, fn)
