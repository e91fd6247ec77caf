"""What every plot shares: the lazy matplotlib import, figures, norms, grids and saving.

matplotlib is an optional extra (``pip install 'wframe[viz]'``), imported only when a plot is
drawn. Figures are ``matplotlib.figure.Figure`` objects on an Agg canvas: pyplot's global state
is never touched, so plotting needs no display and leaks no open figures.
"""

from __future__ import annotations

import io
import math
from os import PathLike
from typing import Any

import numpy as np

from wframe.backends import to_numpy
from wframe.inspect import require_built
from wframe.tree import flatten

INSTALL = "pip install 'wframe[viz]'"
#: The diverging colormap of signed values (weights, attributions): blue < 0 < red.
DIVERGING = "RdBu_r"


def matplotlib() -> Any:
    """The ``matplotlib`` module, or a ``ModuleNotFoundError`` saying how to install it."""
    try:
        import matplotlib
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.cm  # noqa: F401
        import matplotlib.colors  # noqa: F401
        import matplotlib.figure  # noqa: F401
        import matplotlib.ticker  # noqa: F401
    except ImportError as err:
        raise ModuleNotFoundError(
            f"wframe.viz draws with matplotlib, an optional extra that is not installed: "
            f"{INSTALL} (or pip install matplotlib)",
            name="matplotlib",
        ) from err
    return matplotlib


def figure(width: float, height: float) -> Any:
    """A new ``Figure`` of ``width`` x ``height`` inches on an Agg canvas, laid out by
    matplotlib's constrained layout."""
    mpl = matplotlib()
    fig = mpl.figure.Figure(figsize=(width, height), layout="constrained")
    mpl.backends.backend_agg.FigureCanvasAgg(fig)
    return fig


def finish(fig: Any, path: str | PathLike | None) -> Any:
    """Save ``fig`` as a PNG at ``path`` (when given) and return it."""
    if path is not None:
        fig.savefig(path, format="png", dpi=100)
    return fig


def png_bytes(fig: Any, dpi: int = 100) -> bytes:
    """``fig`` encoded as PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    """``(rows, cols)`` of a near-square grid holding ``n`` panels."""
    cols = min(n, max_cols, max(1, math.ceil(math.sqrt(n))))
    return math.ceil(n / cols), cols


def symmetric_norm(values: np.ndarray) -> Any:
    """A ``TwoSlopeNorm`` centred on 0 and symmetric: ``[-max|v|, max|v|]`` (``[-1, 1]`` for
    all zeros), so white is always exactly 0."""
    mpl = matplotlib()
    finite = values[np.isfinite(values)]
    peak = float(np.abs(finite).max()) if finite.size else 0.0
    peak = peak if peak > 0 else 1.0
    return mpl.colors.TwoSlopeNorm(vcenter=0.0, vmin=-peak, vmax=peak)


def host(a: Any, what: str) -> np.ndarray:
    """``a`` (an array of any backend, or nested lists) as a float64 NumPy array."""
    try:
        return np.asarray(to_numpy(a) if hasattr(a, "shape") else a, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{what} must be an array of numbers, got {type(a).__name__}") from err


def param(model: Any, name: str, what: str) -> np.ndarray:
    """The param ``name`` (flat, e.g. ``"dense_0/W"``) of ``model`` on the host; a clear error
    listing the names for an unknown one."""

    require_built(model, what)
    leaves = dict(flatten(model.params))
    if name not in leaves:
        hint = [n for n in leaves if n.startswith(f"{name}/")]
        also = f" (the layer {name!r} holds {hint})" if hint else ""
        raise ValueError(f"{what}: unknown parameter {name!r}{also}. Parameters: {list(leaves)}")
    return host(leaves[name], name)
