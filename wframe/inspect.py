"""Weight statistics: per parameter moments, norms, sparsity and the std its initializer gives.

:func:`weight_stats` is the numbers; :mod:`wframe.viz` draws them. Statistics are computed on
the host in float64 (:func:`wframe.to_numpy`), so they agree on every backend.

The *initializer std* of a parameter is the standard deviation its layer's initializer draws
with, computed from the parameter's shape and Keras' fans (:func:`wframe.initializers
.compute_fans`), not measured: it is what a freshly initialized layer's weights scatter by, the
yardstick for how far training moved them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from wframe.backends import to_numpy
from wframe.initializers import moments as initializer_moments
from wframe.tree import flatten

__all__ = ["NEAR_ZERO", "expected_std", "initializer_moments", "select", "weight_stats"]

#: An entry counts as near zero when ``|w| < NEAR_ZERO * max|w|`` over its parameter (or is 0).
NEAR_ZERO = 1e-3

# The layer field holding each parameter's initializer (Dense/Conv2D ``W``/``b``, the recurrent
# layers' ``W_x``/``W_h``/``b``/``b_h``); a ``<param>_init`` field wins over this table.
_INIT_FIELDS = {
    "W": "kernel_init",
    "W_x": "kernel_init",
    "W_h": "recurrent_init",
    "b": "bias_init",
    "b_h": "bias_init",
}
# Params whose initializer is fixed by the layer (BatchNorm, LayerNorm).
_FIXED = {"gamma": "ones", "beta": "zeros"}
_COLUMNS = (
    "name",
    "shape",
    "mean",
    "std",
    "min",
    "max",
    "l1",
    "l2",
    "sparsity",
    "near_zero",
    "initializer",
    "init_std",
)


def require_built(model: Any, what: str) -> None:
    """Raise a clear error unless ``model`` is a built :class:`wframe.Sequential`."""
    if not hasattr(model, "built"):
        raise TypeError(f"{what} takes a wframe model (wf.Sequential), got {type(model).__name__}")
    if not model.built:
        raise RuntimeError(
            f"{what}: the model has no weights yet (it was never built): call "
            "model.build((None, features)), or fit/predict it once, first"
        )


def _describe(init: Any) -> str:
    if isinstance(init, str):
        return init
    if isinstance(init, functools.partial):
        args = ", ".join(f"{k}={v:g}" for k, v in init.keywords.items())
        return f"{init.func.__name__.lstrip('_')}({args})"
    return getattr(init, "__name__", type(init).__name__)


def _param_layers(layer: Any, params: dict, prefix: str, out: dict) -> None:
    """``out[flat name] = (layer, its param key)`` for every param under ``layer``."""
    kids = layer.children()
    if not kids:
        for name, _ in flatten(params, prefix):
            out[name] = (layer, name[len(prefix) + 1 :] if prefix else name)
        return
    for key, child in kids:
        sub = params if key is None else params.get(key, {})
        _param_layers(child, sub, prefix if key is None else f"{prefix}/{key}".lstrip("/"), out)


def _init_of(layer: Any, key: str) -> Any:
    field = getattr(layer, f"{key}_init", None)
    if field is not None:
        return field
    if key in _INIT_FIELDS and hasattr(layer, _INIT_FIELDS[key]):
        return getattr(layer, _INIT_FIELDS[key])
    return _FIXED.get(key)


def _moments_for(layer: Any, key: str, init: Any, shape: tuple) -> tuple[float, float] | None:
    moments = initializer_moments(init, shape)
    if moments is None or not (key == "b" and getattr(layer, "unit_forget_bias", False)):
        return moments
    # LSTM sets the forget gate's quarter of ``b`` to 1: a mixture of the two.
    m, s = moments
    mean = 0.75 * m + 0.25
    return mean, math.sqrt(max(0.75 * (s * s + m * m) + 0.25 - mean * mean, 0.0))


def _inits(model: Any) -> dict[str, tuple[str | None, float | None]]:
    """``{flat name: (initializer description, its std)}`` for every param of ``model``."""
    layers: dict[str, tuple[Any, str]] = {}
    _param_layers(model, model.params, "", layers)
    out = {}
    for name, leaf in flatten(model.params):
        layer, key = layers.get(name, (None, name))
        init = _init_of(layer, key.rpartition("/")[2]) if layer is not None else None
        moments = None if init is None else _moments_for(layer, key, init, tuple(leaf.shape))
        out[name] = (
            None if init is None else _describe(init),
            None if moments is None else moments[1],
        )
    return out


def expected_std(model: Any) -> dict[str, float | None]:
    """``{"dense_0/W": std, ...}``: the std each param's initializer draws with (``None``:
    unknown, e.g. a custom initializer), for a built model.

    Args:
      model: a built :class:`wframe.Sequential` or graph :class:`wframe.Model`.
    """
    require_built(model, "expected_std")
    return {name: std for name, (_, std) in _inits(model).items()}


def select(model: Any, names: str | Iterable[str] | None, what: str) -> list[str]:
    """The flat param names that ``names`` (flat names or layer names) pick, in model order.

    Args:
      model: a built model.
      names: a flat param name (``"dense_0/W"``), a layer name (``"dense_0"``: all its params),
        or an iterable of them; ``None`` picks every param.
      what: the caller, named in the errors (e.g. ``"weight_stats"``).

    Raises:
      ValueError: for a name that is neither, listing the params and the layers.
    """
    require_built(model, what)
    flat = [name for name, _ in flatten(model.params)]
    if names is None:
        return flat
    wanted = [names] if isinstance(names, str) else list(names)
    chosen: set[str] = set()
    for n in wanted:
        hits = [f for f in flat if f == n or f.startswith(f"{n}/")]
        if not hits:
            layers = sorted({f.rsplit("/", 1)[0] for f in flat if "/" in f})
            raise ValueError(
                f"{what}: unknown parameter or layer name {n!r}. Parameters: {flat}; "
                f"layers with parameters: {layers}"
            )
        chosen.update(hits)
    return [f for f in flat if f in chosen]


def _row(name: str, w: np.ndarray, init: str | None, init_std: float | None) -> dict:
    a = np.abs(w)
    peak = float(a.max()) if w.size else 0.0
    near = (a < NEAR_ZERO * peak) | (w == 0)
    size = max(w.size, 1)
    return {
        "name": name,
        "shape": tuple(w.shape),
        "size": int(w.size),
        "mean": float(w.mean()) if w.size else 0.0,
        "std": float(w.std()) if w.size else 0.0,
        "min": float(w.min()) if w.size else 0.0,
        "max": float(w.max()) if w.size else 0.0,
        "l1": float(a.sum()),
        "l2": float(np.sqrt((w * w).sum())),
        "sparsity": float((w == 0).sum() / size),
        "near_zero": float(near.sum() / size),
        "initializer": init,
        "init_std": init_std,
    }


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(rows: list[dict]) -> str:
    """``rows`` of :func:`weight_stats` as a fixed-width text table."""
    cells = [list(_COLUMNS)] + [[_cell(r[c]) for c in _COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_COLUMNS))]
    lines = [
        "  ".join(
            c.ljust(w) if i in (0, 1, 10) else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in cells
    ]
    rule = "-" * len(lines[0])
    note = f"near_zero: fraction of entries with |w| < {NEAR_ZERO:g} * max|w| (or exactly 0)"
    return "\n".join([rule, lines[0], rule, *lines[1:], rule, note])


def weight_stats(
    model: Any,
    print_fn: Callable[[str], Any] | None = print,
    *,
    names: str | Iterable[str] | None = None,
) -> list[dict]:
    """Per parameter statistics of a built model, printed as a table and returned as rows.

    Args:
      model: a built :class:`wframe.Sequential`.
      print_fn: called once with the table's text; ``None`` prints nothing.
      names: flat param names (``"dense_0/W"``) or layer names (``"dense_0"``) to report;
        default all.

    Returns:
      One dict per parameter, in model order: ``name``, ``shape``, ``size``, ``mean``, ``std``,
      ``min``, ``max``, ``l1`` (sum of ``|w|``), ``l2`` (Frobenius norm), ``sparsity`` (fraction
      of exact zeros), ``near_zero`` (fraction with ``|w| < 1e-3 * max|w|`` of that param, or
      exactly 0), ``initializer`` (its description, ``None`` when the layer names none) and
      ``init_std`` (the std that initializer draws with for this shape, see
      :func:`initializer_moments`; ``None`` when unknown).

    Raises:
      RuntimeError: the model was never built.
      ValueError: a name in ``names`` matches no param or layer (the message lists them).
    """
    chosen = select(model, names, "weight_stats")
    leaves = dict(flatten(model.params))
    described = _inits(model)
    rows = [
        _row(n, np.asarray(to_numpy(leaves[n]), dtype=np.float64), *described[n]) for n in chosen
    ]
    if print_fn is not None:
        print_fn(format_table(rows))
    return rows
