"""Occlusion: the drop of the target output when a window of pixels is covered."""

from __future__ import annotations

from typing import Any

import numpy as np

from wframe import data
from wframe.backends import backend_of
from wframe.explain.common import (
    Head,
    Prepared,
    broadcast_baseline,
    chunks,
    compiled,
    concat,
    is_float,
    per_call,
    per_input,
    prepare,
    repeat_rows,
    results,
    scores,
    take,
)
from wframe.types import Array


def _pair(value: Any, what: str) -> tuple[int, int]:
    pair = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{what} must be an int or an (h, w) pair, got {value!r}")
    return tuple(data.as_int(v, what) for v in pair)


def _occluded(model, head: Head, which: int, params, state, xs, masks, base, w):
    """Per sample and pixel, the summed drops of the patches (``masks``) covering input
    ``which``; the other inputs stay as they are."""
    xp = backend_of(w).xp
    x = xs[which]
    m, p = x.shape[0], masks.shape[0]
    keep = xp.expand_dims(1 - masks, axis=0)
    rows = xp.expand_dims(x, axis=1) * keep + xp.expand_dims(base * masks, axis=0)
    rows = xp.reshape(rows, (m * p, *x.shape[1:]))
    covered = tuple(rows if i == which else repeat_rows(a, p) for i, a in enumerate(xs))
    drops = scores(model, head, params, state, xs, w)[:, None] - xp.reshape(
        scores(model, head, params, state, covered, repeat_rows(w, p)), (m, p)
    )
    return xp.matmul(drops, xp.reshape(masks[..., 0], (p, -1)))  # (m, H * W)


def occlusion(
    model,
    x: Any,
    target: Any = None,
    *,
    window: Any = (2, 2),
    stride: Any = (1, 1),
    baseline: Any = 0.0,
    output: Any = None,
) -> Any:
    """Occlusion (Zeiler and Fergus, 2014): the drop of the target output when a window of
    pixels (all channels) is replaced by ``baseline``, averaged over the windows covering each
    pixel, as captum's ``Occlusion``.

    Args:
      model: a :class:`wframe.Sequential` or graph :class:`wframe.Model`.
      x: images (batch, H, W, C). For a model of several inputs a list or a dict by input
        name: each image input (float, 4-D) is occluded in turn with the others as they are
        (as captum does for a tuple of inputs); the other inputs get ``None``.
      target: the entry of the output explained: a class index, one per sample, or ``None``
        for each sample's predicted class (see the module docstring).
      window: (h, w) of the occluded patch (an int for a square).
      stride: (h, w) step between patches (captum's default 1). Where it does not divide the
        image, the last patch of the row or column hangs over the edge (clipped), as captum.
      baseline: the replacement value: a number, or one image of shape (H, W, C); for several
        inputs one number for all, or a list / dict of those per image input.
      output: the name or index of the output explained (required when there are several).

    Returns:
      Shaped like ``x`` (each pixel's value repeated over its channels), an array of the
      model's backend (one per input, as ``x`` was given).
    """
    window, stride = _pair(window, "occlusion: window"), _pair(stride, "occlusion: stride")
    prep = prepare(model, x, target, output, "occlusion")
    images = tuple(a.ndim == 4 and is_float(a) for a in prep.xs)
    if not any(images):
        shapes = [tuple(a.shape) for a in prep.xs]
        got = f"got shape {shapes[0]}" if len(shapes) == 1 else f"got inputs of shapes {shapes}"
        raise ValueError(
            f"occlusion expects images (batch, H, W, C), {got}; a gradient method "
            "(integrated_gradients) attributes any float input"
        )
    bases = per_input(model, baseline, "occlusion: baseline", images)
    named = len(prep.xs) > 1
    out = [None] * len(prep.xs)
    for i, name in enumerate(model.input_names):
        if images[i]:
            out[i] = _occlude(model, prep, i, window, stride, bases[i], repr(name) if named else "")
    return results(model, prep, tuple(out))


def _occlude(model, prep: Prepared, which: int, window, stride, baseline, name: str) -> Array:
    """Occlusion of input ``which`` (images), the others held as they are."""
    (wh, ww), (sh, sw) = window, stride
    x = prep.xs[which]
    n, h, wd = x.shape[:3]
    if wh > h or ww > wd:
        images = f"the images of input {name}" if name else "the images"
        raise ValueError(f"occlusion: window {(wh, ww)} is larger than {images} ({h}, {wd})")
    what = f"occlusion: baseline[{name}]" if name else "baseline"
    base = broadcast_baseline(model, x[:1], baseline, what)[0]
    # As captum: ceil((size - window) / stride) + 1 windows per axis, the last one clipped.
    tops, lefts = np.meshgrid(
        np.arange(-(-(h - wh) // sh) + 1) * sh,
        np.arange(-(-(wd - ww) // sw) + 1) * sw,
        indexing="ij",
    )
    tops, lefts = tops.ravel(), lefts.ravel()
    rr, cc = np.arange(h), np.arange(wd)
    patches = min(len(tops), per_call(model))
    per_samples = list(chunks(n, per_call(model, patches)))
    fn = compiled(model, "occlusion", prep.head, _occluded, which)
    parts, counts = [0.0] * len(per_samples), 0
    for c in chunks(len(tops), patches):  # patch masks made and moved one chunk at a time
        t, left = tops[c, None], lefts[c, None]
        masks = ((rr >= t) & (rr < t + wh))[:, :, None] & ((cc >= left) & (cc < left + ww))[:, None]
        counts = counts + masks.sum(axis=0).reshape(-1)
        mk = model.backend.asarray(masks[..., None], dtype=model.dtype)
        for i, s in enumerate(per_samples):
            fn_args = (take(prep.xs, s), mk, base, prep.w[s])
            parts[i] = parts[i] + fn(model.params, model.state, *fn_args)
    xp = model.backend.xp
    scale = model.backend.asarray(1.0 / np.maximum(counts, 1), dtype=model.dtype)
    per_pixel = xp.reshape(concat(parts) * scale, (n, h, wd, 1))
    return xp.broadcast_to(per_pixel, x.shape)
