"""The layer contract: an immutable description with ``init`` and ``forward``."""

from __future__ import annotations

import dataclasses
import inspect
import operator
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wframe import regularizers
from wframe.backends import use_backend
from wframe.layers.contract import checked_forward
from wframe.layers.layer_type import LayerType
from wframe.placeholders import shape_only
from wframe.types import Array, Key, Params, Shape, State

_EMPTY: dict = {}


@dataclass(frozen=True)
class Layer(metaclass=LayerType):
    """A layer: a frozen dataclass of hyper-parameters; parameters live outside, in a dict.

    Subclasses implement

    * ``init(key, in_shape, *, dtype) -> (params, state, out_shape)``: ``in_shape`` and
      ``out_shape`` have ``None`` for the batch axis; ``params``/``state`` are dicts of arrays
      of the active backend (empty when the layer has none).
    * ``forward(params, state, x, *, train, key) -> (y, new_state, backprop)`` where
      ``backprop(dy, input_grad=True) -> (dx, grads)`` is the hand-written vector-Jacobian
      product (``dx`` is ``None`` when ``input_grad`` is false, which saves the first layer's
      input gradient).

    ``forward`` may also take a keyword ``vjp``: the caller passes ``vjp=False`` when it will
    not call ``backprop`` (inference, or JAX differentiating the forward itself), and the layer
    may then skip what only the backward needs and return ``None`` instead of ``backprop``.
    Callers go through :meth:`apply`, which passes ``vjp`` only to layers that take it.

    **Several inputs** (merge layers, attention, a graph): ``in_shape`` is a tuple of shapes
    (each a tuple with ``None`` for the batch axis), ``x`` a tuple of arrays in the same order,
    and ``backprop`` returns ``dx`` as a tuple with one entry per input (``None`` for an input
    that has no gradient: integer ids, a mask). A layer that returns several outputs returns a
    tuple of shapes from ``init``, a tuple of arrays from ``forward`` and takes a tuple ``dy``.
    How a call on symbolic tensors (``layer(a, b, flag=True)``, the functional API) maps to
    ``x`` and to static keyword options of ``forward`` is :meth:`call_args`.

    Layers with ``selective_grads = True`` also take ``backprop(dy, input_grad, need=...)``:
    ``need`` is ``None`` (every param's gradient) or a dict shaped like the layer's params
    holding only the params whose gradients are wanted (``{}``: none, just ``dx``), so frozen
    params cost no gradient computation; for other layers the caller drops what it does not need.
    The arithmetic runs on the backend of ``x`` (:func:`wframe.backends.backend_of`), never on
    the ambient one.

    Constructors also take Keras' keyword names where a field is spelled differently
    (``kernel_initializer=`` for ``kernel_init=``), and a layer's ``name`` may not hold ``"/"``
    (:mod:`wframe.layers.layer_type`). A layer class defined outside wframe has what its
    ``forward`` and ``backprop`` return checked (:mod:`wframe.layers.contract`), so a missing
    backward or a gradient of the wrong shape is reported with the layer's name.

    Args:
      name: the key of its params in the model (``{name: {...}}``), no ``"/"``; ``None``
        (default): its container numbers it by kind (``dense_0``, ...).
    """

    name: str | None = field(default=None, kw_only=True)
    #: True for layers whose ``forward`` draws random numbers from ``key`` (Dropout): only they
    #: get a key, so deterministic models pay nothing for randomness.
    uses_key = False
    #: True when ``backprop`` takes ``need`` (see above).
    selective_grads = False
    #: The dtype a model feeds this layer when it comes first (``None``: the model's float
    #: dtype; ``"int32"``: token ids, as Embedding takes them, never cast to float).
    input_dtype = None
    #: The dtype :meth:`plan`'s shape-only ``init`` asks for: any for a layer (its shapes do
    #: not depend on it); a built model's own (its ``init`` refuses another).
    plan_dtype = "float32"
    #: Whether ``forward`` takes ``vjp`` (set per class from its signature).
    _takes_vjp = False
    #: Whether :meth:`apply` checks what ``forward`` and ``backprop`` return: for classes
    #: defined outside wframe (set per class from its module).
    _checked = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._takes_vjp = "vjp" in inspect.signature(cls.forward).parameters
        cls._checked = not cls.__module__.startswith("wframe.")
        own = cls.__dict__.get("__post_init__")
        if not cls._checked and own is not None:  # wframe's layers: their bools checked after
            cls.__post_init__ = _then_check_bools(own)

    def __post_init__(self) -> None:
        if not self._checked:
            _check_bools(self)

    @property
    def kind(self) -> str:
        """snake_case class name, the stem of automatic layer names (``Dense`` -> ``dense``)."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()

    @property
    def label(self) -> str:
        """``Dense 'dense_1'``: how error messages name this layer."""
        return f"{type(self).__name__} {self.name!r}" if self.name else type(self).__name__

    def named(self, name: str) -> Layer:
        """A copy of this layer called ``name`` (how containers name their children)."""
        return self if name == self.name else dataclasses.replace(self, name=name)

    def children(self) -> tuple[tuple[str | None, Layer], ...]:
        """``(key, child)`` pairs of a container: ``params[key]`` holds the child's params, or
        ``params`` itself where ``key`` is ``None``; a plain layer has none."""
        return ()

    def param_regularizers(self) -> dict[str, regularizers.Regularizer]:
        """``{param name: Regularizer}``: the penalties on this layer's own params."""
        return {}

    def _regularizers(self, **fields: str) -> dict[str, regularizers.Regularizer]:
        # {param: field}: the regularizers set in those fields, for param_regularizers.
        return {p: r for p, f in fields.items() if (r := getattr(self, f)) is not None}

    def _resolve_regularizers(self, *fields: str) -> None:
        # In __post_init__: names become instances, and a bad one fails at construction.
        for f in fields:
            object.__setattr__(self, f, regularizers.get(getattr(self, f), f"{self.label}: {f}"))

    def call_args(self, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """``(inputs, options)`` of a call ``layer(*args, **kwargs)`` on symbolic tensors:
        ``inputs`` one tensor or a tuple of them (what ``forward`` gets as ``x``), ``options``
        static JSON values (bools, ints, strings) passed to ``forward`` as keyword arguments.

        The default takes one tensor, or one list/tuple of tensors (a merge layer's inputs),
        and no options; a layer with a richer call signature (``MultiHeadAttention(query,
        value, key=None, attention_mask=None, use_causal_mask=False)``) overrides this.
        """
        if kwargs or len(args) != 1:
            raise TypeError(
                f"{self.label} is called on one tensor (or one list of tensors), got "
                f"{len(args)} positional and {sorted(kwargs)} keyword arguments"
            )
        x = args[0]
        return (tuple(x) if isinstance(x, (list, tuple)) else x), {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call on symbolic tensors (``wf.Input`` and what layers made of it): records the
        call in the graph under construction and returns the output tensor(s)."""
        inputs, options = self.call_args(*args, **kwargs)
        tensors = inputs if isinstance(inputs, tuple) else (inputs,)
        symbolic = next((t for t in tensors if getattr(t, "is_symbolic", False)), None)
        if symbolic is None:
            raise TypeError(
                f"{self.label} is a description without weights: call it on wf.Input tensors "
                "to build a graph (wf.Model(inputs, outputs)), or put it in a model and call "
                "model.predict(x)"
            )
        return symbolic.record(self, inputs, options)

    def compute_output_shape(self, in_shape: Shape, dtype: str = "float32") -> tuple:
        """The shape of this layer's output for inputs of ``in_shape``, from its ``init`` run
        on zero-memory placeholders (:func:`~wframe.placeholders.shape_only`): layers do not
        store shapes, and nothing is drawn or allocated to learn one."""
        with use_backend("numpy"), shape_only():
            return tuple(self.init(0, in_shape, dtype=dtype)[2])

    def init(self, key: Key, in_shape: Shape, *, dtype: str = "float32"):
        raise TypeError(f"{type(self).__name__} does not define init")

    def forward(self, params: Params, state: State, x: Array, *, train: bool, key: Any = None):
        raise TypeError(f"{type(self).__name__} does not define forward")

    def plan(self, xp: Any, in_shape: Shape, train: bool = True):
        """``(run, out_shape)``: this layer's forward compiled for arrays of namespace ``xp``
        and shape ``in_shape`` (``None`` for the batch axis) in the params' dtype, or ``None``.

        ``run(params, x, vjp=True, key=None) -> (y, backprop)`` computes what :meth:`forward`
        computes in training mode (``key`` as :meth:`forward` gets it, for a layer that
        ``uses_key``), or with ``train=False`` in inference mode (no key), for a layer without
        state: a host backend's train step (NumPy) is built from its layers' runs, and its
        ``predict`` and ``evaluate`` from their inference runs, so that a small model's batch
        costs its arithmetic and little Python. The default is :meth:`apply` itself (the
        layer's checks kept), for a layer whose ``init`` makes no state; layers override it
        with an unchecked run (``Dense``, chains). Callers ask through :meth:`planned`.
        """
        with use_backend("numpy"), shape_only():  # shapes only, as compute_output_shape
            _, state, out_shape = self.init(0, in_shape, dtype=self.plan_dtype)
        if state:  # its state changes in training: the general step carries it
            return None
        keyed = self.uses_key and train

        def run(params, x, vjp=True, key=None):
            y, _, backprop = self.apply(
                params, _EMPTY, x, train=train, key=key if keyed else None, vjp=vjp
            )
            return y, backprop

        return run, tuple(out_shape) if isinstance(out_shape, list) else out_shape

    def planned(self, xp: Any, in_shape: Shape, train: bool = True):
        """:meth:`plan`; the default one (:meth:`apply` itself) where the class's ``forward``
        is defined below its ``plan`` (a subclass that computes something else than the plan
        it inherits), and in inference mode where its ``plan`` takes no ``train``."""
        mro = type(self).__mro__
        forward_owner = next(c for c in mro if "forward" in vars(c))
        plan_owner = next(c for c in mro if "plan" in vars(c))
        if issubclass(plan_owner, forward_owner):
            if train:
                return self.plan(xp, in_shape)
            if "train" in inspect.signature(self.plan).parameters:
                return self.plan(xp, in_shape, train=False)
        return Layer.plan(self, xp, in_shape, train)

    def apply(
        self,
        params: Params,
        state: State,
        x: Array,
        *,
        train: bool = False,
        key: Any = None,
        vjp: bool = True,
        **options: Any,
    ):
        """:meth:`forward`, telling layers that accept it whether ``backprop`` will be called;
        ``options`` are the static call options of :meth:`call_args`."""
        if self._takes_vjp:
            out = self.forward(params, state, x, train=train, key=key, vjp=vjp, **options)
        else:
            out = self.forward(params, state, x, train=train, key=key, **options)
        return checked_forward(self, out, params, x, vjp) if self._checked else out

    def positive_int(self, what: str, value: Any) -> int:
        """``value`` as a Python int > 0 (NumPy integers accepted), or a ValueError naming it."""
        try:
            if isinstance(value, bool):
                raise TypeError
            number = operator.index(value)
        except TypeError:
            number = None
        if number is None or number <= 0:
            raise ValueError(f"{self.label}: {what} must be a positive int, got {value!r}")
        return number

    def expect_rank(self, shape: Shape, rank: int, what: str) -> None:
        """Raise a ``ValueError`` naming the layer unless ``shape`` has ``rank`` axes."""
        if len(shape) != rank:
            raise ValueError(
                f"{self.label} expects {rank}-D inputs {what}, got shape {tuple(shape)}"
            )


def _then_check_bools(post_init):
    """``post_init`` (a wframe layer's own ``__post_init__``), then :func:`_check_bools`."""

    def checked(self) -> None:
        post_init(self)
        _check_bools(self)

    return checked


def _check_bools(layer: Layer) -> None:
    """Refuse a value other than True or False in a field declared ``bool`` (a truthy string
    such as ``use_bias="no"`` or ``return_sequences="False"``, in code or in a model file)."""
    for f in dataclasses.fields(layer):
        if f.type in ("bool", bool):
            value = getattr(layer, f.name)
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{layer.label}: {f.name} must be True or False, got {value!r}")
