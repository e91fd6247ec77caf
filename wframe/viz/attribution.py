"""``attribution_map``: per-pixel attributions overlaid on the image they explain."""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import Any

import numpy as np

from wframe.viz._common import (
    DIVERGING,
    figure,
    finish,
    grid,
    host,
    matplotlib,
    symmetric_norm,
)

_CHANNELS = (1, 3, 4)


def _images(image: np.ndarray, batch: bool | None) -> np.ndarray:
    """``image`` as (N, H, W, C): (H, W), (H, W, C), (N, H, W) or (N, H, W, C)."""
    shape = image.shape
    if image.ndim == 3 and batch is None:
        batch = shape[-1] not in _CHANNELS  # (H, W, 1|3|4) is one image, else a gray batch
    if image.ndim == 2 and not batch:
        return image[None, :, :, None]
    if image.ndim == 3:
        return image[..., None] if batch else image[None]
    if image.ndim == 4 and batch is not False:
        return image
    raise ValueError(
        "attribution_map: image must be (H, W) or (H, W, C), or a batch (N, H, W) or "
        f"(N, H, W, C), got shape {shape}" + (f" with batch={batch}" if batch is not None else "")
    )


def _attributions(attr: np.ndarray, images: np.ndarray, shape: tuple) -> np.ndarray:
    """``attr`` as (N, H, W): summed over channels when it has them."""
    n, h, w, c = images.shape
    accepted = [(n, h, w, c), (n, h, w)] + ([(h, w, c), (h, w)] if n == 1 else [])
    if attr.shape not in accepted:
        raise ValueError(
            f"attribution_map: attributions of shape {attr.shape} do not match the image of "
            f"shape {shape}; expected one of {sorted(set(accepted), key=len, reverse=True)}"
        )
    if not np.isfinite(attr).all():
        raise ValueError("attribution_map: attributions contain NaN or inf")
    if attr.ndim == 4 or (n == 1 and attr.shape == (h, w, c) != (n, h, w)):
        attr = attr.reshape(n, h, w, c).sum(axis=-1)
    return attr.reshape(n, h, w)


def attribution_map(
    image: Any,
    attributions: Any,
    path: str | PathLike | None = None,
    *,
    titles: Sequence[str] | None = None,
    cmap: str = DIVERGING,
    alpha: float = 0.6,
    batch: bool | None = None,
    max_images: int = 64,
) -> Any:
    """Overlay attributions on their image: the image in gray, the attributions on a diverging
    colormap centred on 0 (red: pushes the output up, blue: down), one shared colorbar.

    Args:
      image: (H, W) or (H, W, C), or a batch (N, H, W) or (N, H, W, C) drawn as a grid; an
        array of any backend. A 3-D array is one color image when its last axis is 1, 3 or 4,
        otherwise a batch of gray images; ``batch`` overrides that guess.
      attributions: the image's shape (summed over channels, the signed total per pixel) or
        its shape without the channel axis.
      path: where to save a PNG of the figure; ``None`` saves nothing.
      titles: one title per image.
      cmap: the diverging colormap of the overlay.
      alpha: the overlay's opacity.
      batch: whether a 3-D ``image`` is a batch (default: guessed as above).
      max_images: draw at most this many images of a batch.

    Returns:
      The ``matplotlib.figure.Figure``: one axes per image plus the colorbar's.

    Raises:
      ValueError: the shapes are not those above or do not match, or attributions are not
        finite, or ``titles`` has the wrong length.
    """
    img = host(image, "attribution_map: image")
    images = _images(img, batch)
    attr = _attributions(host(attributions, "attribution_map: attributions"), images, img.shape)
    n = min(len(images), max_images)
    if titles is not None and len(titles) != len(images):
        raise ValueError(
            f"attribution_map: titles has {len(titles)} entries for {len(images)} image(s)"
        )
    norm = symmetric_norm(attr[:n])
    rows, cols = grid(n, max_cols=6)
    fig = figure(1.0 + 2.6 * cols, 0.6 + 2.6 * rows)
    axes = []
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        gray = images[i][..., :3].mean(axis=-1)  # RGB(A) to gray; 1 channel stays
        ax.imshow(gray, cmap="gray", interpolation="nearest")
        ax.imshow(attr[i], cmap=cmap, norm=norm, alpha=alpha, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=9)
        axes.append(ax)
    # The colorbar gets an opaque mappable: the overlay's alpha would wash its colours out.
    mpl = matplotlib()
    fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, label="attribution")
    return finish(fig, path)
