"""Layer classes by name: how a saved file names a class without importing code.

A model file stores ``{"class": "Dense", "config": {...}}``; loading looks the name up here and
nowhere else (no ``importlib``, no ``eval``), so a file can only build classes that this process
registered. Every built-in layer is registered under its class name and the regularizers under
theirs (``"L2"``); model classes register themselves where they are defined (the trainable
``wf.Sequential`` as ``"wframe.Sequential"``: ``"Sequential"`` is the plain chain
``wf.layers.Sequential``). User layers join with ``@wf.layers.register``.
"""

from __future__ import annotations

from typing import Any

from wframe import regularizers
from wframe.layers.attention import MultiHeadAttention
from wframe.layers.base import Layer
from wframe.layers.bidirectional import Bidirectional
from wframe.layers.combinators import Concatenate, Residual, Sequential
from wframe.layers.conv import AvgPool2D, Conv2D, GlobalAvgPool2D, MaxPool2D
from wframe.layers.conv1d import AvgPool1D, Conv1D, MaxPool1D
from wframe.layers.core import Activation, Dropout, Flatten, Permute, Reshape
from wframe.layers.dense import Dense
from wframe.layers.embedding import Embedding, PositionEmbedding
from wframe.layers.graph import Graph
from wframe.layers.merge import Add, Average, Maximum, Minimum, Multiply, Subtract
from wframe.layers.norm import BatchNorm, LayerNorm, RMSNorm
from wframe.layers.pool import GlobalAvgPool1D, GlobalMaxPool1D, GlobalMaxPool2D
from wframe.layers.recurrent import GRU, LSTM, SimpleRNN

__all__ = ["lookup", "name_of", "register", "registered", "unregister"]

_BY_NAME: dict[str, type] = {}
_BY_CLASS: dict[type, str] = {}


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _add(cls: Any, name: Any) -> None:
    if not isinstance(cls, type) or not issubclass(cls, (Layer, regularizers.Regularizer)):
        raise TypeError(
            "register takes a wframe Layer (or Regularizer) subclass, got "
            f"{cls.__name__ if isinstance(cls, type) else type(cls).__name__} {cls!r}"
        )
    if not isinstance(name, str) or not name:
        raise TypeError(f"register: name must be a non-empty str, got {name!r}")
    taken = _BY_NAME.get(name)
    # The same class again is a no-op; a class redefined (same module and qualified name, as
    # when a notebook cell runs twice) replaces the old one.
    if taken is not None and taken is not cls and _qualified(taken) != _qualified(cls):
        raise ValueError(
            f"register: the name {name!r} is taken by {_qualified(taken)}, cannot register "
            f"{_qualified(cls)} under it; pass another, e.g. "
            f"@wf.layers.register(name='my_pkg.{cls.__name__}')"
        )
    if taken is not None and taken is not cls:
        _forget(taken, name)
    # A class registered under a second name keeps the first as an alias (old files still
    # load); files written from now on use the newest name.
    _BY_NAME[name] = cls
    _BY_CLASS[cls] = name


def _forget(cls: type, name: str) -> None:
    del _BY_NAME[name]
    if _BY_CLASS.get(cls) == name:
        del _BY_CLASS[cls]
        aliases = [n for n, c in _BY_NAME.items() if c is cls]
        if aliases:
            _BY_CLASS[cls] = aliases[-1]


def register(cls: type | None = None, *, name: str | None = None) -> Any:
    """Register a layer class so that saved models holding it load again.

    Use as a decorator, ``@wf.layers.register`` or ``@wf.layers.register(name="pkg.MyLayer")``,
    or call ``wf.layers.register(MyLayer)``. The class is stored under ``name`` (default: its
    class name); its dataclass fields must hold JSON values, tuples, layers, regularizers or
    activation/initializer names, which is what its config in a file records.

    Args:
      cls: a :class:`~wframe.layers.Layer` (or :class:`~wframe.regularizers.Regularizer`)
        subclass.
      name: the name files use; must not be taken by another class (``ValueError``).

    Returns:
      ``cls`` itself (or, without ``cls``, a decorator).
    """
    if cls is None:
        return lambda c: register(c, name=name)
    _add(cls, cls.__name__ if name is None else name)
    return cls


def unregister(name: str) -> type:
    """Remove ``name`` from the registry and return its class (``ValueError`` if unknown)."""
    cls = lookup(name)
    _forget(cls, name)
    return cls


def lookup(name: str) -> type:
    """The class registered as ``name``, or a ``ValueError`` saying how to register it."""
    cls = _BY_NAME.get(name) if isinstance(name, str) else None
    if cls is None:
        short = name.rsplit(".", 1)[-1] if isinstance(name, str) else "MyLayer"
        raise ValueError(
            f"unknown layer class {name!r} in the file: register it with @wf.layers.register "
            f"(or wf.layers.register({short}, name={name!r})) before loading; registered: "
            f"{registered()}"
        )
    return cls


def name_of(cls: type) -> str:
    """The name ``cls`` is registered under, or a ``ValueError`` saying how to register it."""
    name = _BY_CLASS.get(cls)
    if name is None:
        raise ValueError(
            f"the layer class {_qualified(cls)} is not registered, so a file could not name it; "
            f"decorate it with @wf.layers.register (or call wf.layers.register({cls.__name__}))"
        )
    return name


def registered() -> list[str]:
    """The registered names, sorted."""
    return sorted(_BY_NAME)


# Keras' names load too (a config may say "BatchNormalization"); files write wframe's names,
# registered last (below).
for _cls, _keras in (
    (RMSNorm, "RMSNormalization"),
    (BatchNorm, "BatchNormalization"),
    (LayerNorm, "LayerNormalization"),
    (MaxPool2D, "MaxPooling2D"),
    (AvgPool2D, "AveragePooling2D"),
    (GlobalAvgPool2D, "GlobalAveragePooling2D"),
    (GlobalMaxPool2D, "GlobalMaxPooling2D"),
    (MaxPool1D, "MaxPooling1D"),
    (AvgPool1D, "AveragePooling1D"),
    (GlobalAvgPool1D, "GlobalAveragePooling1D"),
    (GlobalMaxPool1D, "GlobalMaxPooling1D"),
):
    _add(_cls, _keras)
del _keras
for _cls in (
    Layer,
    Sequential,
    Residual,
    Concatenate,
    Dense,
    Conv2D,
    MaxPool2D,
    AvgPool2D,
    GlobalAvgPool2D,
    Conv1D,
    MaxPool1D,
    AvgPool1D,
    GlobalAvgPool1D,
    GlobalMaxPool1D,
    GlobalMaxPool2D,
    Activation,
    Dropout,
    Flatten,
    Reshape,
    Permute,
    Embedding,
    PositionEmbedding,
    BatchNorm,
    LayerNorm,
    RMSNorm,
    SimpleRNN,
    LSTM,
    GRU,
    Bidirectional,
    MultiHeadAttention,
    Add,
    Subtract,
    Multiply,
    Average,
    Maximum,
    Minimum,
    Graph,
    regularizers.Regularizer,
    regularizers.L1,
    regularizers.L2,
    regularizers.L1L2,
):
    _add(_cls, _cls.__name__)
del _cls
