"""Attributions: how much each input feature contributes to one output of a model.

Gradient x input, integrated gradients, SmoothGrad, occlusion and Shapley values, for any
:class:`wframe.Sequential` on any backend. Input gradients come from the model's own gradient
path, chosen by its arrays' backend as in training: autodiff (``backend.value_and_grad`` of the
selected output w.r.t. the input) where the backend has it, the layers' hand-written ``backprop``
with ``input_grad=True`` and a one-hot ``dy`` elsewhere. Every method evaluates many inputs per
compiled call (integration steps, noise draws, patches and coalitions are stacked into the
batch, in chunks of at most a few thousand rows), never one sample at a time, in inference mode.

Conventions shared by every function:

- ``x`` is NumPy or an array of the model's backend; the results are arrays of the model's
  backend (``wf.to_numpy`` copies them to the host), in the model's dtype, shaped like ``x``.
- ``target`` picks the output explained: an int class index, an array of one index per sample,
  or ``None`` for the model's predicted class of each sample. Outputs with more than one axis
  are indexed flat.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from wframe import data
from wframe.backends import backend_of, to_numpy
from wframe.types import Array

_METHODS = ("riemann_trapezoid", "gausslegendre")


class Attribution(NamedTuple):
    """Integrated gradients with their completeness gap (captum's
    ``return_convergence_delta=True`` pair).

    Attributes:
      attributions: shaped like ``x``.
      delta: per sample, ``sum(attributions) - (f(x) - f(baseline))`` for the target output.
    """

    attributions: Array
    delta: Array


# ----------------------------------------------------------------- shared pieces
def _rows(model) -> int:
    """Rows per compiled call: as many as keep one activation near 4M elements (<= 4096)."""
    return model.default_batch_size(1 << 30)


def _n_outputs(model) -> int:
    return math.prod(model.output_shape[1:])


def _targets(model, x: Array, target: Any) -> np.ndarray:
    """One output index per sample, checked on the host."""
    n, k = x.shape[0], _n_outputs(model)
    if target is None:
        pred = to_numpy(model.predict(x))
        return np.argmax(pred.reshape(n, -1), axis=1)
    t = to_numpy(target) if hasattr(target, "shape") else np.asarray(target)
    if t.dtype == np.bool_ or not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"target must be an int or an array of ints, got {t.dtype} {target!r}")
    if t.ndim not in (0, 1) or (t.ndim == 1 and t.shape[0] != n):
        raise ValueError(
            f"target must be an int or one index per sample (shape ({n},)), got shape {t.shape}"
        )
    if t.size and (t.min() < 0 or t.max() >= k):
        bad = t[(t < 0) | (t >= k)].ravel()[0]
        raise ValueError(f"target must be in [0, {k}): the model has {k} outputs, got {bad}")
    return np.broadcast_to(t, (n,)).astype(np.int64)


def _onehot(model, t: np.ndarray) -> Array:
    """The one-hot rows that select the targets: ``dy`` of the backprop, weights of the scores."""
    hot = np.eye(_n_outputs(model), dtype=model.dtype)[t]
    return model.backend.asarray(hot.reshape(len(t), *model.output_shape[1:]), dtype=model.dtype)


def _prepare(model, x: Any, target: Any) -> tuple[Array, Array]:
    x = model.prepare_inputs(x)
    if x.shape[0] == 0:
        raise ValueError(f"x has no examples (shape {tuple(x.shape)})")
    return x, _onehot(model, _targets(model, x, target))


def _repeat(a: Array, times: int) -> Array:
    """Each row of ``a`` ``times`` times in a row: (m, ...) -> (m * times, ...)."""
    xp = backend_of(a).xp
    tiled = xp.broadcast_to(xp.expand_dims(a, axis=1), (a.shape[0], times, *a.shape[1:]))
    return xp.reshape(tiled, (a.shape[0] * times, *a.shape[1:]))


def _scores(model, params, state, x: Array, w: Array) -> Array:
    """The selected output of each row: ``sum(f(x) * w)`` over the output axes."""
    xp = backend_of(x).xp
    y = model.apply(params, state, x, train=False, vjp=False)[0]
    return xp.sum(xp.reshape(y * w, (y.shape[0], -1)), axis=1)


def _input_grads(model, params, state, x: Array, w: Array) -> Array:
    """The gradient of each row's selected output w.r.t. that row (traceable)."""
    backend = backend_of(x)
    if backend.has_autodiff:
        total = lambda x: backend.xp.sum(_scores(model, params, state, x, w))  # noqa: E731
        return backend.value_and_grad(total)(x)[1]
    backprop = model.apply(params, state, x, train=False)[2]
    return backprop(w, input_grad=True, need={})[0]  # need={}: no parameter gradients


def _compiled(model, name: str, fn) -> Any:
    """``fn(model, params, state, *arrays)`` compiled once per model build and backend."""
    return model.trainer.memo(
        ("explain", name),
        lambda: model.backend.jit(lambda p, s, *a: fn(model, p, s, *a)),
    )


def _chunks(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


def _concat(parts: list[Array]) -> Array:
    return parts[0] if len(parts) == 1 else backend_of(*parts).xp.concat(parts, axis=0)


# ----------------------------------------------------------------- gradient methods
def _grad_x_input(model, params, state, x, w):
    return x * _input_grads(model, params, state, x, w)


def gradient_x_input(model, x: Any, target: Any = None) -> Array:
    """Input times the gradient of the target output w.r.t. it (Shrikumar et al., 2016).

    Returns:
      An array of the model's backend shaped like ``x``.
    """
    x, w = _prepare(model, x, target)
    fn = _compiled(model, "gxi", _grad_x_input)
    size = _rows(model)
    return _concat([fn(model.params, model.state, x[c], w[c]) for c in _chunks(x.shape[0], size)])


def _integrated(model, params, state, x, base, w, alphas, weights):
    xp = backend_of(x).xp
    m, s = x.shape[0], alphas.shape[0]
    diff = x - base
    a = xp.reshape(alphas, (1, s, *([1] * (x.ndim - 1))))
    path = xp.expand_dims(base, axis=1) + a * xp.expand_dims(diff, axis=1)  # (m, steps, ...)
    path = xp.reshape(path, (m * s, *x.shape[1:]))
    grads = _input_grads(model, params, state, path, _repeat(w, s))
    mean = xp.sum(xp.reshape(grads, (m, s, -1)) * xp.reshape(weights, (1, s, 1)), axis=1)
    attributions = diff * xp.reshape(mean, x.shape)
    ends = _scores(model, params, state, xp.concat([x, base], axis=0), xp.concat([w, w], axis=0))
    total = xp.sum(xp.reshape(attributions, (m, -1)), axis=1)
    return attributions, total - (ends[:m] - ends[m:])


def _quadrature(steps: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Nodes in [0, 1] and their weights (summing to 1)."""
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (nodes + 1), 0.5 * weights
    weights = np.full(steps, 1.0 / (steps - 1))
    weights[[0, -1]] /= 2
    return np.linspace(0.0, 1.0, steps), weights


def _baseline(model, x: Array, baseline: Any, what: str = "baseline") -> Array:
    """``baseline`` broadcast to ``x``: a number, one input (``x.shape[1:]``) or one per sample."""
    xp = model.backend.xp
    if baseline is None:
        return xp.zeros_like(x)
    if not hasattr(baseline, "shape"):
        baseline = np.asarray(baseline)
    shape = tuple(baseline.shape)
    if shape not in ((), tuple(x.shape), tuple(x.shape[1:])):
        raise ValueError(
            f"{what} must be a number, one input of shape {tuple(x.shape[1:])} or one per sample "
            f"of shape {tuple(x.shape)}, got shape {shape}"
        )
    whole = shape == tuple(x.shape)
    b = model.prepare_inputs(baseline if whole else baseline.reshape(1, *shape), what)
    return xp.broadcast_to(b, x.shape)


def integrated_gradients(
    model,
    x: Any,
    baseline: Any = None,
    target: Any = None,
    *,
    steps: int = 64,
    method: str = "riemann_trapezoid",
) -> Attribution:
    """Integrated gradients (Sundararajan et al., 2017): ``(x - baseline)`` times the mean
    gradient along the straight path from ``baseline`` to ``x``.

    Args:
      model: a :class:`wframe.Sequential`.
      x: inputs (batch, ...).
      baseline: a number, one input shaped like ``x[0]``, or one per sample; default zeros.
      target: output index per sample (see the module docstring).
      steps: points on the path (>= 2), all stacked into the batch of one compiled call per
        chunk of samples.
      method: ``"riemann_trapezoid"``: ``steps`` evenly spaced points spanning [0, 1] with
        trapezoid weights (summing to 1, so a linear model is integrated exactly; captum's
        weights sum to ``1 - 1/steps`` instead, so its results are ``(steps - 1) / steps``
        times these); ``"gausslegendre"``: ``steps`` Gauss-Legendre nodes mapped to [0, 1]
        (as captum).

    Returns:
      :class:`Attribution` ``(attributions, delta)``: arrays of the model's backend; ``delta``
      is the completeness gap per sample (0 for exact integration).
    """
    steps = data.as_int(steps, "integrated_gradients: steps", minimum=2)
    if method not in _METHODS:
        raise ValueError(f"integrated_gradients: method must be one of {_METHODS}, got {method!r}")
    x, w = _prepare(model, x, target)
    base = _baseline(model, x, baseline)
    nodes, weights = (model.backend.asarray(a, model.dtype) for a in _quadrature(steps, method))
    fn = _compiled(model, "ig", _integrated)
    per_call = max(1, _rows(model) // steps)
    parts = [
        fn(model.params, model.state, x[c], base[c], w[c], nodes, weights)
        for c in _chunks(x.shape[0], per_call)
    ]
    return Attribution(_concat([p[0] for p in parts]), _concat([p[1] for p in parts]))


def _smoothed(model, params, state, x, noise, w):
    xp = backend_of(x).xp
    m, s = noise.shape[0], noise.shape[1]
    rows = xp.reshape(xp.expand_dims(x, axis=1) + noise, (m * s, *x.shape[1:]))
    grads = _input_grads(model, params, state, rows, _repeat(w, s))
    return xp.mean(xp.reshape(grads, (m, s, *x.shape[1:])), axis=1)


def smoothgrad(
    model, x: Any, target: Any = None, *, n_samples: int = 50, noise: float = 0.15, seed: int = 0
) -> Array:
    """SmoothGrad (Smilkov et al., 2017): the target's input gradient averaged over noisy copies.

    Args:
      n_samples: noisy copies per sample (the paper uses 50).
      noise: the Gaussian noise's std as a fraction of each sample's range ``max(x) - min(x)``
        (the paper's "noise level", 10-20% recommended).
      seed: the noise is drawn on the host with NumPy, so every backend sees the same noise.

    Returns:
      The mean gradient, shaped like ``x``, an array of the model's backend.
    """
    n_samples = data.as_int(n_samples, "smoothgrad: n_samples")
    if not (isinstance(noise, (int, float)) and not isinstance(noise, bool) and noise >= 0):
        raise ValueError(f"smoothgrad: noise must be a number >= 0, got {noise!r}")
    x, w = _prepare(model, x, target)
    host = to_numpy(x).reshape(x.shape[0], -1).astype(np.float64)
    sigma = noise * (host.max(axis=1, initial=0) - host.min(axis=1, initial=0))
    rng = np.random.default_rng(data.as_int(seed, "smoothgrad: seed", minimum=0))
    fn = _compiled(model, "smoothgrad", _smoothed)
    parts = []
    for c in _chunks(x.shape[0], max(1, _rows(model) // n_samples)):
        # Drawn in sample order from one stream: the same noise however the samples are chunked.
        eps = rng.standard_normal((c.stop - c.start, n_samples, *x.shape[1:]))
        eps *= sigma[c].reshape(-1, 1, *([1] * (x.ndim - 1)))
        parts.append(
            fn(model.params, model.state, x[c], model.backend.asarray(eps, dtype=model.dtype), w[c])
        )
    return _concat(parts)


# ----------------------------------------------------------------- perturbation methods
def _pair(value: Any, what: str) -> tuple[int, int]:
    pair = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{what} must be an int or an (h, w) pair, got {value!r}")
    return tuple(data.as_int(v, what) for v in pair)


def _occluded(model, params, state, x, masks, base, w):
    xp = backend_of(x).xp
    m, p = x.shape[0], masks.shape[0]
    keep = xp.expand_dims(1 - masks, axis=0)
    rows = xp.expand_dims(x, axis=1) * keep + xp.expand_dims(base * masks, axis=0)
    rows = xp.reshape(rows, (m * p, *x.shape[1:]))
    drops = _scores(model, params, state, x, w)[:, None] - xp.reshape(
        _scores(model, params, state, rows, _repeat(w, p)), (m, p)
    )
    return xp.matmul(drops, xp.reshape(masks[..., 0], (p, -1)))  # (m, H * W)


def occlusion(
    model,
    x: Any,
    target: Any = None,
    *,
    window: Any = (2, 2),
    stride: Any = (1, 1),
    baseline: Any = 0.0,
) -> Array:
    """Occlusion (Zeiler and Fergus, 2014): the drop of the target output when a window of
    pixels (all channels) is replaced by ``baseline``, averaged over the windows covering each
    pixel, as captum's ``Occlusion``.

    Args:
      x: images (batch, H, W, C).
      window: (h, w) of the occluded patch (an int for a square).
      stride: (h, w) step between patches (captum's default 1). Where it does not divide the
        image, the last patch of the row or column hangs over the edge (clipped), as captum.
      baseline: the replacement value: a number, or one image of shape (H, W, C).

    Returns:
      Shaped like ``x`` (each pixel's value repeated over its channels), an array of the
      model's backend.
    """
    (wh, ww), (sh, sw) = _pair(window, "occlusion: window"), _pair(stride, "occlusion: stride")
    x, w = _prepare(model, x, target)
    if x.ndim != 4:
        raise ValueError(f"occlusion expects images (batch, H, W, C), got shape {tuple(x.shape)}")
    n, h, wd = x.shape[:3]
    if wh > h or ww > wd:
        raise ValueError(f"occlusion: window {(wh, ww)} is larger than the images ({h}, {wd})")
    base = _baseline(model, x[:1], baseline)[0]
    # As captum: ceil((size - window) / stride) + 1 windows per axis, the last one clipped.
    tops, lefts = np.meshgrid(
        np.arange(-(-(h - wh) // sh) + 1) * sh,
        np.arange(-(-(wd - ww) // sw) + 1) * sw,
        indexing="ij",
    )
    tops, lefts = tops.ravel(), lefts.ravel()
    rr, cc = np.arange(h), np.arange(wd)
    per_call = min(len(tops), _rows(model))
    per_samples = list(_chunks(n, max(1, _rows(model) // per_call)))
    fn = _compiled(model, "occlusion", _occluded)
    parts, counts = [0.0] * len(per_samples), 0
    for c in _chunks(len(tops), per_call):  # patch masks made and moved one chunk at a time
        t, left = tops[c, None], lefts[c, None]
        masks = ((rr >= t) & (rr < t + wh))[:, :, None] & ((cc >= left) & (cc < left + ww))[:, None]
        counts = counts + masks.sum(axis=0).reshape(-1)
        mk = model.backend.asarray(masks[..., None], dtype=model.dtype)
        for i, s in enumerate(per_samples):
            parts[i] = parts[i] + fn(model.params, model.state, x[s], mk, base, w[s])
    xp = model.backend.xp
    scale = model.backend.asarray(1.0 / np.maximum(counts, 1), dtype=model.dtype)
    per_pixel = xp.reshape(_concat(parts) * scale, (n, h, wd, 1))
    return xp.broadcast_to(per_pixel, x.shape)


def _coalitions(model, params, state, x, background, masks, w):
    xp = backend_of(x).xp
    m, c, k = x.shape[0], masks.shape[0], background.shape[0]
    flat = xp.reshape(x, (m, 1, 1, -1))
    mk = xp.reshape(masks, (1, c, 1, -1))
    rows = flat * mk + xp.reshape(background, (1, 1, k, -1)) * (1 - mk)
    rows = xp.reshape(rows, (m * c * k, *x.shape[1:]))
    values = _scores(model, params, state, rows, _repeat(w, c * k))
    return xp.mean(xp.reshape(values, (m, c, k)), axis=2)


def _values(model, x, w, background, masks: np.ndarray) -> np.ndarray:
    """``v(S)`` per sample and coalition (mask row), averaged over the background, on the host."""
    fn = _compiled(model, "shapley", _coalitions)
    mk = model.backend.asarray(masks, dtype=model.dtype)
    per_call = max(1, _rows(model) // (len(masks) * background.shape[0]))
    parts = [
        to_numpy(fn(model.params, model.state, x[c], background, mk, w[c]))
        for c in _chunks(x.shape[0], per_call)
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
    x, w = _prepare(model, x, target)
    feat = tuple(x.shape[1:])
    f = math.prod(feat)
    bg = background if hasattr(background, "shape") else np.asarray(background)
    shape = tuple(bg.shape)
    k = 1 if shape in (feat, (f,)) else (shape[0] if shape[1:] in (feat, (f,)) else 0)
    if not k:
        raise ValueError(
            f"background must be one input of shape {feat} or ({f},), or k of them of shape "
            f"(k, *{feat}) or (k, {f}), got shape {shape}"
        )
    bg = model.prepare_inputs(bg.reshape(k, *feat), "background")
    exact = f <= 10 if exact is None else bool(exact)
    if exact:
        if f > 20:
            raise ValueError(f"shapley_sampling: exact=True enumerates 2^{f} subsets; use sampling")
        masks, weights = _exact_weights(f)
        per_call = max(1, _rows(model) // k)
        phi = sum(
            _values(model, x, w, bg, masks[c]) @ weights[c] for c in _chunks(len(masks), per_call)
        )
    else:
        rng = np.random.default_rng(data.as_int(seed, "shapley_sampling: seed", minimum=0))
        perms = rng.permuted(np.tile(np.arange(f), (n_permutations, 1)), axis=1)
        perms = np.concatenate([perms, perms[:, ::-1]])
        per_call = max(1, _rows(model) // ((f + 1) * k))
        phi = np.zeros((x.shape[0], f))
        for c in _chunks(len(perms), per_call):
            rank = np.argsort(perms[c], axis=1)  # rank[p, i]: position of feature i
            masks = rank[:, None, :] < np.arange(f + 1)[None, :, None]  # prefixes of length j
            v = _values(model, x, w, bg, masks.reshape(-1, f)).reshape(x.shape[0], -1, f + 1)
            marginal = np.diff(v, axis=2)  # marginal[:, p, j]: of feature perms[p, j]
            idx = np.broadcast_to(rank[None], marginal.shape)
            phi += np.take_along_axis(marginal, idx, axis=2).sum(axis=1)
        phi /= len(perms)
    return model.backend.asarray(phi.reshape(x.shape), dtype=model.dtype)
