"""Gradient methods: gradient x input, integrated gradients and SmoothGrad."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from wframe import data
from wframe.backends import backend_of, to_numpy
from wframe.explain.common import (
    Head,
    baselines,
    chunks,
    compiled,
    concat,
    concat_each,
    input_grads,
    is_float,
    per_call,
    prepare,
    repeat_rows,
    results,
    scores,
    take,
)
from wframe.types import Array

_METHODS = ("riemann_trapezoid", "gausslegendre")


class Attribution(NamedTuple):
    """Integrated gradients with their completeness gap (captum's
    ``return_convergence_delta=True`` pair).

    Attributes:
      attributions: shaped like ``x`` (one per input for a model of several, ``None`` for an
        integer input).
      delta: per sample, ``sum(attributions) - (f(x) - f(baseline))`` for the target output,
        the sum over every input's attributions.
    """

    attributions: Any
    delta: Array


def _grad_x_input(model, head, params, state, xs, w):
    grads = input_grads(model, head, params, state, xs, w)
    return tuple(None if g is None else x * g for x, g in zip(xs, grads, strict=True))


def gradient_x_input(model, x: Any, target: Any = None, *, output: Any = None) -> Any:
    """Input times the gradient of the target output w.r.t. it (Shrikumar et al., 2016).

    Args:
      model: a :class:`wframe.Sequential` or graph :class:`wframe.Model`.
      x: inputs (batch, ...); for a model of several inputs a list or a dict by input name.
      target: output index per sample (see the module docstring).
      output: the name or index of the output explained (required when there are several).

    Returns:
      An array of the model's backend shaped like ``x`` (one per input, as ``x`` was given).
    """
    prep = prepare(model, x, target, output, "gradient_x_input")
    fn = compiled(model, "gxi", prep.head, _grad_x_input)
    parts = [
        fn(model.params, model.state, take(prep.xs, c), prep.w[c])
        for c in chunks(prep.rows, per_call(model))
    ]
    return results(model, prep, concat_each(parts))


def _path(x, base, alphas):
    """The points ``base + alpha * (x - base)`` of each sample, in a row: (m * steps, ...)."""
    xp = backend_of(x).xp
    m, s = x.shape[0], alphas.shape[0]
    a = xp.reshape(alphas, (1, s, *([1] * (x.ndim - 1))))
    path = xp.expand_dims(base, axis=1) + a * xp.expand_dims(x - base, axis=1)
    return xp.reshape(path, (m * s, *x.shape[1:]))


def _integrated(model, head: Head, params, state, xs, bases, w, alphas, weights):
    xp = backend_of(w).xp
    m, s = w.shape[0], alphas.shape[0]
    # Integer inputs (no base) stay at x along the path.
    bases = tuple(x if b is None else b for x, b in zip(xs, bases, strict=True))
    paths = tuple(
        _path(x, b, alphas) if is_float(x) else repeat_rows(x, s)
        for x, b in zip(xs, bases, strict=True)
    )
    grads = input_grads(model, head, params, state, paths, repeat_rows(w, s))
    attributions, total = [], 0.0
    for x, b, g in zip(xs, bases, grads, strict=True):
        if g is None:
            attributions.append(None)
            continue
        mean = xp.sum(xp.reshape(g, (m, s, -1)) * xp.reshape(weights, (1, s, 1)), axis=1)
        attributions.append((x - b) * xp.reshape(mean, x.shape))
        total = total + xp.sum(xp.reshape(attributions[-1], (m, -1)), axis=1)
    ends = tuple(xp.concat([x, b], axis=0) for x, b in zip(xs, bases, strict=True))
    ends = scores(model, head, params, state, ends, xp.concat([w, w], axis=0))
    return tuple(attributions), total - (ends[:m] - ends[m:])


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
    output: Any = None,
) -> Attribution:
    """Integrated gradients (Sundararajan et al., 2017): ``(x - baseline)`` times the mean
    gradient along the straight path from ``baseline`` to ``x``.

    Args:
      model: a :class:`wframe.Sequential` or graph :class:`wframe.Model`.
      x: inputs (batch, ...); for a model of several inputs a list or a dict by input name:
        every float input moves along the path together, integer inputs stay at ``x``.
      baseline: a number, one input shaped like ``x[0]``, or one per sample; default zeros.
        For several inputs: one number for all, or a list / dict of those per input (``None``
        or a missing name: zeros; an integer input's entry must be ``None``).
      target: output index per sample (see the module docstring).
      steps: points on the path (>= 2), all stacked into the batch of one compiled call per
        chunk of samples.
      method: ``"riemann_trapezoid"``: ``steps`` evenly spaced points spanning [0, 1] with
        trapezoid weights (summing to 1, so a linear model is integrated exactly; captum's
        weights sum to ``1 - 1/steps`` instead, so its results are ``(steps - 1) / steps``
        times these); ``"gausslegendre"``: ``steps`` Gauss-Legendre nodes mapped to [0, 1]
        (as captum).
      output: the name or index of the output explained (required when there are several).

    Returns:
      :class:`Attribution` ``(attributions, delta)``: arrays of the model's backend
      (``attributions`` one per input as ``x`` was given); ``delta`` is the completeness gap
      per sample, over all inputs together (0 for exact integration).
    """
    steps = data.as_int(steps, "integrated_gradients: steps", minimum=2)
    if method not in _METHODS:
        raise ValueError(f"integrated_gradients: method must be one of {_METHODS}, got {method!r}")
    prep = prepare(model, x, target, output, "integrated_gradients")
    bases = baselines(model, prep, baseline)
    nodes, weights = (model.backend.asarray(a, model.dtype) for a in _quadrature(steps, method))
    fn = compiled(model, "ig", prep.head, _integrated)
    parts = [
        fn(model.params, model.state, take(prep.xs, c), take(bases, c), prep.w[c], nodes, weights)
        for c in chunks(prep.rows, per_call(model, steps))
    ]
    attributions = results(model, prep, concat_each([p[0] for p in parts]))
    return Attribution(attributions, concat([p[1] for p in parts]))


def _smoothed(model, head: Head, params, state, xs, noise, w):
    xp = backend_of(w).xp
    m, s = w.shape[0], next(e.shape[1] for e in noise if e is not None)
    rows = tuple(
        repeat_rows(x, s)
        if e is None
        else xp.reshape(xp.expand_dims(x, axis=1) + e, (m * s, *x.shape[1:]))
        for x, e in zip(xs, noise, strict=True)
    )
    grads = input_grads(model, head, params, state, rows, repeat_rows(w, s))
    return tuple(
        None if g is None else xp.mean(xp.reshape(g, (m, s, *x.shape[1:])), axis=1)
        for x, g in zip(xs, grads, strict=True)
    )


def _noise_scales(xs: tuple, noise: float) -> list:
    """Per input, the noise std of each sample: ``noise`` times its range (``None``: integer)."""
    scales = []
    for x in xs:
        if not is_float(x):
            scales.append(None)
            continue
        host = to_numpy(x).reshape(x.shape[0], -1).astype(np.float64)
        sigma = noise * (host.max(axis=1, initial=0) - host.min(axis=1, initial=0))
        scales.append(sigma.reshape(-1, 1, *([1] * (x.ndim - 1))))
    return scales


def smoothgrad(
    model,
    x: Any,
    target: Any = None,
    *,
    n_samples: int = 50,
    noise: float = 0.15,
    seed: int = 0,
    output: Any = None,
) -> Any:
    """SmoothGrad (Smilkov et al., 2017): the target's input gradient averaged over noisy copies.

    Args:
      model, x, target, output: as for :func:`gradient_x_input`; with several inputs every
        float input gets its own noise, integer inputs none.
      n_samples: noisy copies per sample (the paper uses 50).
      noise: the Gaussian noise's std as a fraction of each sample's range ``max(x) - min(x)``
        (the paper's "noise level", 10-20% recommended), per input.
      seed: the noise is drawn on the host with NumPy, so every backend sees the same noise.

    Returns:
      The mean gradient, shaped like ``x`` (one per input, as ``x`` was given), an array of
      the model's backend.
    """
    n_samples = data.as_int(n_samples, "smoothgrad: n_samples")
    if not (isinstance(noise, (int, float)) and not isinstance(noise, bool) and noise >= 0):
        raise ValueError(f"smoothgrad: noise must be a number >= 0, got {noise!r}")
    seed = data.as_int(seed, "smoothgrad: seed", minimum=0)
    prep = prepare(model, x, target, output, "smoothgrad")
    scales = _noise_scales(prep.xs, noise)
    # One stream per input, drawn in sample order: the same noise however samples are chunked.
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(scales))]
    fn = compiled(model, "smoothgrad", prep.head, _smoothed)
    parts = []
    for c in chunks(prep.rows, per_call(model, n_samples)):
        eps = tuple(
            None
            if sigma is None
            else model.backend.asarray(
                rng.standard_normal((c.stop - c.start, n_samples, *x.shape[1:])) * sigma[c],
                dtype=model.dtype,
            )
            for x, sigma, rng in zip(prep.xs, scales, streams, strict=True)
        )
        parts.append(fn(model.params, model.state, take(prep.xs, c), eps, prep.w[c]))
    return results(model, prep, concat_each(parts))
