"""How a layer is constructed: Keras' keyword names, a checked name, a clear word on immutability.

:class:`LayerType` is the metaclass of :class:`~wframe.layers.Layer`. It does three small things
every layer class needs and no dataclass can say by itself:

* Keras' constructor keywords are accepted where wframe spells a field differently
  (``Dense(10, kernel_initializer="he_normal")`` is ``Dense(10, kernel_init="he_normal")``):
  the keyword is renamed before the dataclass sees it, so configs and files hold only wframe's
  field names, as before. ``data_format="channels_last"``, what every layer does, is accepted
  and dropped, and so is a GRU's ``reset_after=True`` (the only GRU there is);
  ``"channels_first"``, ``reset_after=False`` and a layer's ``input_shape=``/``input_dim=`` are
  refused saying what to do instead.
* A layer name holding ``"/"`` is refused: ``"/"`` joins the parts of a param's flat name
  (``"block_0/dense_1/W"``) in files, masks and freezing, so such a layer would save and then
  not load.
* Assigning to a layer (``layer.trainable = False``, Keras' way to freeze) says what to do
  instead: a layer is an immutable description; its weights, and what is frozen, live in the
  model (``model.freeze("dense_1")``).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

#: Keras' constructor keywords and the wframe fields that hold the same setting.
KERAS_KEYWORDS = {
    "kernel_initializer": "kernel_init",
    "bias_initializer": "bias_init",
    "recurrent_initializer": "recurrent_init",
}


class LayerType(type):
    """The metaclass of layers (see the module docstring); a layer class needs nothing of it."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        fields = getattr(cls, "__dataclass_fields__", {})
        for keras, own in KERAS_KEYWORDS.items():
            if keras in kwargs and own in fields:
                if own in kwargs:
                    raise TypeError(
                        f"{cls.__name__} got both {keras}= (Keras' name) and {own}= (wframe's) "
                        "for the same setting; pass one of them"
                    )
                kwargs[own] = kwargs.pop(keras)
        _keras_options(cls, fields, kwargs)
        if "_immutable_message" not in cls.__dict__:
            _explain_frozen(cls)
        layer = super().__call__(*args, **kwargs)
        check_name(layer)
        return layer

    @property
    def __signature__(cls) -> inspect.Signature:
        """The constructor's signature (``__init__``'s less ``self``), which ``__call__`` above
        would otherwise hide from :func:`inspect.signature`, ``help`` and config checks."""
        sig = inspect.signature(cls.__init__)
        return sig.replace(parameters=list(sig.parameters.values())[1:])


def _keras_options(cls: type, fields: dict, kwargs: dict) -> None:
    """Keras' options that wframe's layers do not hold: ``data_format="channels_last"`` is
    what every layer does and a GRU's ``reset_after=True`` the GRU wframe has (both dropped);
    ``"channels_first"``, ``reset_after=False`` and ``input_shape``/``input_dim`` on a layer are
    refused saying what to do instead."""
    if "data_format" in kwargs and "data_format" not in fields:
        if kwargs["data_format"] != "channels_last":
            raise TypeError(
                f"{cls.__name__}: data_format={kwargs['data_format']!r} is not supported: "
                "wframe's layers take channels last (NHWC, or (batch, steps, channels)); "
                "transpose channels-first data once, e.g. x.transpose(0, 2, 3, 1)"
            )
        del kwargs["data_format"]
    if "reset_after" in kwargs and "reset_after" not in fields and cls.__name__ == "GRU":
        if kwargs["reset_after"] is not True:
            raise TypeError(
                f"GRU: reset_after={kwargs['reset_after']!r} is not supported: wframe's GRU is "
                "Keras 3's default, reset_after=True (the reset gate applied after the "
                "recurrent product, as PyTorch's)"
            )
        del kwargs["reset_after"]
    for key in ("input_shape", "input_dim"):
        if key in kwargs and key not in fields:
            raise TypeError(
                f"{cls.__name__}: {key}= (Keras' input shape on a layer) is not taken; in wframe "
                "put wf.Input(shape) first in the model (wf.Sequential([wf.Input((784,)), "
                "...])) or call model.build((None, *shape))"
            )


def check_name(layer: Any) -> None:
    """Raise unless ``layer.name`` is ``None`` or a non-empty str without ``"/"``."""
    name = getattr(layer, "name", None)
    if name is None:
        return
    kind = type(layer).__name__
    if not isinstance(name, str) or not name:
        raise TypeError(f"{kind}: name must be a non-empty str or None, got {name!r}")
    if "/" in name:
        raise ValueError(
            f"{kind}: name {name!r} contains '/', which joins the parts of param names in files, "
            f"masks and freezing ('block_0/dense_1/W'), so the layer could not be loaded again; "
            f"use another character, e.g. name={name.replace('/', '_')!r}"
        )


def _explain_frozen(cls: type) -> None:
    """Wrap the ``__setattr__`` that ``@dataclass(frozen=True)`` gave ``cls`` (run once per
    class, at its first instance, when the decorator is done) so that the error says what to do
    instead. It stays a ``FrozenInstanceError`` (an ``AttributeError``)."""
    own = cls.__dict__.get("__setattr__")
    if own is not None:

        def __setattr__(self, name, value):
            try:
                own(self, name, value)
            except dataclasses.FrozenInstanceError:
                raise dataclasses.FrozenInstanceError(immutable_message(self, name)) from None

        __setattr__.__qualname__ = f"{cls.__qualname__}.__setattr__"
        type.__setattr__(cls, "__setattr__", __setattr__)
    type.__setattr__(cls, "_immutable_message", immutable_message)


def immutable_message(layer: Any, attr: str) -> str:
    """Why ``layer.<attr> = ...`` fails, and what to write instead."""
    label = getattr(layer, "label", type(layer).__name__)
    name = getattr(layer, "name", None) or "<layer name>"
    head = (
        f"{label} is an immutable description (a frozen dataclass of hyper-parameters; its "
        f"weights live in the model), so {attr!r} cannot be set"
    )
    if attr == "trainable":
        return (
            f"{head}. To stop training its weights, freeze them in the model: "
            f"model.freeze({name!r}) (model.unfreeze({name!r}) undoes it; globs such as "
            "'block_0/*' work too)"
        )
    return (
        f"{head}. Build a changed copy instead: dataclasses.replace(layer, {attr}=...), "
        "and a new model from it"
    )
