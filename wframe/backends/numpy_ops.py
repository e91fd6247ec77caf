"""The NumPy backend's fused operations: the hooks of :mod:`wframe.backends.fusion` for NumPy.

A small model's step on NumPy is a few dozen array calls on tiny arrays, each costing a
microsecond or more of Python and NumPy dispatch, so the hot chains are written here with as few
calls as their arithmetic allows: softmax cross-entropy on class indices, of logits (value and
gradient from one exp) or of probabilities (Keras' ``sparse_categorical_crossentropy`` on a
softmax output), each row's label's entries picked by index instead of one-hot products; a bias
plus ReLU, tanh, sigmoid or softmax computed in place on the sum; Dense layers and chains of
them (a compiled plan's, :mod:`wframe.training.host_plan`) and the accuracy's hits on class
indices (argmax, ``==``, ``count_nonzero``). Measured on the 64-64-10 MLP at batch 32: the
loss of logits 46 -> 15 us, the accuracy 20 -> 6 us, each Dense + ReLU forward and backward a
few us less.

Each function returns ``None`` for inputs it does not cover (another dtype, shape or layout, a
subclass of ndarray, an activation without a fused form), and the caller runs the generic
array-API code, which stays the numerical reference; the expressions here are the same ones in
the same order, so results agree to rounding (the tests compare them).
"""

from __future__ import annotations

import math

import numpy

from wframe.backends.numpy_xp import xp

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


def _on_classes(pred, labels) -> bool:
    """Whether ``pred`` is a float NumPy ``(n, c)`` with ``n, c > 0`` and ``labels`` integer
    class indices ``(n,)``: what the cross-entropy kernels cover."""
    nd = numpy.ndarray
    if type(pred) is not nd or type(labels) is not nd or pred.ndim != 2 or not pred.size:
        return False
    return labels.shape == pred.shape[:1] and labels.dtype.kind in "iu" and pred.dtype in _FLOATS


def softmax_cross_entropy(logits, labels):
    """``(mean loss, dlogits)`` of :class:`wframe.losses.SoftmaxCrossEntropy` on logits
    ``(n, c)`` and integer class indices ``(n,)``; ``None`` for anything else."""
    if not _on_classes(logits, labels):
        return None
    n = logits.shape[0]
    shifted = logits - numpy.maximum.reduce(logits, axis=1, keepdims=True)
    if not math.isfinite(numpy.add.reduce(shifted, axis=None)):
        # An inf or NaN logit: the generic one-hot product makes its row's loss NaN (0 * inf),
        # as CuPy's kernel does; picking the label's entry would not. The generic code then.
        return None
    rows = _arange(n)
    picked = _picked(shifted, rows, labels)  # each row's label's (shifted) logit
    if picked is None:
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


def _picked(a, rows, labels):
    """``a[rows, labels]``, or ``None`` for a label outside ``[0, c)`` (where the generic
    one-hot row is all zeros and indexing would pick another entry or fail)."""
    if labels.dtype.kind == "i" and numpy.minimum.reduce(labels) < 0:
        return None
    try:
        return a[rows, labels]
    except IndexError:  # a label >= c
        return None


def probability_cross_entropy(probs, labels, eps):
    """``(mean loss, dprobs)`` of :class:`wframe.losses.SoftmaxCrossEntropy` with
    ``from_logits=False`` on probabilities ``(n, c)`` and integer class indices ``(n,)``: Keras'
    log of the probabilities normalised to sum to 1 and clipped to ``[eps, 1 - eps]``, with
    each row's label's entry picked by index instead of the one-hot products (every other
    entry of those products is a zero); ``None`` for anything else."""
    if not _on_classes(probs, labels) or not math.isfinite(numpy.add.reduce(probs, axis=None)):
        return None
    n = probs.shape[0]
    rows = _arange(n)
    picked = _picked(probs, rows, labels)
    if picked is None:
        return None
    total = numpy.add.reduce(probs, axis=1)
    q = picked / total  # the label's normalised probability, per row
    clipped = numpy.maximum(q, eps)  # numpy.clip's values (its wrapper costs 1.5 us)
    numpy.minimum(clipped, 1 - eps, out=clipped)
    inside = ((q > eps) & (q < 1 - eps)).astype(probs.dtype)
    terms = -numpy.log(clipped)
    value = numpy.add.reduce(terms, axis=None) / n
    dq = -1 / clipped  # the label's entry of d(mean loss)/dq; the others are zeros
    dq *= inside
    dq *= 1 / n
    # Through q = p / sum(p): dp = (dq - sum(dq * q)) / sum(p), and sum(dq * q) is dq * q at
    # the label: -dq * q / sum(p) everywhere, and dq more at the label.
    s = dq * q
    grad = numpy.empty_like(probs)
    grad[...] = (-s / total)[:, None]
    dq -= s
    dq /= total
    grad[rows, labels] = dq
    return value, grad


def bias_activation(name: str, z, b):
    """``act(z + b)`` (``b=None``: ``act(z)``) and its backprop for float NumPy arrays, ``act``
    :data:`ACTIVATIONS`' ``name`` computed in place on the sum; ``z`` is left as it is. ``None``
    where it does not apply."""
    nd = numpy.ndarray
    if type(z) is not nd or z.dtype not in _FLOATS or z.ndim == 0:
        return None
    if b is None:
        y = z.copy()
    else:
        if type(b) is not nd or b.dtype != z.dtype or b.shape != z.shape[-1:]:
            return None
        y = z + b
    forward, backprop = ACTIVATIONS[name]
    forward(y)
    return y, lambda dy: backprop(y, dy)


def _relu(y):
    numpy.maximum(y, 0, out=y)


def _relu_backprop(y, dy):
    """The gradient through ``y = relu(...)``: ``sign(y) * dy`` (the sign taken in place)."""
    if type(dy) is not numpy.ndarray or dy.dtype != y.dtype:
        return dy * (y > 0).astype(dy.dtype)  # the generic form, in dy's dtype
    # y >= 0, so sign(y) is the 0/1 mask (as relu's: the gradient at 0 is 0); a NaN
    # forward gives a NaN gradient here (0 in the generic form): the step is not finite.
    dz = numpy.sign(y)
    dz *= dy
    return dz


def _softmax(y):
    """:func:`wframe.activations.softmax`'s forward (max-shifted), in place on ``y``."""
    y -= numpy.maximum.reduce(y, axis=-1, keepdims=True)
    numpy.exp(y, out=y)
    y /= numpy.add.reduce(y, axis=-1, keepdims=True)


def _softmax_backprop(y, dy):
    """The gradient through ``y = softmax(...)``: ``y * (dy - sum(dy * y))`` over the last
    axis, the product in place."""
    if type(dy) is not numpy.ndarray or dy.dtype != y.dtype:
        return y * (dy - xp.sum(dy * y, axis=-1, keepdims=True))  # the generic form
    dz = dy - numpy.add.reduce(dy * y, axis=-1, keepdims=True)
    dz *= y
    return dz


def _tanh(y):
    numpy.tanh(y, out=y)


def _tanh_backprop(y, dy):
    """``dy * (1 - y * y)``, the products in place."""
    if type(dy) is not numpy.ndarray or dy.dtype != y.dtype:
        return dy * (1 - y * y)  # the generic form, in the promoted dtype
    dz = y * y
    numpy.subtract(1, dz, out=dz)
    dz *= dy
    return dz


def _sigmoid(y):
    """:func:`wframe.activations.sigmoid`'s ``0.5 + 0.5 * tanh(0.5 * x)``, in place on ``y``."""
    y *= 0.5
    numpy.tanh(y, out=y)
    y *= 0.5
    y += 0.5


def _sigmoid_backprop(y, dy):
    """``dy * (y * (1 - y))``, the products in place."""
    if type(dy) is not numpy.ndarray or dy.dtype != y.dtype:
        return dy * (y * (1 - y))  # the generic form, in the promoted dtype
    dz = 1 - y
    dz *= y
    dz *= dy
    return dz


#: The activations computed in place on an array the kernel owns: ``name -> (forward(y),
#: backprop(y, dy))``, ``y`` the activation's output. The values are those of
#: :mod:`wframe.activations`' functions of the same name, bit for bit (the same operations:
#: products commute exactly).
ACTIVATIONS = {
    "relu": (_relu, _relu_backprop),
    "softmax": (_softmax, _softmax_backprop),
    "tanh": (_tanh, _tanh_backprop),
    "sigmoid": (_sigmoid, _sigmoid_backprop),
}


def dense(activation: str | None, use_bias: bool, general):
    """``run(params, x, vjp=True, key=None) -> (y, backprop)``: a compiled plan's Dense
    (:meth:`wframe.layers.Dense.plan`), ``act(x @ W + b)`` (``act`` :data:`ACTIVATIONS`'
    ``activation``, or linear for ``None``) with its backprop ``(dy, input_grad=True) -> (dx,
    {"W", "b"})`` for 2-D float NumPy arrays of one dtype, the bias and the activation in place
    on the product it owns: the values of :class:`~wframe.layers.Dense`'s forward with
    :func:`bias_activation`. Other arrays go to ``general(params, x, vjp)``."""
    nd = numpy.ndarray
    forward, act_backprop = ACTIVATIONS.get(activation, (None, None))

    def run(params, x, vjp=True, key=None):  # (the backprop is made either way)
        W, b = params["W"], params["b"] if use_bias else None
        if type(x) is not nd or type(W) is not nd or W.dtype not in _FLOATS or x.dtype != W.dtype:
            return general(params, x, vjp)
        if use_bias and (type(b) is not nd or b.dtype != W.dtype):
            return general(params, x, vjp)
        y = x @ W
        if use_bias:
            y += b
        if forward is not None:
            forward(y)

        def backprop(dy, input_grad=True):
            dz = dy if forward is None else act_backprop(y, dy)
            grads = {"W": x.T @ dz}
            if use_bias:
                grads["b"] = numpy.add.reduce(dz, axis=0)
            return (dz @ W.T if input_grad else None), grads

        return y, backprop

    run.dense = (activation, use_bias)  # what dense_chain fuses
    return run


def dense_chain(runs: list, general):
    """``run(params, x, vjp=True, key=None) -> (y, backprop)`` of a chain of :func:`dense` runs
    (``(name, run)`` pairs, in order; ``None`` unless every run is one): the same arithmetic as
    the runs one after the other, in one loop over the layers each way (a chain's plan,
    :meth:`wframe.layers.Sequential.plan`); ``backprop(dy, input_grad=True) -> (dx, {name:
    grads})``. Arrays that one of the runs would not take go to ``general(params, x, vjp)``."""
    if not runs or not all(hasattr(r, "dense") for _, r in runs):
        return None
    specs = [(name, *ACTIVATIONS.get(r.dense[0], (None, None)), r.dense[1]) for name, r in runs]
    nd = numpy.ndarray

    def run(params, x, vjp=True, key=None):  # (Dense layers use no key)
        if type(x) is not nd or x.dtype not in _FLOATS:
            return general(params, x, vjp)
        dtype, tape, h = x.dtype, [], x
        for name, forward, backward, use_bias in specs:
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
            if forward is not None:
                forward(y)
            tape.append((name, h, W, y, backward, use_bias))
            h = y

        def backprop(dy, input_grad=True):
            grads = {}
            for i in range(len(tape) - 1, -1, -1):
                name, h, W, y, backward, use_bias = tape[i]
                dz = dy if backward is None else backward(y, dy)
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


def true_count(values, dtype):
    """``[count of True, n]`` in ``dtype`` for boolean per-example values ``(n,)`` or ``(n, 1)``
    (a binary accuracy's hits): the statistics :func:`wframe.metrics.base.mean_stats` sums
    from them, exactly (float counts below 2**24); ``None`` for anything else."""
    if type(values) is not numpy.ndarray or values.dtype != numpy.bool_ or values.ndim > 2:
        return None
    n = values.shape[0] if values.ndim else 0
    if not n or values.shape[1:] not in ((), (1,)) or n >= 2**24:
        return None
    return numpy.array((numpy.count_nonzero(values), n), dtype=dtype)


def _is_activation(fn, name: str) -> bool:
    """Whether ``fn`` is :mod:`wframe.activations`' function ``name``."""
    return getattr(fn, "__module__", None) == "wframe.activations" and fn.__name__ == name


def _fused_name(fn) -> str | None:
    """The name of ``fn`` in :data:`ACTIVATIONS` where it is that activation, else ``None``."""
    name = getattr(fn, "__name__", None)
    return name if name in ACTIVATIONS and _is_activation(fn, name) else None


class Fused:
    """The NumPy namespace's entry in :data:`wframe.backends.fusion.FUSED`: the hooks that
    activations, losses, dropout and random bits ask for; ``None`` means the generic code."""

    def bias_activation(self, z, b, activation):
        name = _fused_name(activation)
        return None if name is None else bias_activation(name, z, b)

    def dense(self, activation, use_bias: bool, general):
        """:func:`dense` for a Dense layer with ``activation`` (one of :data:`ACTIVATIONS`, or
        linear), ``general`` for the arrays it does not cover; ``None`` for any other."""
        name = _fused_name(activation)
        if name is None and not _is_activation(activation, "linear"):
            return None
        return dense(name, use_bias, general)

    def dense_chain(self, runs, general):
        """:func:`dense_chain` of a chain's runs, ``None`` unless all are :meth:`dense`'s."""
        return dense_chain(runs, general)

    def softmax_cross_entropy(self, logits, labels):
        return softmax_cross_entropy(logits, labels)

    def probability_cross_entropy(self, probs, labels, eps):
        return probability_cross_entropy(probs, labels, eps)

    def class_hits(self, pred, labels):
        return class_hits(pred, labels)

    def true_count(self, values, dtype):
        return true_count(values, dtype)

    def dropout(self, x, key, threshold, scale):
        return None

    def random_bits(self, key, shape):
        return None
