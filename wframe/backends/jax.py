"""JAX backend: ``jax.jit``, ``jax.value_and_grad``, ``lax.scan`` and XLA convolutions."""

from __future__ import annotations

import importlib
import importlib.util

import numpy as np

from wframe.backends import jit_cache
from wframe.backends.base import Backend

#: How :meth:`JaxBackend.conv2d` convolves, by platform (``jax.default_backend()``; others
#: ``"lax"``): ``"im2col"`` is the kh*kw shifted slices side by side and one GEMM, which XLA
#: differentiates into slices, pads and two more GEMMs; ``"lax"`` is
#: ``lax.conv_general_dilated`` (cuDNN on GPU). Measured on a 2-core x86 CPU (jaxlib 0.10,
#: value_and_grad of one conv): im2col was 1.5-3.5x faster on stride-1 3x3 and 1x1 convolutions,
#: about even on stride-2 3x3 and 7x7, 1.4x slower on 5x5 with 16 input channels; inside
#: ``lax.scan`` (fit's steps_per_execution) XLA:CPU's own convolutions ran 3-40x slower per step
#: than outside it, im2col no slower. The bench's cnn train step: 0.6x the plain ``lax.conv`` one.
CONV2D = {"cpu": "im2col"}


class JaxBackend(Backend):
    name = "jax"
    install = "pip install 'wframe[jax]'"
    has_autodiff = True
    traced = True

    @classmethod
    def is_available(cls):
        if importlib.util.find_spec("jax") is None:
            return False, f"jax is not installed; install it with: {cls.install}"
        return True, ""

    def __init__(self):
        import jax
        import jax.numpy as jnp

        self._jax = jax
        self.xp = jnp
        self._copy = None
        self._sparse = None  # jax.experimental.sparse, imported on first use
        #: The persistent compilation cache's folder (:mod:`wframe.backends.jit_cache`).
        self.cache_dir = jit_cache.enable(jax)

    @property
    def device(self):
        return str(self._jax.devices()[0])

    def asarray(self, a, dtype=None):
        if dtype is not None and np.dtype(dtype) == np.float64 and not self._x64():
            raise ValueError(
                "dtype float64 on the jax backend needs 64-bit mode, which is off; enable it "
                "before creating arrays with jax.config.update('jax_enable_x64', True) "
                "or JAX_ENABLE_X64=1"
            )
        if type(a) is np.ndarray:
            # Host data in one transfer, with jnp.asarray's dtype rules, where jnp.asarray
            # compiles and runs a program per shape and dtype ("stage"). Never a view of the
            # caller's array: the CPU client aliases aligned host buffers (jnp.asarray's too,
            # and device_put's even with may_alias=False), so a later write to the caller's
            # array would reach the device array. A private copy (or the converted one) may be.
            host = a if dtype is None else a.astype(np.dtype(self.dtype(dtype)), copy=False)
            return self._jax.device_put(a.copy() if host is a else host)
        return super().asarray(a, dtype)

    def _x64(self):
        return bool(self._jax.config.jax_enable_x64)

    def copy(self, tree):
        # One compiled call for the whole tree instead of an eager copy per leaf.
        if self._copy is None:
            self._copy = self._jax.jit(lambda t: self._jax.tree.map(lambda a: a.copy(), t))
        return self._copy(tree)

    def to_host(self, tree):
        return self._jax.device_get(tree)

    def scatter_add(self, shape, idx, values):
        # Indices past the end are dropped (XLA's scatter), as jnp.take fills them on the way in.
        return self.xp.zeros(shape, dtype=values.dtype).at[idx].add(values)

    def synchronize(self, x=None):
        return self._jax.block_until_ready(x) if x is not None else x

    def jit(self, fn, *, static_argnums=(), donate_argnums=()):
        return self._jax.jit(fn, static_argnums=static_argnums, donate_argnums=donate_argnums)

    def value_and_grad(self, fn, *, has_aux=False):
        return self._jax.value_and_grad(fn, has_aux=has_aux)

    def scan(self, fn, init, xs):
        return self._jax.lax.scan(fn, init, xs)

    def erf(self, x):
        return self._jax.lax.erf(x)

    def sparse_matmul(self, x, data, indices, indptr, shape):
        # jax.experimental.sparse's BCSR product, inside jit like any other op; on CPU it
        # gathers and segment-sums, so sparsify measures it against the dense product.
        if self._sparse is None:
            self._sparse = importlib.import_module("jax.experimental.sparse")
        matrix = self._sparse.BCSR((data, indices, indptr), shape=tuple(shape))
        return (matrix @ x.T).T

    def cond(self, pred, true_fn, false_fn, *operands):
        # Both branches, then an elementwise select: XLA fuses the select into the producers,
        # where lax.cond would keep the branches apart and copy whatever they return.
        jnp, tree = self.xp, self._jax.tree
        return tree.map(lambda a, b: jnp.where(pred, a, b), true_fn(*operands), false_fn(*operands))

    # Convolution and pooling through XLA; the VJPs (used only by hand-written backprop callers,
    # fit differentiates the forward) come from autodiff.
    def conv2d(self, x, W, strides, padding, dilation):
        if CONV2D.get(self._jax.default_backend(), "lax") == "im2col":
            kh, kw, cin, cout = W.shape
            cols = self.im2col(x, (kh, kw), strides, padding, dilation)
            return self.xp.matmul(cols, self.xp.reshape(W, (kh * kw * cin, cout)))
        return self._jax.lax.conv_general_dilated(
            x,
            W,
            window_strides=tuple(strides),
            padding=tuple(tuple(p) for p in padding),
            rhs_dilation=tuple(dilation),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )

    def im2col(self, x, window, strides, padding, dilation, *, fill=0.0):
        # The generic kh*kw strided slices; the padding by jnp.pad (JAX arrays are immutable).
        if any(p for pair in padding for p in pair):
            x = self.xp.pad(x, ((0, 0), *padding, (0, 0)), constant_values=fill)
        return super().im2col(x, window, strides, ((0, 0), (0, 0)), dilation)

    def conv2d_vjp(self, x, W, strides, padding, dilation):
        def conv(a, k):
            return self.conv2d(a, k, strides, padding, dilation)

        y, pullback = self._jax.vjp(conv, x, W)

        def vjp(dy, input_grad=True):
            dx, dW = pullback(dy)
            return (dx if input_grad else None), dW

        return y, vjp

    def pool2d(self, x, window, strides, padding, op):
        if op in ("max", "avg") and _tiles(window, strides, padding):
            # The generic reshape (the max with its first-maximum gradient): fwd + bwd of
            # 128x24x24x64, 2x2 on CPU: 10-30 ms, where reduce_window's took 70-80.
            if op == "avg":
                return self._tiled_pool2d_vjp(x, tuple(window), op)[0]
            return self._tiled_max_pool(tuple(window))(x)
        lax = self._jax.lax
        dims, steps = (1, *window, 1), (1, *strides, 1)
        pads = ((0, 0), *(tuple(p) for p in padding), (0, 0))
        if op == "max":
            return lax.reduce_window(x, -np.inf, lax.max, dims, steps, pads)
        if op != "avg":
            raise ValueError(f"pool2d: op must be 'max' or 'avg', got {op!r}")
        total = lax.reduce_window(x, 0.0, lax.add, dims, steps, pads)
        if not any(p for pair in padding for p in pair):
            return total / (window[0] * window[1])
        ones = self.xp.ones((1, *x.shape[1:3], 1), dtype=x.dtype)
        return total / lax.reduce_window(ones, 0.0, lax.add, dims, steps, pads)

    def _tiled_max_pool(self, window):
        # jnp.max's gradient splits ties evenly; lax.reduce_window's, PyTorch's and the
        # hand-written one go to the first maximum: the generic backward, as a custom VJP.
        def pool(x):
            return self._tiled_pool2d_vjp(x, window, "max")[0]

        def backward(x, dy):
            return (self._tiled_pool2d_vjp(x, window, "max")[1](dy),)

        pool = self._jax.custom_vjp(pool)
        pool.defvjp(lambda x: (pool(x), x), backward)
        return pool

    def pool2d_vjp(self, x, window, strides, padding, op):
        y, pullback = self._jax.vjp(lambda a: self.pool2d(a, window, strides, padding, op), x)
        return y, lambda dy: pullback(dy)[0]


def _tiles(window, strides, padding) -> bool:
    """Whether pooling windows tile the input: stride = window, no padding."""
    return tuple(window) == tuple(strides) and not any(p for pair in padding for p in pair)
