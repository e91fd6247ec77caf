"""Attributions: how much each input feature contributes to one output of a model.

Gradient x input, integrated gradients, SmoothGrad, occlusion and Shapley values, for any
model (:class:`wframe.Sequential` or a graph :class:`wframe.Model`) on any backend. Input
gradients come from the model's own gradient path, chosen by its arrays' backend as in
training: autodiff (``backend.value_and_grad`` of the selected output w.r.t. the inputs) where
the backend has it, the layers' hand-written ``backprop`` with ``input_grad=True`` and a
one-hot ``dy`` elsewhere. Every method evaluates many inputs per compiled call (integration
steps, noise draws, patches and coalitions are stacked into the batch, in chunks of at most a
few thousand rows), never one sample at a time, in inference mode.

Conventions shared by every function:

- ``x`` is NumPy or an array of the model's backend; the results are arrays of the model's
  backend (``wf.to_numpy`` copies them to the host), in the model's dtype, shaped like ``x``.
- A model of several inputs takes ``x`` as ``predict`` does (a list in input order or a dict
  by input name) and gives one attribution per input, a list (a dict when ``x`` was a dict).
  Integer inputs (token ids, ``int32``) get no attribution (``None`` in their place) and are
  held at ``x``: never interpolated, noised, occluded or replaced by a background.
- ``output`` picks which output of a model of several is explained: its name (one of
  ``model.output_names``) or index; required there, optional for a model of one output.
- ``target`` picks the entry of that output explained: an int class index, an array of one
  index per sample, or ``None`` for the model's predicted class of each sample. Outputs with
  more than one axis are indexed flat.

One module per family: ``gradients`` (gradient x input, integrated gradients, SmoothGrad),
``occlusion``, ``shapley``, and ``common`` for what they share (outputs and targets, inputs
and baselines, selected outputs and their input gradients, chunks of rows per compiled call).
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
