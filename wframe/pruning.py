"""Magnitude pruning: masks over the params dict, one-shot or on a gradual schedule.

:func:`prune` zeroes the smallest-magnitude weights and sets ``model.masks``; from then on every
train step (``fit`` and :func:`wframe.make_train_step`) keeps those weights at exactly zero.
:class:`PruningSchedule` raises the sparsity during ``fit`` as Zhu & Gupta (2017),
:func:`sparsity_report` counts the zeros, :func:`strip_pruning` drops the masks for export and
:func:`to_sparse` hands 2-D weights to SciPy. Thresholds are picked on the host with NumPy (it
runs between steps); the arrays are updated on the model's backend.
"""

from __future__ import annotations

import fnmatch
import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from wframe.backends import array_namespace, to_numpy
from wframe.callbacks import Callback
from wframe.tree import flatten, map_at
from wframe.types import Array

__all__ = ["PruningSchedule", "prune", "sparsity_report", "strip_pruning", "to_sparse"]

SCOPES = ("global", "layer")
#: ``"dense_*/W"``, a list of such globs, or a callable ``name -> bool``.
Selector = str | list[str] | tuple[str, ...] | Callable[[str], bool] | None


def prune(
    model: Any,
    sparsity: float = 0.9,
    *,
    scope: str = "global",
    include: Selector = None,
    exclude: Selector = None,
    exclude_bias: bool = True,
) -> Any:
    """Zero the smallest-magnitude weights of ``model`` and keep them at zero while it trains.

    Args:
      model: a built :class:`~wframe.Sequential`.
      sparsity: the fraction in [0, 1) of the selected weights that are zero afterwards:
        exactly ``round(sparsity * n)`` of them, ties broken by position (a stable sort).
        Weights an earlier mask pruned stay pruned and count first, so a sparsity below the
        current one prunes nothing more.
      scope: ``"global"``: one threshold over all selected weights (layers end up with
        different sparsities); ``"layer"``: ``sparsity`` in each selected param.
      include, exclude: which params (flat names such as ``"dense_0/W"``): a glob
        (``fnmatch``), a list of globs or a callable ``name -> bool``. Every glob must match.
      exclude_bias: skip params with fewer than 2 dims (biases, norm scales and shifts).

    Returns:
      ``model``, its params updated, ``model.masks`` set (joined with the masks it had), and
      the optimizer moments of the pruned weights (every params-shaped dict in
      ``model.opt_state``) zeroed, so that the masked steps keep them at zero.
    """
    names = _select(model, include, exclude, exclude_bias, "prune")
    sparsity = _fraction(sparsity, "prune: sparsity")
    _scope(scope, "prune")
    flat = dict(flatten(model.params))
    old = model.masks or {}
    # Already-pruned weights score -1, below every magnitude: they are the first to go.
    scores = {}
    for name in names:
        score = np.abs(to_numpy(flat[name])).ravel()
        if name in old:
            score = np.where(to_numpy(old[name]).ravel() != 0, score, -1)
        scores[name] = score
    groups = [names] if scope == "global" else [[name] for name in names]
    keep = {}
    for group in groups:
        score = np.concatenate([scores[name] for name in group])
        mask = np.ones(score.shape, bool)
        mask[np.argsort(score, kind="stable")[: _count(sparsity, score.size)]] = False
        mask &= ~(score < 0)  # pruned before stays pruned (NaN weights are not "pruned")
        cuts = np.cumsum([scores[name].size for name in group])[:-1]
        for name, part in zip(group, np.split(mask, cuts), strict=True):
            keep[name] = part.reshape(tuple(flat[name].shape))
    model.masks = {**old, **keep}  # checked and moved to the backend in each param's dtype
    masks = {name: model.masks[name] for name in keep}
    model.params = map_at(model.params, {name: _zeroer(m) for name, m in masks.items()})
    if model.opt_state is not None:
        model.opt_state = _zero_moments(model.opt_state, model.params, masks)
    return model


class PruningSchedule(Callback):
    """A ``fit`` callback that prunes gradually (Zhu & Gupta 2017, "To prune, or not to prune").

    Every ``frequency`` optimizer steps from ``begin_step`` to ``end_step`` it calls
    :func:`prune` with the sparsity
    ``s_t = s_f + (s_i - s_f) * (1 - (t - begin_step) / (end_step - begin_step)) ** power``,
    reaching ``final_sparsity`` at ``end_step`` (always a pruning step). ``t`` counts the
    model's optimizer steps over its life, across ``fit`` calls. Pruning happens where ``fit``
    calls ``on_train_batch_end``: with ``steps_per_execution=k`` that is once per ``k`` steps
    (once per epoch with ``"epoch"``), so each scheduled step prunes at the first hook at or
    after it, with ``s_t`` of the step the hook sees; steps passed in one call prune once.

    Args:
      final_sparsity, initial_sparsity: ``s_f`` and ``s_i``, in [0, 1), ``s_i <= s_f``.
      begin_step: the first pruning step.
      end_step: the step that reaches ``final_sparsity``; default: the last step of the first
        ``fit`` the callback runs in.
      frequency: steps between pruning steps (``Δt``).
      power: the exponent (3 in the paper).
      scope, include, exclude, exclude_bias: as in :func:`prune`.
    """

    needs_weights = True  # fit publishes the step's arrays and counters before the batch hook

    def __init__(
        self,
        final_sparsity: float,
        initial_sparsity: float = 0.0,
        begin_step: int = 0,
        end_step: int | None = None,
        frequency: int = 100,
        power: float = 3,
        *,
        scope: str = "global",
        include: Selector = None,
        exclude: Selector = None,
        exclude_bias: bool = True,
    ):
        what = "PruningSchedule"
        self.final_sparsity = _fraction(final_sparsity, f"{what}: final_sparsity")
        self.initial_sparsity = _fraction(initial_sparsity, f"{what}: initial_sparsity")
        if self.initial_sparsity > self.final_sparsity:
            raise ValueError(
                f"{what}: initial_sparsity must be <= final_sparsity, got {initial_sparsity} > "
                f"{final_sparsity}"
            )
        self.begin_step = _int(begin_step, f"{what}: begin_step", 0)
        self.end_step = None
        if end_step is not None:
            self.end_step = _int(end_step, f"{what}: end_step", self.begin_step + 1)
        self.frequency = _int(frequency, f"{what}: frequency", 1)
        if isinstance(power, bool) or not isinstance(power, numbers.Real) or not power > 0:
            raise ValueError(f"{what}: power must be a number > 0, got {power!r}")
        self.power = float(power)
        self.scope = _scope(scope, what)
        _selector(include, f"{what}: include")
        _selector(exclude, f"{what}: exclude")
        self.include, self.exclude, self.exclude_bias = include, exclude, exclude_bias
        #: ``(step, sparsity)`` of each pruning so far.
        self.pruned: list[tuple[int, float]] = []
        self._next: int | None = None
        self._epoch_start = 0

    def sparsity_at(self, step: int) -> float:
        """The schedule's target ``s_t`` at ``step`` (``t`` clamped to [begin, end]).

        Raises:
          ValueError: ``end_step`` is still unknown (default, before ``fit`` started).
        """
        if self.end_step is None:
            raise ValueError("PruningSchedule: end_step is set when fit starts (or pass it)")
        t = min(max(step, self.begin_step), self.end_step)
        done = (t - self.begin_step) / (self.end_step - self.begin_step)
        s_i, s_f = self.initial_sparsity, self.final_sparsity
        return s_f + (s_i - s_f) * (1.0 - done) ** self.power

    def on_train_begin(self, logs=None):
        # Bad patterns and unbuilt models fail here, before the first step.
        _select(self.model, self.include, self.exclude, self.exclude_bias, "PruningSchedule")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self.model.steps
        if self.end_step is None:
            steps = self.params["steps"] * (self.params["epochs"] - epoch)
            self.end_step = max(self._epoch_start + steps, self.begin_step + 1)

    def on_train_batch_end(self, batch, logs=None):
        step = self.model.steps  # optimizer steps done so far (published with the arrays)
        if self._next is None:
            self._next = self.begin_step
        if step < self._next:
            return
        # The next scheduled step after this one: begin + i * frequency, or end_step itself.
        ahead = self.begin_step + ((step - self.begin_step) // self.frequency + 1) * self.frequency
        self._next = min(ahead, self.end_step) if step < self.end_step else math.inf
        sparsity = self.sparsity_at(step)
        prune(
            self.model,
            sparsity,
            scope=self.scope,
            include=self.include,
            exclude=self.exclude,
            exclude_bias=self.exclude_bias,
        )
        self.pruned.append((step, sparsity))


def sparsity_report(model: Any, print_fn: Callable[[str], Any] | None = print) -> list[dict]:
    """Print a table of zeros per param and return its rows.

    Returns:
      One dict per param (``name``, ``shape``, ``size``, ``nonzero``, ``sparsity``: the
      fraction of exact zeros) and a last row named ``"total"`` (``shape`` ``None``).
    """
    _built(model, "sparsity_report")
    rows = []
    for name, a in flatten(model.params):
        size, nonzero = math.prod(a.shape), int(np.count_nonzero(to_numpy(a)))
        rows.append(
            {
                "name": name,
                "shape": tuple(a.shape),
                "size": size,
                "nonzero": nonzero,
                "sparsity": 1 - nonzero / size if size else 0.0,
            }
        )
    size, nonzero = sum(r["size"] for r in rows), sum(r["nonzero"] for r in rows)
    rows.append(
        {
            "name": "total",
            "shape": None,
            "size": size,
            "nonzero": nonzero,
            "sparsity": 1 - nonzero / size if size else 0.0,
        }
    )
    if print_fn is not None:
        cells = [
            (
                r["name"],
                "" if r["shape"] is None else str(r["shape"]),
                str(r["size"]),
                str(r["nonzero"]),
                f"{r['sparsity']:.2%}",
            )
            for r in rows
        ]
        head = ("param", "shape", "size", "nonzero", "sparsity")
        widths = [max(len(c[i]) for c in [head, *cells]) for i in range(len(head))]

        def line(c):  # name and shape left-aligned, numbers right-aligned
            pairs = enumerate(zip(c, widths, strict=True))
            return "  ".join(s.ljust(w) if i < 2 else s.rjust(w) for i, (s, w) in pairs)

        rule = "-" * len(line(head))
        print_fn("\n".join([line(head), rule, *map(line, cells[:-1]), rule, line(cells[-1])]))
    return rows


def strip_pruning(model: Any) -> Any:
    """A copy of ``model`` without masks, as tfmot's ``strip_pruning`` (``model`` is unchanged).

    The copy has its own arrays (params, state, optimizer state): its pruned weights start at
    zero but are free to grow if it trains. Use it to export or fine-tune densely; keep
    training ``model`` itself to stay sparse.
    """
    _built(model, "strip_pruning")
    out = model.copy()  # layers are immutable and shared; the arrays are copied
    out.masks = None
    return out


def to_sparse(model: Any) -> dict[str, Any]:
    """The 2-D params of ``model`` as ``scipy.sparse.csr_matrix`` on the host (needs SciPy)."""
    _built(model, "to_sparse")
    try:
        from scipy import sparse
    except ImportError:
        raise ImportError("to_sparse needs SciPy: pip install scipy") from None
    return {
        name: sparse.csr_matrix(to_numpy(a)) for name, a in flatten(model.params) if a.ndim == 2
    }


# --------------------------------------------------------------------------- helpers
def _zeroer(mask: Array) -> Callable[[Array], Array]:
    """``a -> a`` with zeros where ``mask`` is 0 (``where``, not a product: NaN * 0 is NaN)."""

    def zero(a: Array) -> Array:
        xp = array_namespace(a)
        return xp.where(mask != 0, a, xp.zeros_like(a))

    return zero


def _zero_moments(tree: Any, params: Any, masks: dict[str, Array]) -> Any:
    """``tree`` (an optimizer state) with the masked entries of every dict that is part of the
    ``params`` tree (optax's ``mu``, ``nu``, ``trace``, ..., also for a trainable partition or
    a :func:`~wframe.optimizers.partition` group) zeroed; everything else is kept."""
    if isinstance(tree, dict):
        leaves = dict(flatten(tree))
        # A part of the params tree (all of it, the trainable partition, a partition group)
        shaped = leaves and all(
            tuple(getattr(a, "shape", ())) == tuple(getattr(_at(params, n), "shape", (None,)))
            for n, a in leaves.items()
        )
        if not shaped:
            return {k: _zero_moments(v, params, masks) for k, v in tree.items()}
        # Entries that are not arrays of the param's shape (optax's MaskedNode) are left alone.
        fns = {
            name: _zeroer(m)
            for name, m in masks.items()
            if tuple(getattr(leaves.get(name), "shape", ())) == tuple(m.shape)
        }
        return map_at(tree, fns)
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # a NamedTuple
        return type(tree)(*(_zero_moments(v, params, masks) for v in tree))
    if isinstance(tree, (tuple, list)):
        return type(tree)(_zero_moments(v, params, masks) for v in tree)
    return tree


def _at(tree: Any, name: str) -> Any:
    for key in name.split("/"):
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _built(model: Any, what: str) -> None:
    if not getattr(model, "built", False):
        raise RuntimeError(
            f"{what}: the model has no params yet; build it first (model.build((None, "
            "features))) or fit it on data"
        )


def _count(fraction: float, n: int) -> int:
    return min(int(math.floor(fraction * n + 0.5)), n)  # round half up, not to even


def _fraction(value: Any, what: str) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{what} must be a number in [0, 1), got {value!r}")
    return float(value)


def _int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _scope(scope: Any, what: str) -> str:
    if scope not in SCOPES:
        raise ValueError(f"{what}: scope must be one of {SCOPES}, got {scope!r}")
    return scope


def _selector(sel: Any, what: str) -> Callable[[str], bool] | list[str] | None:
    """``sel`` as a callable or a list of globs (checked), ``None`` for none."""
    if sel is None or callable(sel):
        return sel
    globs = [sel] if isinstance(sel, str) else sel
    if not isinstance(globs, (list, tuple)) or not all(isinstance(g, str) for g in globs):
        raise TypeError(
            f"{what} must be a glob such as 'dense_*/W', a list of globs or a callable "
            f"name -> bool, got {type(sel).__name__} {sel!r}"
        )
    return list(globs)


def _matching(sel: Any, names: list[str], what: str) -> set[str]:
    """The ``names`` that ``sel`` picks; a glob that matches none of them is an error."""
    sel = _selector(sel, what)
    if callable(sel):
        return {name for name in names if sel(name)}
    out: set[str] = set()
    for glob in sel:
        hits = [name for name in names if fnmatch.fnmatchcase(name, glob)]
        if not hits:
            raise ValueError(f"{what}: {glob!r} matches no param; the params are {names}")
        out.update(hits)
    return out


def _select(
    model: Any, include: Selector, exclude: Selector, exclude_bias: bool, what: str
) -> list[str]:
    """The names of the params to prune, in the params' order."""
    _built(model, what)
    flat = dict(flatten(model.params))
    names = list(flat)
    chosen = set(names) if include is None else _matching(include, names, f"{what}: include")
    if exclude is not None:
        chosen -= _matching(exclude, names, f"{what}: exclude")
    if exclude_bias:
        chosen = {name for name in chosen if flat[name].ndim >= 2}
    if not chosen:
        raise ValueError(
            f"{what}: no param to prune (include={include!r}, exclude={exclude!r}, "
            f"exclude_bias={exclude_bias} skips params with fewer than 2 dims); the params are "
            f"{[f'{n} {tuple(flat[n].shape)}' for n in names]}"
        )
    return [name for name in names if name in chosen]
