"""Models: arrays on one backend plus Keras' training API. :class:`Model` is the base every
model kind implements (``wf.Model(inputs, outputs)`` makes a :class:`Functional`, a graph);
:class:`Sequential` is the chain."""

from wframe.model.arrays import Holder, Snapshot
from wframe.model.base import Model
from wframe.model.functional import Functional
from wframe.model.sequential import Sequential

__all__ = ["Functional", "Holder", "Model", "Sequential", "Snapshot"]
