"""What a model holds: its params, state, optimizer state, pruning masks and frozen set, on one
backend, and how they are set, checked, moved, frozen and written to files.

:class:`Holder` is the half of :class:`wframe.Sequential` that holds arrays; the other half
(``compile``/``fit``/``predict``/``evaluate``, in :mod:`wframe.model`) runs them. It never
changes the process's default backend: its arrays know theirs.
"""

from __future__ import annotations

import copy
import math
import threading
from typing import Any

import numpy as np

from wframe import data, freezing, precision, training
from wframe import losses as losses_mod
from wframe.backends import Backend, _resolve, get_backend, use_backend
from wframe.callbacks import History
from wframe.layers import combinators
from wframe.summary import summary as _summary
from wframe.tree import reorder, split, tree_leaves, tree_map
from wframe.types import Array, Params, Shape, State


class Holder(combinators.Sequential):
    """A chain of layers with the arrays to run it (the base of :class:`wframe.Sequential`)."""

    def __init__(self, layers=(), *, seed: int = 0, dtype: Any = "float32", name=None):
        super().__init__(layers, name=name)
        self.seed = data.as_int(seed, "Sequential: seed", minimum=0)
        # ``dtype`` stays the variables' dtype (files, checkpoints, data); the policy adds the
        # compute dtype of the mixed policies.
        self.policy = precision.get(dtype)
        self.dtype = self.policy.param_dtype
        self._loss_scale: precision.LossScaleState | None = None
        self.loss: losses_mod.Loss = losses_mod.get("softmax_cross_entropy")
        self.optimizer: Any = None
        self.opt_state: Any = None
        self.stop_training = False
        self.history: History | None = None
        self._optimizer_spec: str | None = None
        self._params: Params | None = None
        self._state: State = {}
        self._masks: dict[str, Array] | None = None
        self._frozen: frozenset[str] = frozenset()
        self._backend: Backend | None = None
        self._shapes: tuple[Shape, Shape] | None = None
        self._compiled: dict[tuple, Any] = {}
        self._lock = threading.Lock()
        # Completed epochs and steps over the model's life: epoch e always shuffles the same
        # way and step s always draws the same dropout masks, however fit calls are split.
        self._epochs = self._steps = 0
        # (epoch, batches done in it) where a restored backup stopped: fit goes on from there.
        self._resume_at: tuple[int, int] | None = None

    # A model is a mutable object: equal only to itself (the layers compare by value).
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def named(self, name):
        if name == self.name:
            return self
        clone = copy.copy(self)  # a snapshot that shares the arrays, not the compiled state
        object.__setattr__(clone, "name", name)
        clone._compiled, clone._lock = {}, threading.Lock()
        return clone

    # ----------------------------------------------------------------- building and params
    def build(self, input_shape: Shape) -> Holder:
        """Create params for inputs of ``input_shape`` such as ``(None, 64)``.

        The params live on the active backend; later calls use that backend whatever is active
        then (``to_backend`` moves them).
        """
        shape = data.input_shape(input_shape)
        backend = self._backend or get_backend()
        precision.check_backend(self.policy, backend)
        with use_backend(backend):
            params, state, out = combinators.Sequential.init(
                self, self.seed, shape, dtype=self.dtype
            )
        move = data.mover(backend)
        self._params, self._state = tree_map(move, params), tree_map(move, state)
        self._backend, self._shapes = backend, (shape, tuple(out))
        self._compiled = {}
        self.opt_state = self._masks = self._loss_scale = None
        self._frozen = frozenset()
        return self

    def init(self, key, in_shape, *, dtype="float32"):
        """As a layer inside another chain: this model's current params if it is built."""
        if not self.built:
            return super().init(key, in_shape, dtype=dtype)
        if tuple(in_shape[1:]) != self._shapes[0][1:] or dtype != self.dtype:
            raise ValueError(
                f"{self.label} was built for inputs {self._shapes[0]} in {self.dtype}, but is "
                f"used on inputs {tuple(in_shape)} in {dtype}; nest an unbuilt model instead"
            )
        own = tree_map(lambda a: self.backend.xp.asarray(a, copy=True), (self._params, self._state))
        return (*own, self._shapes[1])

    def forward(self, params, state, x, *, train=False, key=None, vjp=True):
        # Half-precision x: nested in a mixed model, which has cast everything already.
        if not self.policy.mixed or precision.is_half(x.dtype):
            return super().forward(params, state, x, train=train, key=key, vjp=vjp)
        return precision.mixed_forward(
            self.policy, super().forward, params, state, x, train=train, key=key, vjp=vjp
        )

    @property
    def compute_dtype(self) -> str:
        """The dtype layers compute in: ``dtype`` but for the mixed policies (``"bfloat16"``,
        ``"float16"``), whose params, optimizer state and outputs stay float32."""
        return self.policy.compute_dtype

    @property
    def loss_scale(self) -> precision.LossScaleState | None:
        """The dynamic loss scale of a ``mixed_float16`` model (``None`` before its first
        ``fit`` and for the other policies): ``float(model.loss_scale.scale)``."""
        return self._loss_scale

    @property
    def built(self) -> bool:
        return self._params is not None

    @property
    def backend(self) -> Backend:
        """The backend the model's arrays live on."""
        self._require_built()
        return self._backend

    @property
    def params(self) -> Params:
        """``{"dense_0": {"W": ..., "b": ...}, ...}``: arrays of the model's backend."""
        self._require_built()
        return self._params

    @params.setter
    def params(self, new: Params) -> None:
        self._require_built()
        self._params = self._validated(new, self._params, "params")

    @property
    def state(self) -> State:
        """Non-trainable layer state (e.g. BatchNorm running statistics)."""
        self._require_built()
        return self._state

    @state.setter
    def state(self, new: State) -> None:
        self._require_built()
        self._state = self._validated(new, self._state, "state")

    @property
    def masks(self) -> dict[str, Array] | None:
        """Pruning masks ``{"dense_0/W": array of 0 and 1}`` (``None``: none): training keeps
        the weights where a mask is 0 at exactly zero (see :mod:`wframe.pruning`)."""
        return self._masks

    @masks.setter
    def masks(self, new: dict[str, Any] | None) -> None:
        self._require_built()
        self._masks = data.check_masks(new, self._params, self._backend) or None

    # ----------------------------------------------------------------- freezing
    def freeze(self, patterns: Any = "*") -> Holder:
        """Freeze the params named by ``patterns`` (flat names, layer names or globs such as
        ``"block_0/*"``; default all): ``fit`` leaves them bit-identical and spends nothing on
        them (:mod:`wframe.freezing`). The optimizer state restarts, as after a Keras recompile.
        """
        self._require_built()
        return self._set_frozen(self._frozen | freezing.select(self._params, patterns, "freeze"))

    def unfreeze(self, patterns: Any = "*") -> Holder:
        """Make the params named by ``patterns`` (default all) trainable again."""
        self._require_built()
        return self._set_frozen(self._frozen - freezing.select(self._params, patterns, "unfreeze"))

    def _set_frozen(self, frozen: frozenset[str]) -> Holder:
        if frozen != self._frozen:
            self._frozen, self.opt_state, self._compiled = frozenset(frozen), None, {}
        return self

    @property
    def frozen(self) -> frozenset[str]:
        """The flat names of the frozen params."""
        return self._frozen

    @property
    def trainable(self) -> dict[str, bool]:
        """``{"dense_0/W": True, ...}``: per param, whether ``fit`` trains it."""
        return {name: name not in self._frozen for name in data.flat_names(self.params)}

    @property
    def trainable_params(self) -> Params:
        """The params ``fit`` trains (all but the frozen ones), nested as ``params``: what
        the optimizer state is made for (``optimizer.init(model.trainable_params)``)."""
        return split(self.params, self._frozen)[0] if self._frozen else self.params

    def _validated(self, new: Any, old: Any, what: str) -> Any:
        return reorder(data.check_tree(new, old, what, self._backend), old)

    def _require_built(self) -> None:
        if self._params is None:
            raise RuntimeError(
                "the model has no params yet: call model.build((None, features)) or pass it data"
            )

    def _publish(self, ts: training.TrainState) -> None:
        """Expose a train state's arrays as the model's, in the model's key order."""
        self._params = reorder(ts.params, self._params)
        self._state = reorder(ts.state, self._state)
        self.opt_state = reorder(ts.opt_state, self.opt_state)
        self._masks = ts.masks
        self._loss_scale = ts.loss_scale

    def to_backend(self, name: str | Backend) -> Holder:
        """Move params, state and optimizer state to backend ``name``, keeping their dtypes.

        Changes no default: only this model moves. Raises before moving anything if the target
        cannot hold the model's dtype or run its optimizer.
        """
        target = _resolve(name)
        if self.built and target is not self._backend:
            target.asarray(np.zeros(1, self.dtype), dtype=self.dtype)  # raises if it lacks it
            precision.check_backend(self.policy, target)
            if self.optimizer is not None:
                training.check_optimizer(self.optimizer, target, moving=True)
            move = data.mover(target)
            self._params, self._state = tree_map(move, self._params), tree_map(move, self._state)
            self.opt_state = tree_map(move, self.opt_state)
            self._masks = tree_map(move, self._masks)
            self._loss_scale = tree_map(move, self._loss_scale)
        self._backend = target
        self._compiled = {}
        return self

    # ----------------------------------------------------------------- files
    def save_weights(self, path: str) -> None:
        """Write params and state to a safetensors file, atomically
        (:func:`wframe.weights.save_weights`)."""
        from wframe import weights

        weights.save_weights(self, path)

    def load_weights(self, path: str, **options: Any) -> Holder:
        """Load params and state by name, all checked first (:func:`wframe.weights.load_weights`:
        ``strict``, ``skip_mismatch``, ``rename``, ``dtype``, ``allow_nonfinite``)."""
        from wframe import weights

        weights.load_weights(self, path, **options)
        return self

    def load_checkpoint(self, path: str) -> Holder:
        """Restore what :class:`~wframe.callbacks.ModelCheckpoint` wrote: params, state,
        optimizer state and the step, epoch and RNG counters (:func:`wframe.checkpoint.load`)."""
        from wframe import checkpoint

        checkpoint.load(self, path)
        return self

    # ----------------------------------------------------------------- reporting
    def count_params(self) -> int:
        """Total number of parameters."""
        return sum(math.prod(a.shape) for a in tree_leaves(self.params))

    def summary(self, print_fn=print) -> str:
        """Print (and return) a table of layers, output shapes and parameter counts."""
        self._require_built()
        return _summary(self, print_fn)
