"""Occlusion: the drop of the target output when a window of pixels is covered."""

from __future__ import annotations

from typing import Any

import numpy as np

from wframe import data
from wframe.backends import backend_of
from wframe.explain.common import (
    broadcast_baseline,
    chunks,
    compiled,
    concat,
    per_call,
    prepare,
    repeat_rows,
    scores,
)
from wframe.types import Array


def _pair(value: Any, what: str) -> tuple[int, int]:
    pair = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{what} must be an int or an (h, w) pair, got {value!r}")
    return tuple(data.as_int(v, what) for v in pair)


def _occluded(model, params, state, x, masks, base, w):
    xp = backend_of(x).xp
    m, p = x.shape[0], masks.shape[0]
    keep = xp.expand_dims(1 - masks, axis=0)
    rows = xp.expand_dims(x, axis=1) * keep + xp.expand_dims(base * masks, axis=0)
    rows = xp.reshape(rows, (m * p, *x.shape[1:]))
    drops = scores(model, params, state, x, w)[:, None] - xp.reshape(
        scores(model, params, state, rows, repeat_rows(w, p)), (m, p)
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
) -> Array:
    """Occlusion (Zeiler and Fergus, 2014): the drop of the target output when a window of
    pixels (all channels) is replaced by ``baseline``, averaged over the windows covering each
    pixel, as captum's ``Occlusion``.

    Args:
      x: images (batch, H, W, C).
      window: (h, w) of the occluded patch (an int for a square).
      stride: (h, w) step between patches (captum's default 1). Where it does not divide the
        image, the last patch of the row or column hangs over the edge (clipped), as captum.
      baseline: the replacement value: a number, or one image of shape (H, W, C).

    Returns:
      Shaped like ``x`` (each pixel's value repeated over its channels), an array of the
      model's backend.
    """
    (wh, ww), (sh, sw) = _pair(window, "occlusion: window"), _pair(stride, "occlusion: stride")
    x, w = prepare(model, x, target)
    if x.ndim != 4:
        raise ValueError(f"occlusion expects images (batch, H, W, C), got shape {tuple(x.shape)}")
    n, h, wd = x.shape[:3]
    if wh > h or ww > wd:
        raise ValueError(f"occlusion: window {(wh, ww)} is larger than the images ({h}, {wd})")
    base = broadcast_baseline(model, x[:1], baseline)[0]
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
    fn = compiled(model, "occlusion", _occluded)
    parts, counts = [0.0] * len(per_samples), 0
    for c in chunks(len(tops), patches):  # patch masks made and moved one chunk at a time
        t, left = tops[c, None], lefts[c, None]
        masks = ((rr >= t) & (rr < t + wh))[:, :, None] & ((cc >= left) & (cc < left + ww))[:, None]
        counts = counts + masks.sum(axis=0).reshape(-1)
        mk = model.backend.asarray(masks[..., None], dtype=model.dtype)
        for i, s in enumerate(per_samples):
            parts[i] = parts[i] + fn(model.params, model.state, x[s], mk, base, w[s])
    xp = model.backend.xp
    scale = model.backend.asarray(1.0 / np.maximum(counts, 1), dtype=model.dtype)
    per_pixel = xp.reshape(concat(parts) * scale, (n, h, wd, 1))
    return xp.broadcast_to(per_pixel, x.shape)
