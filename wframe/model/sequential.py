"""``wf.Sequential``: a chain of layers that trains."""

from __future__ import annotations

from typing import Any

from wframe.layers import combinators, registry, symbolic
from wframe.layers.base import Layer
from wframe.model.base import Model


class Sequential(Model, combinators.Sequential):
    """A chain of layers that trains: Keras' ``compile``/``fit``/``evaluate``/``predict``.

    It is a :class:`wframe.layers.Sequential` too, so it nests inside other chains.

    Args:
      layers: :class:`~wframe.layers.Layer` instances (chains, residual blocks and other models
        included); unnamed ones are named ``dense_0``, ``dense_1``, ... per kind. The first
        item may be a ``wf.Input(shape)``, as in Keras: the model is then built for inputs
        ``(None, *shape)`` at once.
      seed: int seed of the initial weights; the same seed gives bit-identical weights on every
        backend.
      dtype: ``"float32"`` (default) or ``"float64"``: the dtype of params, inputs and
        computation; or a mixed policy (Keras' names), ``"mixed_bfloat16"`` or
        ``"mixed_float16"``: layers compute in that half type while params, optimizer state,
        outputs and the loss stay float32 (``model.dtype`` is then ``"float32"``,
        ``model.compute_dtype`` the half type; see :mod:`wframe.precision`).
      name: the model's name when it is nested inside another chain.
    """

    def __init__(self, layers=(), *, seed: int = 0, dtype: Any = "float32", name=None):
        layers = tuple(layers) if isinstance(layers, (list, tuple)) else layers
        first = layers[0] if isinstance(layers, tuple) and layers else None
        start = _input_shape(first, self) if symbolic.is_symbolic(first) else None
        combinators.Sequential.__init__(self, layers[1:] if start else layers, name=name)
        Model.__init__(self, seed=seed, dtype=dtype)
        if start is not None and self.layers:
            self.build(start)

    def add(self, layer: Layer) -> None:
        """Append ``layer`` (named as the constructor names layers), as Keras'.

        A built model is built again at once for its input shape: the existing layers keep
        their weights, the new one is drawn from the seed, the optimizer state restarts (see
        :meth:`~wframe.model.arrays.Holder.rebuild`). A layer that does not fit the last
        output raises, and the model stays as it was.
        """
        if symbolic.is_symbolic(layer):
            raise TypeError(
                f"{self.label}.add takes a layer, got a wf.Input tensor; a Sequential model takes "
                "its input shape from model.build((None, features...)) or from its first data"
            )
        if not isinstance(layer, Layer):
            raise TypeError(
                f"{self.label}.add takes a wframe Layer (wf.layers.Dense(...), ...), got "
                f"{type(layer).__name__}"
            )
        self._relayer((*self.layers, layer), "add")

    def pop(self) -> Layer:
        """Remove the last layer and return it, as Keras'. A built model is built again
        without it, every other layer keeping its weights (the optimizer state restarts); a
        model left without layers is no longer built."""
        if not self.layers:
            raise TypeError(f"{self.label}.pop: there are no layers in the model")
        last = self.layers[-1]
        self._relayer(self.layers[:-1], "pop")
        return last

    def _relayer(self, layers: tuple[Layer, ...], what: str) -> None:
        self.refuse_while_running(f"{what} a layer")
        old = self.layers
        object.__setattr__(self, "layers", combinators.name_layers(f"{self.label}.{what}", layers))
        try:
            self.rebuild(keep_built=bool(layers))
        except BaseException:
            object.__setattr__(self, "layers", old)
            raise

    @property
    def input_names(self) -> tuple[str, ...]:
        """``("input",)``: a chain has one input."""
        return ("input",)

    @property
    def input_dtypes(self) -> tuple[str | None, ...]:
        """The first layer's input dtype (``"int32"`` before an Embedding; ``None``: the
        model's float dtype)."""
        return (self.input_dtype,)

    @property
    def output_names(self) -> tuple[str, ...]:
        """The last layer's name, as Keras names a chain's output."""
        return (self.layers[-1].name,) if self.layers else ("output",)


# Files name it "wframe.Sequential" ("Sequential" is the plain chain, wf.layers.Sequential).
registry.register(Sequential, name="wframe.Sequential")


def _input_shape(first: Any, model: Any) -> tuple:
    """The shape ``(None, ...)`` of a ``wf.Input`` given as a Sequential's first item."""
    if isinstance(first, tuple) or first.call is not None:
        raise TypeError(
            f"{type(model).__name__}: the first item may be one wf.Input(shape) (the input "
            "shape, as in Keras); a layer's output tensor belongs in wf.Model(inputs, outputs)"
        )
    return tuple(first.shape)
