"""Configs: a layer or model described as JSON values, and rebuilt from that alone.

A layer's config is its registered class name and its dataclass fields as JSON::

    {"class": "Dense", "config": {"name": "dense_0", "units": 10, "activation": "relu",
     "use_bias": true, "kernel_init": "glorot_uniform", "bias_init": "zeros",
     "kernel_regularizer": {"class": "L2", "config": {"l1": 0.0, "l2": 0.01}},
     "bias_regularizer": null}}

Child layers and regularizers nest the same way; tuples become lists; a layer instance used
twice in one container is written once, later items saying ``{"same_as": 0}`` (the index of the
first); parametrized initializers are ``{"initializer": "constant", "config": {"value": 0.5}}``.
A model describes itself (``model.get_config()``, rebuilt by ``cls.from_config``; a
``wf.Sequential`` adds ``seed`` and ``dtype`` to its fields), and ``"input_shape": [null, 784]``
stands beside ``"config"`` once it is built.

Reading builds objects from :mod:`wframe.layers.registry` only: no ``eval``, no import of a
module named in the file, no pickle. Functions cannot be written: activations and initializers
are stored by name, and a layer holding a user function is refused at save time.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import numbers
from typing import Any

import numpy as np

from wframe import activations, initializers
from wframe.layers import registry
from wframe.layers.base import Layer
from wframe.regularizers import Regularizer

__all__ = [
    "ConfigError",
    "layer_config",
    "fields_config",
    "fields_from_config",
    "layer_config",
    "layer_from_config",
    "model_config",
    "model_from_config",
]

_OBJECT_KEYS = ("class", "config")


class ConfigError(ValueError):
    """A config that cannot be written (a field holds a function or an unknown type) or read
    (an unregistered class, an unknown option, a malformed entry)."""


# ----------------------------------------------------------------------------- writing
def layer_config(layer: Layer) -> dict[str, Any]:
    """``{"class": registered name, "config": {field: JSON value}}`` describing ``layer``.

    Args:
      layer: a layer of a registered class (:mod:`wframe.layers.registry`); children and
        regularizers nest as configs of their own.

    Raises:
      ConfigError: the class is not registered, or a field holds something a file cannot
        store (a user function, an arbitrary object).
    """
    return _encode_object(layer)


def model_config(model: Any) -> dict[str, Any]:
    """The config of a model (``wf.Sequential`` or any class with ``get_config`` and
    ``from_config``): its registered class name, ``model.get_config()`` and, once it is built,
    ``"input_shape"`` (``[null, features...]``), so that :func:`model_from_config` builds it.

    Args:
      model: a model instance of a registered class; a layer is refused (``TypeError``: use
        :func:`layer_config`).

    Raises:
      ConfigError: as :func:`layer_config`, for the model or a layer in it.
    """
    if not _is_model_class(type(model)):
        raise TypeError(
            f"model_config takes a model (wf.Sequential, ...), got {type(model).__name__}; use "
            "layer_config for a layer"
        )
    out = _encode_object(model)
    if model.built:
        out["input_shape"] = _as_lists(model.input_shape)
    return out


def _as_lists(shape: Any) -> list:
    """A shape (or a tuple of shapes, for several inputs) as JSON lists."""
    return [_as_lists(s) if isinstance(s, tuple) else s for s in shape]


def _is_model_class(cls: Any) -> bool:
    """Models describe themselves (``get_config``/``from_config``); layers are dataclasses."""
    return isinstance(cls, type) and hasattr(cls, "get_config") and hasattr(cls, "from_config")


def fields_config(obj: Any) -> dict[str, Any]:
    """``obj``'s dataclass fields (those its constructor takes) as JSON values.

    Args:
      obj: a dataclass instance (a layer, or a model's ``get_config``); a field holding what a
        file cannot store raises :class:`ConfigError` naming it.
    """
    owner = obj.label if isinstance(obj, Layer) else type(obj).__name__
    return {
        f.name: _encode(getattr(obj, f.name), owner, f.name)
        for f in dataclasses.fields(obj)
        if f.init
    }


def _encode_object(obj: Any) -> dict[str, Any]:
    owner = obj.label if isinstance(obj, Layer) else type(obj).__name__
    try:
        name = registry.name_of(type(obj))
    except ValueError as e:
        raise ConfigError(f"{owner}: {e}") from None
    config = obj.get_config() if _is_model_class(type(obj)) else fields_config(obj)
    return {"class": name, "config": config}


def _encode(value: Any, owner: str, field: str) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.generic) and isinstance(value.item(), (bool, int, float)):
        return value.item()
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (Layer, Regularizer)):
        return _encode_object(value)
    if isinstance(value, (tuple, list)):
        first: dict[int, int] = {}  # id of a layer -> index of its first use in this list
        out = []
        for i, item in enumerate(value):
            if isinstance(item, Layer) and id(item) in first:
                out.append({"same_as": first[id(item)]})
                continue
            if isinstance(item, Layer):
                first[id(item)] = i
            out.append(_encode(item, owner, f"{field}[{i}]"))
        return out
    if callable(value):
        named = _function_name(value)
        if named is not None:
            return named
        fn = getattr(value, "__name__", None) or repr(value)
        raise ConfigError(
            f"{owner}: field {field!r} holds the function {fn}, which a model file cannot store "
            "(files hold no code); pass a name from wf.activations / wf.initializers instead, "
            "or put the computation in a layer class registered with @wf.layers.register"
        )
    raise ConfigError(
        f"{owner}: field {field!r} holds a {type(value).__name__} ({value!r}), which a model "
        "config cannot store; fields may hold numbers, strings, None, tuples, layers and "
        "regularizers"
    )


def _function_name(fn: Any) -> str | dict | None:
    """The name (or initializer entry) that gives back the built-in function ``fn``, if any."""
    if isinstance(fn, functools.partial) and not fn.args and fn.func.__name__.startswith("_"):
        # A parametrized initializer: constant(0.5) is partial(_constant, value=0.5).
        name = fn.func.__name__[1:]
        try:
            made = initializers.get(name, **fn.keywords)
        except (TypeError, ValueError):
            return None
        same = isinstance(made, functools.partial) and made.func is fn.func
        if same and made.keywords == fn.keywords:
            return {"initializer": name, "config": dict(fn.keywords)}
        return None
    name = getattr(fn, "__name__", None)
    if isinstance(name, str):
        for get in (activations.get, initializers.get):
            try:
                if get(name) is fn:
                    return name
            except (TypeError, ValueError):
                pass
    return None


# ----------------------------------------------------------------------------- reading
def layer_from_config(config: dict[str, Any]) -> Layer:
    """The layer :func:`layer_config` described, built from registered classes only.

    Args:
      config: the ``{"class": ..., "config": {...}}`` dict, as read from JSON.

    Raises:
      ConfigError: the structure is wrong, a class is not registered, or a config has an
        option its class does not take (named in the message).
      TypeError, ValueError: the layer's own constructor refused a value.
    """
    return _decode_object(config, "config")


def model_from_config(config: dict[str, Any]) -> Any:
    """The ``wf.Sequential`` model :func:`model_config` described, built when the config has
    ``"input_shape"`` (on the active backend), else unbuilt.

    Args:
      config: the dict :func:`model_config` wrote (``"class"``, ``"config"`` and optionally
        ``"input_shape"``), as read from JSON.

    Raises:
      ConfigError: for a malformed config, an unregistered class or an unknown option.
    """
    if not isinstance(config, dict):
        raise ConfigError(
            f"model: expected a dict {{'class': ..., 'config': {{...}}}}, got "
            f"{type(config).__name__}"
        )
    extra = sorted(set(config) - {*_OBJECT_KEYS, "input_shape"})
    if extra:
        raise ConfigError(
            f"model: unexpected keys {extra}; a model config has 'class', "
            "'config' and 'input_shape'"
        )
    model = _decode_object({k: config[k] for k in _OBJECT_KEYS if k in config}, "model", model=True)
    shape = config.get("input_shape")
    if shape is not None:
        if not isinstance(shape, list):
            raise ConfigError(
                f"model: input_shape must be a list such as [null, 784], got {shape!r}"
            )
        model.build(tuple(shape))
    return model


def _decode_object(d: Any, where: str, model: bool = False) -> Any:
    if not isinstance(d, dict) or "class" not in d:
        got = f"keys {sorted(d)}" if isinstance(d, dict) else type(d).__name__
        raise ConfigError(f"{where}: expected {{'class': ..., 'config': {{...}}}}, got {got}")
    extra = sorted(set(d) - set(_OBJECT_KEYS))
    if extra:
        raise ConfigError(f"{where}: unexpected keys {extra} beside 'class' and 'config'")
    name, config = d["class"], d.get("config", {})
    if not isinstance(name, str):
        raise ConfigError(f"{where}: 'class' must be a registered name (str), got {name!r}")
    try:
        cls = registry.lookup(name)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    if model and not _is_model_class(cls):
        raise ConfigError(
            f"{where}: {name!r} is not a model class (such as 'wframe.Sequential'); "
            "model_from_config builds models, layer_from_config builds layers"
        )
    if not isinstance(config, dict):
        got = type(config).__name__
        raise ConfigError(f"{where}: 'config' of {name} must be a dict, got {got}")
    if _is_model_class(cls):
        return cls.from_config(config)
    return cls(**fields_from_config(cls, config, where))


def fields_from_config(cls: type, config: dict[str, Any], where: str) -> dict[str, Any]:
    """The constructor arguments of ``cls`` that :func:`fields_config` wrote, decoded; an
    option ``cls`` does not take is a :class:`ConfigError` naming it.

    Args:
      cls: the class to build (its constructor's parameters are the options allowed).
      config: ``{field: JSON value}``, the inner ``"config"`` of a config.
      where: where the config sits, for errors (``"config.layers[2]"``, a class name).
    """
    options = _options(cls)
    if options is not None:
        for key in config:
            if key not in options:
                raise ConfigError(
                    f"{where}: {cls.__name__} has no option {key!r}; its options are "
                    f"{sorted(options)}"
                )
    return {k: _decode(v, f"{where}.{k}") for k, v in config.items()}


def _options(cls: type) -> frozenset[str] | None:
    """The keyword arguments ``cls`` takes (``None``: any, it has ``**kwargs``)."""
    params = inspect.signature(cls).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind is not inspect.Parameter.POSITIONAL_ONLY)


def _decode(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        out: list[Any] = []
        for i, item in enumerate(value):
            if isinstance(item, dict) and "same_as" in item:
                j = item["same_as"]
                ok = set(item) == {"same_as"} and type(j) is int and 0 <= j < i
                if not ok or not isinstance(out[j], Layer):
                    raise ConfigError(
                        f"{where}[{i}]: 'same_as' must be the index of an earlier layer in the "
                        f"same list, got {item!r}"
                    )
                out.append(out[j])
            else:
                out.append(_decode(item, f"{where}[{i}]"))
        return tuple(out)
    if isinstance(value, dict) and "initializer" in value:
        return _decode_initializer(value, where)
    if isinstance(value, dict):
        return _decode_object(value, where)
    raise ConfigError(f"{where}: unexpected value {value!r}")


def _decode_initializer(d: dict, where: str) -> Any:
    name, config = d["initializer"], d.get("config", {})
    ok = set(d) <= {"initializer", "config"} and isinstance(name, str)
    if not ok or not isinstance(config, dict):
        raise ConfigError(
            f"{where}: expected {{'initializer': name, 'config': {{...}}}}, got {d!r}"
        )
    try:
        return initializers.get(name, **config)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None
