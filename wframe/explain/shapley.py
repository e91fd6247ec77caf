"""Shapley values of the input features, exactly or by permutation sampling."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from wframe import data
from wframe.backends import backend_of, to_numpy
from wframe.explain.common import chunks, compiled, per_call, prepare, repeat_rows, scores
from wframe.types import Array


def _coalitions(model, params, state, x, background, masks, w):
    xp = backend_of(x).xp
    m, c, k = x.shape[0], masks.shape[0], background.shape[0]
    flat = xp.reshape(x, (m, 1, 1, -1))
    mk = xp.reshape(masks, (1, c, 1, -1))
    rows = flat * mk + xp.reshape(background, (1, 1, k, -1)) * (1 - mk)
    rows = xp.reshape(rows, (m * c * k, *x.shape[1:]))
    values = scores(model, params, state, rows, repeat_rows(w, c * k))
    return xp.mean(xp.reshape(values, (m, c, k)), axis=2)


def _values(model, x, w, background, masks: np.ndarray) -> np.ndarray:
    """``v(S)`` per sample and coalition (mask row), averaged over the background, on the host."""
    fn = compiled(model, "shapley", _coalitions)
    mk = model.backend.asarray(masks, dtype=model.dtype)
    parts = [
        to_numpy(fn(model.params, model.state, x[c], background, mk, w[c]))
        for c in chunks(x.shape[0], per_call(model, len(masks) * background.shape[0]))
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


def _background(model, background: Any, feat: tuple[int, ...]) -> Array:
    """``background`` as ``k`` inputs ``(k, *feat)`` on the model's backend."""
    f = math.prod(feat)
    bg = background if hasattr(background, "shape") else np.asarray(background)
    shape = tuple(bg.shape)
    k = 1 if shape in (feat, (f,)) else (shape[0] if shape[1:] in (feat, (f,)) else 0)
    if not k:
        raise ValueError(
            f"background must be one input of shape {feat} or ({f},), or k of them of shape "
            f"(k, *{feat}) or (k, {f}), got shape {shape}"
        )
    return model.prepare_inputs(bg.reshape(k, *feat), "background")


def _exact_phi(model, x, w, bg) -> np.ndarray:
    """``phi`` (samples, features) from all subsets with Shapley weights."""
    f = math.prod(x.shape[1:])
    if f > 20:
        raise ValueError(f"shapley_sampling: exact=True enumerates 2^{f} subsets; use sampling")
    masks, weights = _exact_weights(f)
    size = per_call(model, bg.shape[0])
    return sum(_values(model, x, w, bg, masks[c]) @ weights[c] for c in chunks(len(masks), size))


def _sampled_phi(model, x, w, bg, n_permutations: int, seed: Any) -> np.ndarray:
    """``phi`` (samples, features) from ``n_permutations`` antithetic pairs of orderings."""
    f = math.prod(x.shape[1:])
    rng = np.random.default_rng(data.as_int(seed, "shapley_sampling: seed", minimum=0))
    perms = rng.permuted(np.tile(np.arange(f), (n_permutations, 1)), axis=1)
    perms = np.concatenate([perms, perms[:, ::-1]])
    phi = np.zeros((x.shape[0], f))
    for c in chunks(len(perms), per_call(model, (f + 1) * bg.shape[0])):
        rank = np.argsort(perms[c], axis=1)  # rank[p, i]: position of feature i
        masks = rank[:, None, :] < np.arange(f + 1)[None, :, None]  # prefixes of length j
        v = _values(model, x, w, bg, masks.reshape(-1, f)).reshape(x.shape[0], -1, f + 1)
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
) -> Array:
    """Shapley values of the flattened input features, by permutation sampling or exactly.

    A feature outside the coalition takes the background's value; ``v(S)`` is the target output
    averaged over the background rows (interventional Shapley values), so the values of a
    sample sum to ``f(x) - mean f(background)``.

    Args:
      background: one baseline input (shaped like ``x[0]`` or flat) or ``k`` of them
        (``(k, *x.shape[1:])`` or ``(k, features)``); every coalition is evaluated on each.
      n_permutations: permutations drawn (NumPy, ``seed``); each is evaluated together with its
        reverse (antithetic pairs), so ``2 * n_permutations`` orderings in all, and all
        ``features + 1`` coalitions of a permutation go into one compiled call.
      exact: enumerate all subsets with Shapley weights; default when there are <= 10 features
        (refused above 20).

    Returns:
      Shaped like ``x``, an array of the model's backend.
    """
    n_permutations = data.as_int(n_permutations, "shapley_sampling: n_permutations")
    x, w = prepare(model, x, target)
    bg = _background(model, background, tuple(x.shape[1:]))
    exact = math.prod(x.shape[1:]) <= 10 if exact is None else bool(exact)
    if exact:
        phi = _exact_phi(model, x, w, bg)
    else:
        phi = _sampled_phi(model, x, w, bg, n_permutations, seed)
    return model.backend.asarray(phi.reshape(x.shape), dtype=model.dtype)
