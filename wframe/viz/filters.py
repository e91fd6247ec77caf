"""``filters``: what a convolution layer's filters look for, one image per output filter."""

from __future__ import annotations

from os import PathLike
from typing import Any

import numpy as np

from wframe.inspect import require_built
from wframe.tree import flatten
from wframe.viz._common import DIVERGING, figure, finish, grid, host, symmetric_norm


def _kernel(model: Any, layer: str) -> tuple[str, Any]:
    """``(flat name, array)`` of ``layer``'s 4-D kernel; a clear error listing the conv layers."""
    require_built(model, "filters")
    leaves = dict(flatten(model.params))
    kernels = {n: a for n, a in leaves.items() if a.ndim == 4}
    if layer in kernels:
        return layer, kernels[layer]
    mine = {n: a for n, a in kernels.items() if n.rsplit("/", 1)[0] == layer}
    if len(mine) == 1:
        return next(iter(mine.items()))
    conv_layers = sorted({n.rsplit("/", 1)[0] for n in kernels})
    layers = sorted({n.rsplit("/", 1)[0] for n in leaves if "/" in n})
    if layer in layers:
        held = [f"{n} {tuple(a.shape)}" for n, a in leaves.items() if n.startswith(f"{layer}/")]
        raise ValueError(
            f"filters: layer {layer!r} has no conv kernel (kh, kw, cin, cout) but {held}; "
            f"layers with conv kernels: {conv_layers}"
        )
    raise ValueError(
        f"filters: unknown layer {layer!r}. Layers with conv kernels: {conv_layers}; all layers "
        f"with parameters: {layers}"
    )


def filters(
    model: Any,
    layer: str,
    path: str | PathLike | None = None,
    *,
    max_filters: int = 64,
    cmap: str = DIVERGING,
) -> Any:
    """Draw a conv layer's filters (most telling for the first layer), one image per output
    filter.

    With 3 input channels each filter is an RGB image, ``0.5 + w / (2 max|w|)`` over the whole
    kernel (mid-gray is 0, so filters compare). Otherwise each image is the filter's mean over
    its input channels on a diverging colormap centred on 0, with one colorbar.

    Args:
      model: a built :class:`wframe.Sequential`.
      layer: the conv layer's name (``"conv2d_0"``) or its kernel's flat name.
      path: where to save a PNG of the figure; ``None`` saves nothing.
      max_filters: how many output filters to draw at most.
      cmap: the diverging colormap of the channel-averaged images.

    Returns:
      The ``matplotlib.figure.Figure``: one axes per drawn filter (plus the colorbar's).

    Raises:
      ValueError: ``layer`` is unknown or holds no 4-D kernel (the conv layers are listed).
      RuntimeError: the model was never built.
    """
    name, kernel = _kernel(model, layer)
    w = host(kernel, name)
    kh, kw, cin, cout = w.shape
    n = min(cout, max_filters)
    rows, cols = grid(n, max_cols=8)
    fig = figure(1.2 + 1.3 * cols, 0.9 + 1.3 * rows)
    rgb = cin == 3
    peak = float(np.abs(w).max()) or 1.0
    norm = None if rgb else symmetric_norm(w.mean(axis=2))
    axes = []
    for j in range(n):
        ax = fig.add_subplot(rows, cols, j + 1)
        if rgb:
            im = ax.imshow(0.5 + w[:, :, :, j] / (2 * peak), interpolation="nearest")
        else:
            im = ax.imshow(
                w[:, :, :, j].mean(axis=2), cmap=cmap, norm=norm, interpolation="nearest"
            )
        ax.set_title(f"filter {j}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        axes.append(ax)
    how = "RGB" if rgb else (f"mean over {cin} input channels" if cin > 1 else "1 input channel")
    shown = f"{n} of {cout}" if n < cout else f"{cout}"
    fig.suptitle(f"{name} {w.shape}: {shown} filters, {how}")
    if not rgb:
        fig.colorbar(im, ax=axes, label="weight")
    return finish(fig, path)
