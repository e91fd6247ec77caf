"""Shapley values of the input features, exactly or by permutation sampling."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from wframe import data
from wframe.backends import backend_of, to_numpy
from wframe.explain.common import (
    Head,
    Prepared,
    chunks,
    compiled,
    per_call,
    per_input,
    prepare,
    repeat_rows,
    results,
    scores,
    take,
)
from wframe.types import Array


def _coalitions(model, head: Head, params, state, xs, backgrounds, masks, w):
    """``v(S)`` per sample and coalition: the features of every float input (flattened, in
    input order) in ``S`` (a mask row) from ``x``, the others from each background row."""
    xp = backend_of(w).xp
    m, c = w.shape[0], masks.shape[0]
    k = next(b.shape[0] for b in backgrounds if b is not None)
    rows, start = [], 0
    for x, bg in zip(xs, backgrounds, strict=True):
        if bg is None:  # an integer input: held at x
            rows.append(repeat_rows(x, c * k))
            continue
        f = math.prod(x.shape[1:])
        mk = xp.reshape(masks[:, start : start + f], (1, c, 1, f))
        start += f
        mixed = xp.reshape(x, (m, 1, 1, f)) * mk + xp.reshape(bg, (1, 1, k, f)) * (1 - mk)
        rows.append(xp.reshape(mixed, (m * c * k, *x.shape[1:])))
    values = scores(model, head, params, state, tuple(rows), repeat_rows(w, c * k))
    return xp.mean(xp.reshape(values, (m, c, k)), axis=2)


def _values(model, prep: Prepared, backgrounds: tuple, masks: np.ndarray) -> np.ndarray:
    """``v(S)`` per sample and coalition (mask row), averaged over the background, on the host."""
    fn = compiled(model, "shapley", prep.head, _coalitions)
    mk = model.backend.asarray(masks, dtype=model.dtype)
    k = next(b.shape[0] for b in backgrounds if b is not None)
    parts = [
        to_numpy(fn(model.params, model.state, take(prep.xs, c), backgrounds, mk, prep.w[c]))
        for c in chunks(prep.rows, per_call(model, len(masks) * k))
    ]
    return np.concatenate(parts).astype(np.float64)


def _exact_weights(f: int) -> tuple[np.ndarray, np.ndarray]:
    """All 2^f coalitions (rows of 0/1) and the Shapley weights that turn their values into
    ``phi``: ``+s!(f-s-1)!/f!`` on ``v(S + i)``, minus the same on ``v(S)``."""
    masks = (np.arange(2**f)[:, None] >> np.arange(f)) & 1
    size = masks.sum(axis=1)
    weight = np.array(
        [math.factorial(s) * math.factorial(f - s - 1) / math.factorial(f) for s in range(f)]
        + [0.0]
    )
    return masks, np.where(
        masks == 1, weight[np.maximum(size - 1, 0)][:, None], -weight[size][:, None]
    )


def _background(model, background: Any, feat: tuple[int, ...], what: str) -> Array:
    """``background`` as ``k`` inputs ``(k, *feat)`` on the model's backend."""
    f = math.prod(feat)
    bg = background if hasattr(background, "shape") else np.asarray(background)
    shape = tuple(bg.shape)
    k = 1 if shape in (feat, (f,)) else (shape[0] if shape[1:] in (feat, (f,)) else 0)
    if not k:
        raise ValueError(
            f"{what} must be one input of shape {feat} or ({f},), or k of them of shape "
            f"(k, *{feat}) or (k, {f}), got shape {shape}"
        )
    return data.inputs(bg.reshape(k, *feat), model.backend, model.dtype, what)


def _backgrounds(model, prep: Prepared, background: Any) -> tuple:
    """One background per input (``None`` for integer inputs), all of the same ``k`` rows."""
    floats, names = prep.floats, model.input_names
    parts = per_input(model, background, "background", floats)
    out = []
    for x, bg, name, used in zip(prep.xs, parts, names, floats, strict=True):
        what = f"background[{name!r}]" if len(names) > 1 else "background"
        if used and bg is None:
            raise ValueError(f"{what} is missing: every float input needs a background")
        out.append(_background(model, bg, tuple(x.shape[1:]), what) if used else None)
    ks = {name: int(b.shape[0]) for name, b in zip(names, out, strict=True) if b is not None}
    if len(set(ks.values())) > 1:
        raise ValueError(
            f"background: every input needs the same number of rows (row j of each is one "
            f"background example), got {ks}"
        )
    return tuple(out)


def _exact_phi(model, prep: Prepared, bgs: tuple, f: int) -> np.ndarray:
    """``phi`` (samples, features) from all subsets with Shapley weights."""
    if f > 20:
        raise ValueError(f"shapley_sampling: exact=True enumerates 2^{f} subsets; use sampling")
    masks, weights = _exact_weights(f)
    size = per_call(model, next(b.shape[0] for b in bgs if b is not None))
    return sum(_values(model, prep, bgs, masks[c]) @ weights[c] for c in chunks(len(masks), size))


def _sampled_phi(model, prep: Prepared, bgs: tuple, f: int, n_permutations: int, seed: Any):
    """``phi`` (samples, features) from ``n_permutations`` antithetic pairs of orderings."""
    rng = np.random.default_rng(data.as_int(seed, "shapley_sampling: seed", minimum=0))
    perms = rng.permuted(np.tile(np.arange(f), (n_permutations, 1)), axis=1)
    perms = np.concatenate([perms, perms[:, ::-1]])
    phi = np.zeros((prep.rows, f))
    k = next(b.shape[0] for b in bgs if b is not None)
    for c in chunks(len(perms), per_call(model, (f + 1) * k)):
        rank = np.argsort(perms[c], axis=1)  # rank[p, i]: position of feature i
        masks = rank[:, None, :] < np.arange(f + 1)[None, :, None]  # prefixes of length j
        v = _values(model, prep, bgs, masks.reshape(-1, f)).reshape(prep.rows, -1, f + 1)
        marginal = np.diff(v, axis=2)  # marginal[:, p, j]: of feature perms[p, j]
        idx = np.broadcast_to(rank[None], marginal.shape)
        phi += np.take_along_axis(marginal, idx, axis=2).sum(axis=1)
    phi /= len(perms)
    return phi


def shapley_sampling(
    model,
    x: Any,
    background: Any,
    target: Any = None,
    *,
    n_permutations: int = 32,
    seed: int = 0,
    exact: bool | None = None,
    output: Any = None,
) -> Any:
    """Shapley values of the flattened input features, by permutation sampling or exactly.

    A feature outside the coalition takes the background's value; ``v(S)`` is the target output
    averaged over the background rows (interventional Shapley values), so the values of a
    sample sum to ``f(x) - mean f(background)``. With several inputs the players are the
    features of every float input together (so all of them sum to that difference); integer
    inputs stay at ``x`` and get ``None``.

    Args:
      model: a :class:`wframe.Sequential` or graph :class:`wframe.Model`.
      x: inputs (batch, ...); for a model of several inputs a list or a dict by input name.
      background: one baseline input (shaped like ``x[0]`` or flat) or ``k`` of them
        (``(k, *x.shape[1:])`` or ``(k, features)``); every coalition is evaluated on each.
        For several inputs a list or a dict by input name of those, with the same ``k`` for
        every float input (``None`` for integer inputs).
      target: output index per sample (see the module docstring).
      n_permutations: permutations drawn (NumPy, ``seed``); each is evaluated together with its
        reverse (antithetic pairs), so ``2 * n_permutations`` orderings in all, and all
        ``features + 1`` coalitions of a permutation go into one compiled call.
      seed: the NumPy seed of the permutations (an int >= 0): the same seed gives the same
        values. Unused when ``exact``.
      exact: enumerate all subsets with Shapley weights; default when there are <= 10 features
        (refused above 20).
      output: the name or index of the output explained (required when there are several).

    Returns:
      Shaped like ``x`` (one per input, as ``x`` was given), an array of the model's backend.
    """
    n_permutations = data.as_int(n_permutations, "shapley_sampling: n_permutations")
    prep = prepare(model, x, target, output, "shapley_sampling")
    bgs = _backgrounds(model, prep, background)
    sizes = [0 if b is None else math.prod(b.shape[1:]) for b in bgs]  # features per input
    f = sum(sizes)
    exact = f <= 10 if exact is None else bool(exact)
    if exact:
        phi = _exact_phi(model, prep, bgs, f)
    else:
        phi = _sampled_phi(model, prep, bgs, f, n_permutations, seed)
    parts = np.split(phi, np.cumsum(sizes)[:-1], axis=1)
    return results(
        model,
        prep,
        tuple(
            None if b is None else model.backend.asarray(p.reshape(x.shape), dtype=model.dtype)
            for x, b, p in zip(prep.xs, bgs, parts, strict=True)
        ),
    )
