"""Attributions: how much each input feature contributes to one output of a model.

Gradient x input, integrated gradients, SmoothGrad, occlusion and Shapley values, for any
:class:`wframe.Sequential` on any backend. Input gradients come from the model's own gradient
path, chosen by its arrays' backend as in training: autodiff (``backend.value_and_grad`` of the
selected output w.r.t. the input) where the backend has it, the layers' hand-written ``backprop``
with ``input_grad=True`` and a one-hot ``dy`` elsewhere. Every method evaluates many inputs per
compiled call (integration steps, noise draws, patches and coalitions are stacked into the
batch, in chunks of at most a few thousand rows), never one sample at a time, in inference mode.

Conventions shared by every function:

- ``x`` is NumPy or an array of the model's backend; the results are arrays of the model's
  backend (``wf.to_numpy`` copies them to the host), in the model's dtype, shaped like ``x``.
- ``target`` picks the output explained: an int class index, an array of one index per sample,
  or ``None`` for the model's predicted class of each sample. Outputs with more than one axis
  are indexed flat.

One module per family: ``gradients`` (gradient x input, integrated gradients, SmoothGrad),
``occlusion``, ``shapley``, and ``common`` for what they share (targets, selected outputs and
their input gradients, chunks of rows per compiled call).
"""

from __future__ import annotations

from wframe.explain import common
from wframe.explain.gradients import (
    Attribution,
    gradient_x_input,
    integrated_gradients,
    smoothgrad,
)
from wframe.explain.occlusion import occlusion
from wframe.explain.shapley import shapley_sampling

__all__ = [
    "Attribution",
    "common",
    "gradient_x_input",
    "integrated_gradients",
    "occlusion",
    "shapley_sampling",
    "smoothgrad",
]
