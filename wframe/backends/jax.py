"""JAX backend: ``jax.jit``, ``jax.value_and_grad``, ``lax.scan`` and XLA convolutions."""

from __future__ import annotations

import importlib.util

import numpy as np

from wframe.backends.base import Backend


class JaxBackend(Backend):
    name = "jax"
    install = "pip install 'wframe[jax]'"
    has_autodiff = True

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

    def synchronize(self, x=None):
        return self._jax.block_until_ready(x) if x is not None else x

    def jit(self, fn, *, static_argnums=(), donate_argnums=()):
        return self._jax.jit(fn, static_argnums=static_argnums, donate_argnums=donate_argnums)

    def value_and_grad(self, fn, *, has_aux=False):
        return self._jax.value_and_grad(fn, has_aux=has_aux)

    def scan(self, fn, init, xs):
        return self._jax.lax.scan(fn, init, xs)

    def cond(self, pred, true_fn, false_fn, *operands):
        # Both branches, then an elementwise select: XLA fuses the select into the producers,
        # where lax.cond would keep the branches apart and copy whatever they return.
        jnp, tree = self.xp, self._jax.tree
        return tree.map(lambda a, b: jnp.where(pred, a, b), true_fn(*operands), false_fn(*operands))

    # Convolution and pooling through XLA; the VJPs (used only by hand-written backprop callers,
    # fit differentiates the forward) come from autodiff.
    def conv2d(self, x, W, strides, padding, dilation):
        return self._jax.lax.conv_general_dilated(
            x,
            W,
            window_strides=tuple(strides),
            padding=tuple(tuple(p) for p in padding),
            rhs_dilation=tuple(dilation),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )

    def conv2d_vjp(self, x, W, strides, padding, dilation):
        def conv(a, k):
            return self.conv2d(a, k, strides, padding, dilation)

        y, pullback = self._jax.vjp(conv, x, W)

        def vjp(dy, input_grad=True):
            dx, dW = pullback(dy)
            return (dx if input_grad else None), dW

        return y, vjp

    def pool2d(self, x, window, strides, padding, op):
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

    def pool2d_vjp(self, x, window, strides, padding, op):
        y, pullback = self._jax.vjp(lambda a: self.pool2d(a, window, strides, padding, op), x)
        return y, lambda dy: pullback(dy)[0]
