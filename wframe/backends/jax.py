"""JAX backend: ``jax.jit``, ``jax.value_and_grad`` and optax's own optimizers."""

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
        for mod in ("jax", "optax"):
            if importlib.util.find_spec(mod) is None:
                return False, f"{mod} is not installed; install it with: {cls.install}"
        return True, ""

    def __init__(self):
        import jax
        import jax.numpy as jnp

        self._jax = jax
        self.xp = jnp

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

    def synchronize(self, x=None):
        return self._jax.block_until_ready(x) if x is not None else x

    def jit(self, fn, *, static_argnums=(), donate_argnums=()):
        return self._jax.jit(fn, static_argnums=static_argnums, donate_argnums=donate_argnums)

    def value_and_grad(self, fn, *, has_aux=False):
        return self._jax.value_and_grad(fn, has_aux=has_aux)

    def scan(self, fn, init, xs):
        return self._jax.lax.scan(fn, init, xs)

    def optax(self, name, *args, **kwargs):
        import optax

        return getattr(optax, name)(*args, **kwargs)
