"""The backend contract: what every array backend provides to the rest of wframe."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from wframe.types import Array, Namespace


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
            "there (Sequential.value_and_grad)"
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
        return carry, self.xp.stack(ys, axis=0)

    def optax(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """The optax transformation ``name(*args, **kwargs)`` where optax runs, else ``None``."""
        return None

    def __repr__(self) -> str:
        return f"<wframe backend {self.name!r} on {self.device}>"
