"""The backend contract: what every array backend provides to the rest of wframe."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from wframe.backends import special
from wframe.backends.namespace import array_namespace
from wframe.tree import tree_map
from wframe.types import Array, Namespace

#: Explicit spatial padding ``((top, bottom), (left, right))``, as ``lax.conv_general_dilated``.
Pads = tuple[tuple[int, int], tuple[int, int]]


class Backend:
    """An array backend: its array-API namespace plus the few things the standard lacks.

    Subclasses set ``name``, ``xp`` and ``install`` and override only what differs.
    Everything outside ``wframe/backends/`` reaches arrays through ``xp`` and standard names.
    """

    name: str = "base"
    xp: Namespace = None
    #: pip command printed when the backend's package is missing.
    install: str = ""
    #: True where :meth:`value_and_grad` exists (autodiff); False means hand-written backprop.
    has_autodiff: bool = False
    #: True where :meth:`jit` traces the function once and compiles it (JAX): Python branches
    #: on array values are impossible inside, data-dependent choices go through :meth:`cond`,
    #: and a select is cheaper to avoid than to run. False: the function runs as Python.
    traced: bool = False
    #: True where arrays live in host memory and run eagerly (NumPy): reading a scalar as a
    #: Python float costs no transfer or device sync, so a step may branch on values there.
    on_host: bool = False

    @classmethod
    def is_available(cls) -> tuple[bool, str]:
        """Return ``(True, "")`` if the backend can run here, else ``(False, reason)``."""
        return True, ""

    @property
    def device(self) -> str:
        """Where arrays live, e.g. ``"cpu"`` or ``"cuda:0"``."""
        return "cpu"

    def asarray(self, a: Any, dtype: Any = None) -> Array:
        """Convert host data (or this backend's arrays) to an array of this backend.

        Args:
          a: a NumPy array, Python scalar or sequence, or an array of this backend.
          dtype: a dtype name such as ``"float32"`` or a dtype object; ``None`` keeps ``a``'s.
        """
        return self.xp.asarray(a, dtype=self.dtype(dtype) if dtype is not None else None)

    def dtype(self, name: Any) -> Any:
        """The namespace's dtype object for a name such as ``"float32"``."""
        return getattr(self.xp, np.dtype(name).name)

    def to_numpy(self, a: Array) -> np.ndarray:
        """Copy an array of this backend to a host NumPy array."""
        return np.asarray(a)

    def gather(self, a: Array, idx: Array, buffers: dict | None = None) -> Array:
        """Rows ``idx`` of ``a`` (``take`` along axis 0).

        ``buffers`` is a dict the caller owns, one per gathered array: a backend may write the
        rows into a buffer kept there instead of allocating (so the result is overwritten by
        the next call with the same dict and row count). A caller that passes ``buffers``
        passes rows in range (the runner's, from a permutation of the rows): the backend may
        skip the bounds check.
        """
        return array_namespace(a).take(a, idx, axis=0)

    def scatter_add(self, shape: tuple[int, ...], idx: Array, values: Array) -> Array:
        """Zeros of ``shape`` (``values``' dtype) with ``values[i]`` added onto row ``idx[i]``:
        the adjoint of :meth:`gather`, repeated indices add up (``numpy.add.at`` semantics).

        Args:
          shape: the result's shape ``(rows, *values.shape[1:])``.
          idx: 1-D integer row indices in ``[0, rows)`` (the caller checks the range).
          values: ``(len(idx), *shape[1:])``.
        """
        # Standard calls only: a one-hot matmul, in chunks of at most 2**22 one-hot entries.
        xp = array_namespace(values)
        n, rows = idx.shape[0], shape[0]
        flat = xp.reshape(values, (n, math.prod(shape[1:])))
        out = xp.zeros((rows, flat.shape[1]), dtype=values.dtype)
        step = max(1, (1 << 22) // max(rows, 1))
        ids = xp.arange(rows)[:, None]
        for start in range(0, n, step):
            stop = min(start + step, n)
            hit = xp.astype(ids == idx[None, start:stop], values.dtype)
            out = out + xp.matmul(hit, flat[start:stop, ...])
        return xp.reshape(out, tuple(shape))

    def concrete(self, x: Array) -> bool:
        """Whether ``x``'s values may be read on the host now (input checks that look at
        values run only then): not under a trace (JAX) nor a CUDA-graph capture (CuPy)."""
        return not self.traced

    def copy(self, tree: Any) -> Any:
        """A copy of every array in ``tree`` (new buffers: the caller owns them)."""
        return tree_map(lambda a: self.xp.asarray(a, copy=True), tree)

    def to_host(self, tree: Any) -> Any:
        """Every array of ``tree`` as a NumPy array (one transfer where the backend batches)."""
        return tree_map(self.to_numpy, tree)

    def host_threads(self, work: float) -> contextlib.AbstractContextManager:
        """The BLAS thread limit around a ``fit``/``evaluate``/``predict`` whose batches cost
        ``work`` (params x rows): none here; the numpy backend runs small work on one thread
        (:mod:`wframe.backends.threads`)."""
        return contextlib.nullcontext()

    def synchronize(self, x: Any = None) -> Any:
        """Block until the computation producing ``x`` (or all queued work) has finished."""
        return x

    def jit(
        self,
        fn: Callable,
        *,
        static_argnums: tuple[int, ...] = (),
        donate_argnums: tuple[int, ...] = (),
    ) -> Callable:
        """Compile ``fn`` where the backend can; the identity elsewhere."""
        return fn

    def value_and_grad(self, fn: Callable, *, has_aux: bool = False) -> Callable:
        """``fn``'s value and gradient w.r.t. its first argument, by autodiff.

        Only backends with ``has_autodiff``; the others use the layers' hand-written backprop.
        """
        raise TypeError(
            f"backend '{self.name}' has no autodiff; wframe uses the layers' hand-written backprop "
            "there (wframe.training.make_grad_fn)"
        )

    def scan(self, fn: Callable, init: Any, xs: Array) -> tuple[Any, Array]:
        """``lax.scan`` semantics over the leading axis of ``xs``: ``fn(carry, x) -> (carry, y)``.

        Returns the final carry and the ``y`` stacked along a new leading axis. Here a Python
        loop; JAX compiles it as one loop instead of unrolling it inside ``jit``.
        """
        carry, ys = init, []
        for t in range(xs.shape[0]):
            carry, y = fn(carry, xs[t, ...])
            ys.append(y)
        if not ys or ys[0] is None:
            return carry, None
        return carry, array_namespace(ys[0]).stack(ys, axis=0)

    def cond(self, pred: Any, true_fn: Callable, false_fn: Callable, *operands: Any) -> Any:
        """``true_fn(*operands)`` if ``pred`` else ``false_fn(*operands)``; ``lax.cond`` on JAX,
        where ``pred`` may be traced. Both branches must return the same structure."""
        return true_fn(*operands) if bool(pred) else false_fn(*operands)

    def erf(self, x: Array) -> Array:
        """The error function, elementwise, in ``x``'s dtype (the array API has none): here
        W. J. Cody's rational approximations on the arrays' namespace (:mod:`.special`), to
        ~1e-16 relative in float64 and float32 rounding in float32; JAX and CuPy use theirs."""
        return special.erf(x)

    # ------------------------------------------------------------ convolution and pooling
    # NHWC inputs ``x`` (N, H, W, C), kernels ``W`` (kh, kw, cin, cout); ``strides``, ``window``
    # and ``dilation`` are (h, w) int pairs; ``padding`` is explicit :data:`Pads` (the layers turn
    # "valid"/"same" into it). The generic versions below use only array-API calls on the arrays'
    # own namespace: im2col, ONE matmul and col2im, with Python loops over the kh*kw kernel
    # offsets only; pooling windows that tile the input need only a reshape. NumPy overrides
    # im2col (a strided view), the input gradient (a GEMM per tap) and the max-pool tie rule (in
    # place); CuPy col2im (one kernel); JAX ``conv2d`` (im2col or ``lax``, by platform) and
    # ``pool2d`` (the reshape or ``lax``), and derives the ``*_vjp`` functions by autodiff.

    def conv2d(self, x: Array, W: Array, strides, padding: Pads, dilation) -> Array:
        """2-D cross-correlation (no kernel flip, as Keras/PyTorch), NHWC -> (N, Ho, Wo, cout)."""
        return self.conv2d_vjp(x, W, strides, padding, dilation)[0]

    def conv2d_vjp(self, x: Array, W: Array, strides, padding: Pads, dilation):
        """``conv2d`` and its vector-Jacobian product.

        Returns ``(y, vjp)`` with ``vjp(dy, input_grad=True) -> (dx or None, dW)``.
        """
        xp = array_namespace(x)
        kh, kw, cin, cout = W.shape
        cols = self.im2col(x, (kh, kw), strides, padding, dilation)  # (N, Ho, Wo, kh*kw*cin)
        n, ho, wo, k = cols.shape
        cols2 = xp.reshape(cols, (n * ho * wo, k))
        W2 = xp.reshape(W, (k, cout))
        y = xp.reshape(xp.matmul(cols2, W2), (n, ho, wo, cout))

        def vjp(dy, input_grad=True):
            dy2 = xp.reshape(dy, (n * ho * wo, cout))
            dW = xp.reshape(xp.matmul(cols2.mT, dy2), tuple(W.shape))
            if not input_grad:
                return None, dW
            return self.conv2d_transpose(dy, W, tuple(x.shape), strides, padding, dilation), dW

        return y, vjp

    def conv2d_transpose(self, dy: Array, W: Array, in_shape, strides, padding: Pads, dilation):
        """The adjoint of :meth:`conv2d` in ``x``: maps (N, Ho, Wo, cout) to ``in_shape``.

        It is the input gradient of a convolution (and the forward of a transposed one).
        """
        xp = array_namespace(dy)
        kh, kw, cin, cout = W.shape
        n, ho, wo, _ = dy.shape
        dcols = xp.matmul(xp.reshape(dy, (n * ho * wo, cout)), xp.reshape(W, (-1, cout)).mT)
        dcols = xp.reshape(dcols, (n, ho, wo, kh * kw * cin))
        return self.col2im(dcols, in_shape, (kh, kw), strides, padding, dilation)

    def pool2d(self, x: Array, window, strides, padding: Pads, op: str) -> Array:
        """Max (``op="max"``) or average (``"avg"``) pooling over (kh, kw) windows, per channel.

        Padded positions never win a max and are excluded from an average (Keras/TF "same").
        """
        return self.pool2d_vjp(x, window, strides, padding, op)[0]

    def pool2d_vjp(self, x: Array, window, strides, padding: Pads, op: str):
        """``pool2d`` and its vector-Jacobian product: ``(y, vjp)`` with ``vjp(dy) -> dx``.

        Max pooling routes each window's gradient to its first maximum in row-major order (as
        PyTorch and ``jax.grad`` of ``lax.reduce_window``).
        """
        if op not in ("max", "avg"):
            raise ValueError(f"pool2d: op must be 'max' or 'avg', got {op!r}")
        if tuple(window) == tuple(strides) and not any(p for pair in padding for p in pair):
            return self._tiled_pool2d_vjp(x, tuple(window), op)
        return self._windowed_pool2d_vjp(x, window, strides, padding, op)

    def _windowed_pool2d_vjp(self, x: Array, window, strides, padding: Pads, op: str):
        """:meth:`pool2d_vjp` for any windows: im2col, a reduction, col2im for the gradient."""
        xp = array_namespace(x)
        n, h, w, c = x.shape
        kh, kw = window
        k = kh * kw
        geometry = (window, strides, padding, (1, 1))
        fill = -float("inf") if op == "max" else 0.0
        cols = self.im2col(x, *geometry, fill=fill)
        ho, wo = cols.shape[1], cols.shape[2]
        cols = xp.reshape(cols, (n, ho, wo, k, c))

        def scatter(dcols):
            return self.col2im(xp.reshape(dcols, (n, ho, wo, k * c)), tuple(x.shape), *geometry)

        if op == "max":
            first = xp.argmax(cols, axis=3)  # the first maximum of each window
            y = xp.max(cols, axis=3)
            hit = xp.arange(k)[:, None] == first[:, :, :, None, :]  # (N, Ho, Wo, k, C)
            return y, lambda dy: scatter(xp.astype(hit, dy.dtype) * dy[:, :, :, None, :])
        if any(p for pair in padding for p in pair):
            ones = xp.ones((1, h, w, 1), dtype=x.dtype)
            count = xp.sum(xp.reshape(self.im2col(ones, *geometry), (1, ho, wo, k, 1)), axis=3)
        else:
            count = float(k)
        y = xp.sum(cols, axis=3) / count

        def vjp(dy):
            share = (dy / count)[:, :, :, None, :]
            return scatter(xp.broadcast_to(share, (n, ho, wo, k, c)))

        return y, vjp

    def _tiled_pool2d_vjp(self, x: Array, window, op: str):
        """:meth:`pool2d_vjp` for windows that tile the input (stride = window, no padding): a
        reshape to (N, Ho, kh, Wo, kw, C) and a reduction over the window axes, with no im2col
        and no scatter (2x2 max on 128x24x24x64, forward and backward: 15 ms on NumPy, was 60).
        Rows and columns past the last whole window get no gradient."""
        xp = array_namespace(x)
        n, h, w, c = x.shape
        kh, kw = window
        ho, wo = h // kh, w // kw
        whole = x if (ho * kh, wo * kw) == (h, w) else x[:, : ho * kh, : wo * kw, :]
        tiles = xp.reshape(whole, (n, ho, kh, wo, kw, c))
        if op == "max":
            y = xp.max(tiles, axis=(2, 4))
        else:
            y = xp.sum(tiles, axis=(2, 4)) / (kh * kw)

        def vjp(dy):
            dy6 = dy[:, :, None, :, None, :]
            if op == "max":
                share = self._first_max_share(tiles == y[:, :, None, :, None, :], dy6)
            else:
                share = xp.broadcast_to(dy6 / (kh * kw), (n, ho, kh, wo, kw, c))
            dx = xp.reshape(share, (n, ho * kh, wo * kw, c))
            if w > wo * kw:  # zeros for the rows and columns no window covers
                dx = xp.concat([dx, xp.zeros((n, ho * kh, w - wo * kw, c), dtype=dx.dtype)], axis=2)
            if h > ho * kh:
                dx = xp.concat([dx, xp.zeros((n, h - ho * kh, w, c), dtype=dx.dtype)], axis=1)
            return dx

        return y, vjp

    def _first_max_share(self, equal: Array, dy6: Array) -> Array:
        """``dy6`` (N, Ho, 1, Wo, 1, C) routed to the first True of each window of ``equal``
        (N, Ho, kh, Wo, kw, C; the entries equal to their window's max) in row-major order;
        zeros elsewhere: an entry is kept when no earlier entry of its window was."""
        xp = array_namespace(equal)
        kh, kw = equal.shape[2], equal.shape[4]
        rows, seen = [], None
        for i in range(kh):
            row = []
            for j in range(kw):
                e = equal[:, :, i, :, j, :]
                row.append(e if seen is None else e & ~seen)
                seen = e if seen is None else seen | e
            rows.append(xp.stack(row, axis=3))  # (N, Ho, Wo, kw, C)
        return xp.astype(xp.stack(rows, axis=2), dy6.dtype) * dy6

    def im2col(self, x: Array, window, strides, padding: Pads, dilation, *, fill=0.0) -> Array:
        """The (dilated) windows of ``x``: (N, Ho, Wo, kh*kw*C), ordered (kh, kw, C) like a
        (kh, kw, cin, cout) kernel reshaped to (kh*kw*cin, cout). Padding holds ``fill``."""
        xp = array_namespace(x)
        n, h, w, c = x.shape
        geometry = (window, strides, dilation)
        (kh, kw), (sh, sw), (dh, dw) = geometry
        (top, bottom), (left, right) = padding
        hp, wp = h + top + bottom, w + left + right
        ho, wo = (hp - (kh - 1) * dh - 1) // sh + 1, (wp - (kw - 1) * dw - 1) // sw + 1
        if hp != h or wp != w:
            padded = xp.full((n, hp, wp, c), fill, dtype=x.dtype)
            padded[:, top : top + h, left : left + w, :] = x
            x = padded
        patches = [x[:, rows, columns, :] for _, _, rows, columns in taps(ho, wo, *geometry)]
        return xp.reshape(xp.stack(patches, axis=3), (n, ho, wo, kh * kw * c))

    def col2im(self, cols: Array, in_shape, window, strides, padding: Pads, dilation) -> Array:
        """The adjoint of :meth:`im2col`: sums every window entry back onto the input position
        it was read from (overlaps add up) and drops the padding; returns ``in_shape``."""
        xp = array_namespace(cols)
        n, h, w, c = in_shape
        kh, kw = window
        (top, bottom), (left, right) = padding
        ho, wo = cols.shape[1], cols.shape[2]
        per_tap = xp.reshape(cols, (n, ho, wo, kh, kw, c))
        out = xp.zeros((n, h + top + bottom, w + left + right, c), dtype=cols.dtype)
        for i, j, rows, columns in taps(ho, wo, window, strides, dilation):
            out[:, rows, columns, :] += per_tap[:, :, :, i, j, :]
        return out[:, top : top + h, left : left + w, :]

    # ------------------------------------------------------------ sparse products
    def sparse_matmul(self, x: Array, data: Array, indices: Array, indptr: Array, shape):
        """``x @ W`` for a sparse kernel ``W`` (in, out) held as the CSR arrays of ``W.T``.

        Row ``r`` of ``W.T`` (output ``r``) holds ``data[indptr[r]:indptr[r + 1]]`` at the
        inputs ``indices[indptr[r]:indptr[r + 1]]`` (int32); ``shape`` is ``(out, in)`` as
        Python ints; ``x`` is (rows, in) and the result (rows, out). Here with standard calls
        only (a gather, a product, a scatter-add: exact, not fast); NumPy runs SciPy's CSR
        product, CuPy cuSPARSE's, JAX ``jax.experimental.sparse``'s.
        """
        xp = array_namespace(x)
        nnz = data.shape[0]
        # The output row of each stored entry: how many rows end at or before it.
        rows = xp.searchsorted(indptr[1:], xp.arange(nnz, dtype=indptr.dtype), side="right")
        products = xp.take(x, indices, axis=1) * data  # (rows of x, nnz)
        return self.scatter_add((shape[0], x.shape[0]), rows, products.mT).mT

    def fusable(self, groups, counts=()) -> bool:
        """Whether this backend's in-place optimizer kernels (``adam_inplace``, ``sgd_inplace``,
        CuPy's ``rmsprop_inplace``; what :func:`wframe.optimizers.fused` runs for the fused
        updates optimizers declare) may update these arrays; only NumPy and CuPy have them."""
        return False

    def sgd_tree_inplace(self, params, grads, lr) -> bool:
        """``p -= lr * g`` in place over a model's params (``{layer: {name: array}}``) and
        gradients of the same keys, where this backend has the kernel and every pair fits it;
        ``False``, having written nothing, otherwise (the default)."""
        return False

    def __repr__(self) -> str:
        return f"<wframe backend {self.name!r} on {self.device}>"


def taps(ho: int, wo: int, window, strides, dilation):
    """``(i, j, rows, cols)`` per kernel offset: the slices of the padded input that tap (i, j)
    reads for the ho x wo output positions (one strided slice per axis, no overlaps)."""
    (kh, kw), (sh, sw), (dh, dw) = window, strides, dilation
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + (ho - 1) * sh + 1, sh)
            yield i, j, rows, slice(j * dw, j * dw + (wo - 1) * sw + 1, sw)
