"""``training_curves`` (per-epoch logs) and ``gradient_norms`` (per-step gradient series)."""

from __future__ import annotations

from os import PathLike
from typing import Any

import numpy as np

from wframe.viz._common import figure, finish, grid, matplotlib

GRAD_PREFIX = "grad_norm/"


def _series(values: Any, key: str) -> np.ndarray:
    try:
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"the series {key!r} must be a list of numbers, got {values!r}") from err


def _logs(history: Any, attr: str, what: str) -> dict:
    if isinstance(history, dict):
        return history
    logs = getattr(history, attr, None)
    if not isinstance(logs, dict):
        raise TypeError(
            f"{what} takes a wf.callbacks.History (what fit returns) or a dict of lists, got "
            f"{type(history).__name__}"
        )
    return logs


def training_curves(history: Any, path: str | PathLike | None = None) -> Any:
    """One panel per logged quantity: ``loss`` with ``val_loss``, each metric with its
    ``val_`` twin (and any other per-epoch log, such as ``penalty``), against the epoch.

    Args:
      history: the :class:`~wframe.callbacks.History` ``fit`` returns, or a dict such as
        ``{"loss": [...], "val_loss": [...]}``.
      path: where to save a PNG of the figure; ``None`` saves nothing.

    Returns:
      The ``matplotlib.figure.Figure``, one axes per quantity (``loss`` first).

    Raises:
      ValueError: there is nothing logged.
    """
    logs = {k: _series(v, k) for k, v in _logs(history, "history", "training_curves").items()}
    logs = {k: v for k, v in logs.items() if v.size}
    if not logs:
        raise ValueError("training_curves: the history holds no epochs; fit the model first")
    bases = sorted({k.removeprefix("val_") for k in logs}, key=lambda b: (b != "loss", b))
    rows, cols = grid(len(bases), max_cols=3)
    fig = figure(4.5 * cols, 3.2 * rows)
    epochs = getattr(history, "epoch", None)
    for i, base in enumerate(bases):
        ax = fig.add_subplot(rows, cols, i + 1)
        for key, style in ((base, "-"), (f"val_{base}", "--")):
            if key in logs:
                y = logs[key]
                x = np.arange(1, y.size + 1)
                if epochs is not None and len(epochs) == y.size:
                    x = np.asarray(epochs) + 1
                ax.plot(x, y, style, marker="o", markersize=3, label=key)
        ax.xaxis.set_major_locator(matplotlib().ticker.MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(base)
        ax.set_title(base)
        ax.legend()
        ax.grid(alpha=0.3)
    return finish(fig, path)


def gradient_norms(history: Any, path: str | PathLike | None = None) -> Any:
    """Every per-parameter gradient-norm series (``history.steps["grad_norm/dense_0/W"]``, as
    :class:`wf.callbacks.GradientMonitor` records them) on a log y axis, against
    ``history.steps["step"]`` (the optimizer step of each reading) when it is there, else the
    reading's index. NaN entries (a param missing from a reading) leave gaps.

    Args:
      history: a :class:`~wframe.callbacks.History`, or its ``steps`` dict.
      path: where to save a PNG of the figure; ``None`` saves nothing.

    Returns:
      The ``matplotlib.figure.Figure`` with one axes, one line per parameter.

    Raises:
      ValueError: there are no ``grad_norm/...`` series (add ``GradientMonitor`` to ``fit``).
    """
    steps = _logs(history, "steps", "gradient_norms")
    series = {
        k[len(GRAD_PREFIX) :]: _series(v, k) for k, v in steps.items() if k.startswith(GRAD_PREFIX)
    }
    series = {k: v for k, v in series.items() if v.size}
    if not series:
        raise ValueError(
            "gradient_norms: the history has no per-parameter gradient norms (keys "
            f"'grad_norm/<param>' in history.steps; it has {sorted(steps)}): add "
            "wf.callbacks.GradientMonitor() to fit(..., callbacks=[...])"
        )
    fig = figure(8.0, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    at = steps.get("step")  # GradientMonitor's common x axis: the optimizer step of a reading
    for name, y in series.items():
        x = np.asarray(at, dtype=float) if at is not None and len(at) == y.size else None
        ax.plot(np.arange(y.size) if x is None else x, y, label=name, linewidth=1.2)
    values = np.concatenate(list(series.values()))
    if np.any(np.isfinite(values) & (values > 0)):  # a log axis of no positive value warns
        ax.set_yscale("log")
    ax.set_xlabel("optimizer step" if at is not None else "reading")
    ax.set_ylabel("gradient L2 norm")
    ax.set_title("per-parameter gradient norms")
    ax.legend(fontsize=8, ncols=max(1, len(series) // 12 + 1))
    ax.grid(alpha=0.3, which="both")
    return finish(fig, path)
