"""``weight_histograms``: the distribution of every weight matrix against its initializer's."""

from __future__ import annotations

from os import PathLike
from typing import Any

import numpy as np

from wframe.inspect import expected_std, select
from wframe.tree import flatten
from wframe.viz._common import figure, finish, grid, host


def weight_histograms(
    model: Any,
    path: str | PathLike | None = None,
    *,
    names: Any = None,
    bins: int = 50,
) -> Any:
    """One histogram panel per weight matrix (every param with ``ndim >= 2``), with the std its
    initializer draws with marked by dashed vertical lines at ``±std``
    (:func:`wframe.inspect.expected_std`; no lines when it is unknown).

    Args:
      model: a built :class:`wframe.Sequential`.
      path: where to save a PNG of the figure; ``None`` saves nothing.
      names: flat param or layer names to draw (default: every weight matrix).
      bins: histogram bins per panel.

    Returns:
      The ``matplotlib.figure.Figure``, one axes per weight matrix.

    Raises:
      ValueError: the model has no weight matrix, or a name is unknown (the names are listed).
      RuntimeError: the model was never built.
    """
    leaves = dict(flatten(model.params)) if getattr(model, "built", False) else {}
    chosen = [n for n in select(model, names, "weight_histograms") if leaves[n].ndim >= 2]
    if not chosen:
        raise ValueError(
            "weight_histograms: no weight matrix (param with ndim >= 2) among "
            f"{[f'{n} {tuple(a.shape)}' for n, a in leaves.items()]}"
        )
    stds = expected_std(model)
    rows, cols = grid(len(chosen), max_cols=3)
    fig = figure(4.0 * cols, 3.0 * rows)
    for i, name in enumerate(chosen):
        ax = fig.add_subplot(rows, cols, i + 1)
        w = host(leaves[name], name).ravel()
        ax.hist(w[np.isfinite(w)], bins=bins, color="tab:blue", alpha=0.8)
        std = stds.get(name)
        if std is not None:
            ax.axvline(-std, color="tab:red", linestyle="--", label=f"init ±std ({std:.3g})")
            ax.axvline(std, color="tab:red", linestyle="--")
            ax.legend(fontsize=8)
        ax.set_title(f"{name} {tuple(leaves[name].shape)}: std {w.std():.3g}", fontsize=9)
        ax.set_xlabel("value")
        ax.set_ylabel("count")
    return finish(fig, path)
