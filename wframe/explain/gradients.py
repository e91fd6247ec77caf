"""Gradient methods: gradient x input, integrated gradients and SmoothGrad."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from wframe import data
from wframe.backends import backend_of, to_numpy
from wframe.explain.common import (
    broadcast_baseline,
    chunks,
    compiled,
    concat,
    input_grads,
    per_call,
    prepare,
    repeat_rows,
    scores,
)
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


def _grad_x_input(model, params, state, x, w):
    return x * input_grads(model, params, state, x, w)


def gradient_x_input(model, x: Any, target: Any = None) -> Array:
    """Input times the gradient of the target output w.r.t. it (Shrikumar et al., 2016).

    Returns:
      An array of the model's backend shaped like ``x``.
    """
    x, w = prepare(model, x, target)
    fn = compiled(model, "gxi", _grad_x_input)
    size = per_call(model)
    return concat([fn(model.params, model.state, x[c], w[c]) for c in chunks(x.shape[0], size)])


def _integrated(model, params, state, x, base, w, alphas, weights):
    xp = backend_of(x).xp
    m, s = x.shape[0], alphas.shape[0]
    diff = x - base
    a = xp.reshape(alphas, (1, s, *([1] * (x.ndim - 1))))
    path = xp.expand_dims(base, axis=1) + a * xp.expand_dims(diff, axis=1)  # (m, steps, ...)
    path = xp.reshape(path, (m * s, *x.shape[1:]))
    grads = input_grads(model, params, state, path, repeat_rows(w, s))
    mean = xp.sum(xp.reshape(grads, (m, s, -1)) * xp.reshape(weights, (1, s, 1)), axis=1)
    attributions = diff * xp.reshape(mean, x.shape)
    ends = scores(model, params, state, xp.concat([x, base], axis=0), xp.concat([w, w], axis=0))
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
    x, w = prepare(model, x, target)
    base = broadcast_baseline(model, x, baseline)
    nodes, weights = (model.backend.asarray(a, model.dtype) for a in _quadrature(steps, method))
    fn = compiled(model, "ig", _integrated)
    parts = [
        fn(model.params, model.state, x[c], base[c], w[c], nodes, weights)
        for c in chunks(x.shape[0], per_call(model, steps))
    ]
    return Attribution(concat([p[0] for p in parts]), concat([p[1] for p in parts]))


def _smoothed(model, params, state, x, noise, w):
    xp = backend_of(x).xp
    m, s = noise.shape[0], noise.shape[1]
    rows = xp.reshape(xp.expand_dims(x, axis=1) + noise, (m * s, *x.shape[1:]))
    grads = input_grads(model, params, state, rows, repeat_rows(w, s))
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
    x, w = prepare(model, x, target)
    host = to_numpy(x).reshape(x.shape[0], -1).astype(np.float64)
    sigma = noise * (host.max(axis=1, initial=0) - host.min(axis=1, initial=0))
    rng = np.random.default_rng(data.as_int(seed, "smoothgrad: seed", minimum=0))
    fn = compiled(model, "smoothgrad", _smoothed)
    parts = []
    for c in chunks(x.shape[0], per_call(model, n_samples)):
        # Drawn in sample order from one stream: the same noise however the samples are chunked.
        eps = rng.standard_normal((c.stop - c.start, n_samples, *x.shape[1:]))
        eps *= sigma[c].reshape(-1, 1, *([1] * (x.ndim - 1)))
        parts.append(
            fn(model.params, model.state, x[c], model.backend.asarray(eps, dtype=model.dtype), w[c])
        )
    return concat(parts)
