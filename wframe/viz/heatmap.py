"""``weight_heatmap``: one weight array as an image, coloured by sign around 0."""

from __future__ import annotations

import math
from os import PathLike
from typing import Any

import numpy as np

from wframe.viz._common import DIVERGING, figure, finish, grid, param, symmetric_norm


def _filter_mosaic(w: np.ndarray) -> np.ndarray:
    """A (kh, kw, cin, cout) kernel as cout images of (kh, cin * (kw + 1) - 1): each filter's
    input-channel slices side by side, split by a blank (NaN) column."""
    kh, kw, cin, cout = w.shape
    out = np.full((cout, kh, cin * (kw + 1) - 1), np.nan)
    for c in range(cin):
        out[:, :, c * (kw + 1) : c * (kw + 1) + kw] = np.moveaxis(w[:, :, c, :], -1, 0)
    return out


def weight_heatmap(
    model: Any,
    name: str,
    path: str | PathLike | None = None,
    *,
    cmap: str = DIVERGING,
    max_filters: int = 64,
) -> Any:
    """Draw the param ``name`` as a heatmap coloured around 0 (white), with a colorbar.

    A dense kernel ``W`` (in, out) is one image, rows the input units and columns the output
    units. A conv kernel (kh, kw, cin, cout) is a grid of per-filter images (the first
    ``max_filters`` output filters), each showing its ``cin`` input-channel slices side by
    side, with one shared scale. A 1-D param (a bias) is one row; other shapes are drawn as
    ``(prod(shape[:-1]), shape[-1])``.

    Args:
      model: a built :class:`wframe.Sequential`.
      name: the flat param name, e.g. ``"dense_0/W"``.
      path: where to save a PNG of the figure; ``None`` saves nothing.
      cmap: a diverging colormap name.
      max_filters: how many conv filters to draw at most.

    Returns:
      The ``matplotlib.figure.Figure``.

    Raises:
      ValueError: ``name`` is not a param of ``model`` (the message lists them).
      RuntimeError: the model was never built.
    """
    w = param(model, name, "weight_heatmap")
    norm = symmetric_norm(w)
    if w.ndim == 4:
        images = _filter_mosaic(w)[:max_filters]
        rows, cols = grid(len(images), max_cols=8)
        aspect = images.shape[2] / images.shape[1]
        fig = figure(min(2 + 1.4 * cols * min(aspect, 4), 20), 1.0 + 1.4 * rows)
        axes = [fig.add_subplot(rows, cols, i + 1) for i in range(len(images))]
        for j, (ax, img) in enumerate(zip(axes, images, strict=True)):
            im = ax.imshow(img, cmap=cmap, norm=norm, interpolation="nearest")
            ax.set_title(f"filter {j}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        shown = f"{w.shape[3]} filters"
        if len(images) < w.shape[3]:
            shown = f"first {len(images)} of {shown}"
        fig.suptitle(f"{name} {w.shape}: {shown}, {w.shape[2]} input channel(s) side by side")
        fig.colorbar(im, ax=axes, label="weight")
        return finish(fig, path)
    img = w.reshape(1, -1) if w.ndim <= 1 else w.reshape(math.prod(w.shape[:-1]), w.shape[-1])
    h, wd = img.shape
    scale = 6.0 / max(h, wd)
    fig = figure(min(max(2.5 + wd * scale, 4.0), 12), min(max(1.0 + h * scale, 2.0), 10))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(img, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    ax.set_xlabel("output unit")
    ax.set_ylabel("input unit" if w.ndim == 2 else ("-" if w.ndim <= 1 else "flattened input"))
    ax.set_title(f"{name} {w.shape}")
    fig.colorbar(im, ax=ax, label="weight")
    return finish(fig, path)
