"""The NumPy backend's fused operations: the hooks of :mod:`wframe.backends.fusion` for NumPy.

A small model's step on NumPy is a few dozen array calls on tiny arrays, each costing a
microsecond or more of Python and NumPy dispatch, so the hot chains are written here with as few
calls as their arithmetic allows: softmax cross-entropy on class indices (value and gradient
from one exp, the label's entries picked by index instead of a one-hot product), a bias plus
ReLU (one add, one in-place maximum; the backward one sign and one product) and the accuracy's
hits on class indices (argmax, ``==``, ``count_nonzero``). Measured on the 64-64-10 MLP at
batch 32: the loss 46 -> 15 us, the accuracy 20 -> 6 us, each Dense + ReLU forward and backward
a few us less.

Each function returns ``None`` for inputs it does not cover (another dtype, shape or layout, a
subclass of ndarray, an activation without a fused form), and the caller runs the generic
array-API code, which stays the numerical reference; the expressions here are the same ones in
the same order, so results agree to rounding (the tests compare them).
"""

from __future__ import annotations

import math

import numpy

_FLOATS = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))
_rows: dict[int, numpy.ndarray] = {}  # batch size -> arange(n), read only


def _arange(n: int) -> numpy.ndarray:
    rows = _rows.get(n)
    if rows is None:
        rows = numpy.arange(n)
        rows.flags.writeable = False
        if len(_rows) < 64:
            _rows[n] = rows
    return rows


def softmax_cross_entropy(logits, labels):
    """``(mean loss, dlogits)`` of :class:`wframe.losses.SoftmaxCrossEntropy` on logits
    ``(n, c)`` and integer class indices ``(n,)``; ``None`` for anything else."""
    nd = numpy.ndarray
    if type(logits) is not nd or type(labels) is not nd or logits.ndim != 2:
        return None
    n, c = logits.shape
    if labels.shape != (n,) or labels.dtype.kind not in "iu" or logits.dtype not in _FLOATS:
        return None
    if n == 0 or c == 0:
        return None
    shifted = logits - numpy.maximum.reduce(logits, axis=1, keepdims=True)
    if not math.isfinite(numpy.add.reduce(shifted, axis=None)):
        # An inf or NaN logit: the generic one-hot product makes its row's loss NaN (0 * inf),
        # as CuPy's kernel does; picking the label's entry would not. The generic code then.
        return None
    rows = _arange(n)
    try:
        picked = shifted[rows, labels]  # each row's label's (shifted) logit
    except IndexError:  # a label >= c: the generic code (whose one-hot row is all zeros)
        return None
    e = numpy.exp(shifted)
    s = numpy.add.reduce(e, axis=1, keepdims=True)
    # log-sum-exp minus the label's logit, per row; their mean.
    terms = numpy.log(s[:, 0])
    terms -= picked
    value = numpy.add.reduce(terms) / n
    e /= s  # softmax, then minus the one-hot labels, over n
    e[rows, labels] -= 1
    e *= 1 / n
    return value, e


def bias_relu(z, b):
    """``relu(z + b)`` (``b=None``: ``relu(z)``) and its backprop for float NumPy arrays; ``z``
    is left as it is. ``None`` where it does not apply."""
    nd = numpy.ndarray
    if type(z) is not nd or z.dtype not in _FLOATS:
        return None
    if b is None:
        y = numpy.maximum(z, 0)
    else:
        if type(b) is not nd or b.dtype != z.dtype or b.shape != z.shape[-1:]:
            return None
        y = z + b
        numpy.maximum(y, 0, out=y)

    return y, lambda dy: _relu_backprop(y, dy)


def _relu_backprop(y, dy):
    """The gradient through ``y = relu(...)``: ``sign(y) * dy`` (the sign taken in place)."""
    if type(dy) is not numpy.ndarray or dy.dtype != y.dtype:
        return dy * (y > 0).astype(dy.dtype)  # the generic form, in dy's dtype
    # y >= 0, so sign(y) is the 0/1 mask (as relu's: the gradient at 0 is 0); a NaN
    # forward gives a NaN gradient here (0 in the generic form): the step is not finite.
    dz = numpy.sign(y)
    dz *= dy
    return dz


def dense(relu: bool, use_bias: bool, general):
    """``run(params, x, vjp=True, key=None) -> (y, backprop)``: a compiled plan's Dense
    (:meth:`wframe.layers.Dense.plan`), ``relu(x @ W + b)`` (``relu=False``: linear) with its
    backprop ``(dy, input_grad=True) -> (dx, {"W", "b"})`` for 2-D float NumPy arrays of one
    dtype, the bias and the ReLU in place on the product it owns: the values of
    :class:`~wframe.layers.Dense`'s forward with :func:`bias_relu`. Other arrays go to
    ``general(params, x, vjp)``."""
    nd = numpy.ndarray

    def run(params, x, vjp=True, key=None):  # (the backprop is made either way)
        W, b = params["W"], params["b"] if use_bias else None
        if type(x) is not nd or type(W) is not nd or W.dtype not in _FLOATS or x.dtype != W.dtype:
            return general(params, x, vjp)
        if use_bias and (type(b) is not nd or b.dtype != W.dtype):
            return general(params, x, vjp)
        y = x @ W
        if use_bias:
            y += b
        if relu:
            numpy.maximum(y, 0, out=y)

        def backprop(dy, input_grad=True):
            dz = _relu_backprop(y, dy) if relu else dy
            grads = {"W": x.T @ dz}
            if use_bias:
                grads["b"] = numpy.add.reduce(dz, axis=0)
            return (dz @ W.T if input_grad else None), grads

        return y, backprop

    run.dense = (relu, use_bias)  # what dense_chain fuses
    return run


def dense_chain(runs: list, general):
    """``run(params, x, vjp=True, key=None) -> (y, backprop)`` of a chain of :func:`dense` runs
    (``(name, run)`` pairs, in order; ``None`` unless every run is one): the same arithmetic as
    the runs one after the other, in one loop over the layers each way (a chain's plan,
    :meth:`wframe.layers.Sequential.plan`); ``backprop(dy, input_grad=True) -> (dx, {name:
    grads})``. Arrays that one of the runs would not take go to ``general(params, x, vjp)``."""
    specs = [(name, *getattr(r, "dense", (None, None))) for name, r in runs]
    if not specs or any(relu is None for _, relu, _ in specs):
        return None
    nd = numpy.ndarray

    def run(params, x, vjp=True, key=None):  # (Dense layers use no key)
        if type(x) is not nd or x.dtype not in _FLOATS:
            return general(params, x, vjp)
        dtype, tape, h = x.dtype, [], x
        for name, relu, use_bias in specs:
            p = params[name]
            W = p["W"]
            if type(W) is not nd or W.dtype != dtype:
                return general(params, x, vjp)
            y = h @ W
            if use_bias:
                b = p["b"]
                if type(b) is not nd or b.dtype != dtype:
                    return general(params, x, vjp)
                y += b
            if relu:
                numpy.maximum(y, 0, out=y)
            tape.append((name, h, W, y, relu, use_bias))
            h = y

        def backprop(dy, input_grad=True):
            grads = {}
            for i in range(len(tape) - 1, -1, -1):
                name, h, W, y, relu, use_bias = tape[i]
                dz = _relu_backprop(y, dy) if relu else dy
                g = grads[name] = {"W": h.T @ dz}
                if use_bias:
                    g["b"] = numpy.add.reduce(dz, axis=0)
                dy = dz @ W.T if input_grad or i else None
            return dy, {spec[0]: grads[spec[0]] for spec in specs}

        return h, backprop

    return run


def class_hits(pred, labels):
    """``[hits, count]`` of arg-max predictions ``(n, c)`` against class indices ``(n,)``, in
    ``pred``'s float dtype (as :mod:`wframe.metrics.accuracy` counts them); ``None`` for
    anything else."""
    nd = numpy.ndarray
    if type(pred) is not nd or type(labels) is not nd or pred.ndim != 2:
        return None
    n = pred.shape[0]
    if labels.shape != (n,) or pred.dtype not in _FLOATS:
        return None
    hits = numpy.count_nonzero(pred.argmax(axis=1) == labels)  # (numpy.argmax wraps it)
    return numpy.array((hits, n), dtype=pred.dtype)


def _is_activation(fn, name: str) -> bool:
    """Whether ``fn`` is :mod:`wframe.activations`' function ``name``."""
    return getattr(fn, "__module__", None) == "wframe.activations" and fn.__name__ == name


class Fused:
    """The NumPy namespace's entry in :data:`wframe.backends.fusion.FUSED`: the hooks that
    activations, losses, dropout and random bits ask for; ``None`` means the generic code."""

    def bias_activation(self, z, b, activation):
        if _is_activation(activation, "relu"):
            return bias_relu(z, b)
        return None

    def dense(self, activation, use_bias: bool, general):
        """:func:`dense` for a Dense layer with ``activation`` (ReLU or linear), ``general``
        for the arrays it does not cover; ``None`` for any other activation."""
        relu = _is_activation(activation, "relu")
        if not (relu or _is_activation(activation, "linear")):
            return None
        return dense(relu, use_bias, general)

    def dense_chain(self, runs, general):
        """:func:`dense_chain` of a chain's runs, ``None`` unless all are :meth:`dense`'s."""
        return dense_chain(runs, general)

    def softmax_cross_entropy(self, logits, labels):
        return softmax_cross_entropy(logits, labels)

    def class_hits(self, pred, labels):
        return class_hits(pred, labels)

    def dropout(self, x, key, threshold, scale):
        return None

    def random_bits(self, key, shape):
        return None
