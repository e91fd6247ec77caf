"""``report``: one self-contained HTML page about a model, its weights and its training."""

from __future__ import annotations

import base64
import html
import os
from os import PathLike
from typing import Any

from wframe.inspect import NEAR_ZERO, weight_stats
from wframe.tree import flatten
from wframe.viz._common import png_bytes
from wframe.viz.curves import GRAD_PREFIX, gradient_norms, training_curves
from wframe.viz.heatmap import weight_heatmap
from wframe.viz.histograms import weight_histograms

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; display: block; margin: 1em 0; }
"""
_NUMBERS = ("mean", "std", "min", "max", "l1", "l2", "sparsity", "near_zero", "init_std")


def _img(fig: Any, alt: str) -> str:
    data = base64.b64encode(png_bytes(fig)).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(rows: list[dict]) -> str:
    cols = ("name", "shape", *_NUMBERS[:8], "initializer", "init_std")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = r[c]
            text = "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
            cells.append(f"<td>{html.escape(text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def report(model: Any, history: Any, path: str | PathLike, *, title: str | None = None) -> str:
    """Write one self-contained HTML page: the model summary, the weight statistics and every
    plot, embedded as base64 PNG (no external file or URL).

    The plots: training curves (when ``history`` holds epochs), the weight histograms, a
    heatmap of each 2-D weight, and the gradient norms (when ``history.steps`` holds
    ``grad_norm/...`` series from ``GradientMonitor``).

    Args:
      model: a built :class:`wframe.Sequential`.
      history: what ``fit`` returned (or ``model.history``, or ``None`` for no training plots).
      path: the ``.html`` file to write.
      title: the page title (default: "wframe model report").

    Returns:
      ``path`` as a string.

    Raises:
      RuntimeError: the model was never built.
    """
    rows = weight_stats(model, print_fn=None)
    lines: list[str] = []
    model.summary(print_fn=lines.append)
    title = title or "wframe model report"
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Model summary</h2>",
        f"<pre>{html.escape(chr(10).join(lines))}</pre>",
        "<h2>Weight statistics</h2>",
        _table(rows),
        f"<p>sparsity: fraction of exact zeros; near_zero: fraction with |w| &lt; "
        f"{NEAR_ZERO:g}&middot;max|w| of the parameter (or 0); init_std: the std the layer's "
        "initializer draws with for that shape.</p>",
    ]
    logs = getattr(history, "history", history if isinstance(history, dict) else None)
    if logs and any(len(v) for v in logs.values()):
        parts += ["<h2>Training curves</h2>", _img(training_curves(history), "training curves")]
    matrices = [n for n, a in flatten(model.params) if a.ndim >= 2]
    if matrices:
        parts += ["<h2>Weight histograms</h2>", _img(weight_histograms(model), "histograms")]
    two_d = [n for n, a in flatten(model.params) if a.ndim == 2]
    if two_d:
        parts.append("<h2>Weight heatmaps</h2>")
        parts += [_img(weight_heatmap(model, n), f"heatmap of {n}") for n in two_d]
    steps = getattr(history, "steps", None) or {}
    if any(k.startswith(GRAD_PREFIX) and len(v) for k, v in steps.items()):
        parts += ["<h2>Gradient norms</h2>", _img(gradient_norms(history), "gradient norms")]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
    path = os.fspath(path)
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path
