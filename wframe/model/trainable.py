"""Which params ``fit`` trains: ``freeze``/``unfreeze`` by flat name, layer name or glob
(:mod:`wframe.model.freezing` chooses the names), the frozen set, and the trainable params.

:class:`Trainable` is a base of :class:`~wframe.model.arrays.Holder`: it keeps the frozen set
beside the arrays, and a change of it drops the compiled functions and restarts the optimizer
state.
"""

from __future__ import annotations

from typing import Any

from wframe import assigned
from wframe.model import freezing
from wframe.tree import split
from wframe.types import Params


class Trainable:
    """The frozen set of a model (a base class of :class:`~wframe.model.arrays.Holder`)."""

    def freeze(self, patterns: Any = "*") -> Any:
        """Freeze the params named by ``patterns`` (flat names, layer names or globs such as
        ``"block_0/*"``; default all): ``fit`` leaves them bit-identical and spends nothing on
        them (:mod:`wframe.model.freezing`). The optimizer state restarts, as after a Keras
        recompile.
        """
        return self.set_frozen(self._frozen | freezing.select(self.params, patterns, "freeze"))

    def unfreeze(self, patterns: Any = "*") -> Any:
        """Make the params named by ``patterns`` (default all) trainable again."""
        return self.set_frozen(self._frozen - freezing.select(self.params, patterns, "unfreeze"))

    def set_frozen(self, frozen: frozenset[str]) -> Any:
        """Freeze exactly the params named in ``frozen`` (flat names); a change restarts the
        optimizer state."""
        self.require_built("set_frozen")
        unknown = sorted(set(frozen) - set(assigned.flat_names(self.params)))
        if unknown:
            raise ValueError(f"set_frozen: {self.label} has no params named {unknown}")
        if frozen != self._frozen:
            self.refuse_while_running("change the frozen params", own_thread_ok=True)
            self._frozen, self._trainer = frozenset(frozen), None
            self.opt_state = None
        return self

    @property
    def frozen(self) -> frozenset[str]:
        """The flat names of the frozen params."""
        return self._frozen

    @property
    def trainable(self) -> dict[str, bool]:
        """``{"dense_0/W": True, ...}``: per param, whether ``fit`` trains it."""
        return {name: name not in self._frozen for name in assigned.flat_names(self.params)}

    @property
    def trainable_params(self) -> Params:
        """The params ``fit`` trains (all but the frozen ones), nested as ``params``: what
        the optimizer state is made for (``optimizer.init(model.trainable_params)``)."""
        return split(self.params, self._frozen)[0] if self._frozen else self.params
