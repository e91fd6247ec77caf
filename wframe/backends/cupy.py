"""CuPy backend: arrays on an NVIDIA GPU, the same hand-written backprop as NumPy.

What differs from the generic code: fused kernels for the hot elementwise chains
(:mod:`cupy_ops`, the sources in :mod:`cupy_kernels`), ``jit`` as CUDA-graph capture and replay
(:mod:`cupy_graph`), a ``cond`` that never reads the predicate on the host (the in-place
optimizer kernels read it on the device), and uploads staged through pinned host memory.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading

import numpy as np

from wframe.backends import cupy_host as host
from wframe.backends import cupy_kernels, fusion
from wframe.backends import cupy_ops as ops
from wframe.backends.base import Backend
from wframe.backends.cupy_graph import CupyRuntime, GraphJit, capturing
from wframe.backends.namespace import register_namespace

_XP_ERROR: ImportError | None = None
try:  # the namespace imports CuPy itself; without CuPy, is_available() says how to install it
    from wframe.backends import cupy_xp
except ImportError as e:
    cupy_xp, _XP_ERROR = None, e

#: The wframe activations that have a fused kernel -> the kernel's name, known by name:
#: wframe.activations sits above the backends, so its functions are recognised by module and
#: name, not imported. The "gelu" kernel is the tanh form, wframe's ``gelu_approximate``; the
#: exact (erf) ``gelu`` has none and runs the generic code. All but linear.
FUSED_ACTIVATIONS = {
    ("gelu_approximate" if k == "gelu" else k): k for k in cupy_kernels.ACTIVATIONS[1:]
}


class CupyBackend(Backend):
    name = "cupy"
    install = "pip install 'wframe[cuda12]' (or 'wframe[cuda13]' for CUDA 13)"
    #: The in-place optimizer kernels take hyper-parameters as 0-d device arrays (see
    #: wframe.optimizers.fused): injected ones and schedules are never read on the host.
    device_scalars = True

    @classmethod
    def is_available(cls):
        if importlib.util.find_spec("cupy") is None:
            return False, f"cupy is not installed; install it with: {cls.install}"
        try:
            import cupy

            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # CUDA driver/runtime errors have no common base class
            return False, f"cupy cannot reach a CUDA device: {type(e).__name__}: {e}"
        if count == 0:
            return False, "cupy found no CUDA device"
        if cupy_xp is None:
            return False, f"wframe's CuPy namespace cannot be imported: {_XP_ERROR}"
        return True, ""

    def __init__(self):
        import cupy
        import cupyx.scipy.special

        self._cupy = cupy
        self._special = cupyx.scipy.special
        self.xp = cupy_xp.xp
        register_namespace(cupy.ndarray, self.xp)  # array_namespace(x) of a CuPy array is ours
        fusion.FUSED[self.xp] = self
        #: ``WFRAME_CUPY_GRAPHS=0`` makes ``jit`` the identity (every step eager).
        self.graphs = os.environ.get("WFRAME_CUPY_GRAPHS", "1") != "0"
        self._local = threading.local()  # the predicate stack of cond, per thread
        self._true = {}  # device id -> 0-d True, made outside any capture
        self._predicate()
        self._stager = host.Stager(cupy)
        self._runtime = None

    @property
    def device(self):
        return f"cuda:{self._cupy.cuda.Device().id}"

    def asarray(self, a, dtype=None):
        if type(a) is not np.ndarray or a.nbytes < host.STAGE_BYTES or a.dtype.kind not in "biuf":
            return super().asarray(a, dtype)
        return self._stager.upload(a, np.dtype(dtype) if dtype is not None else a.dtype)

    def to_numpy(self, a):
        return self._cupy.asnumpy(a)

    def to_host(self, tree):
        return host.to_host(self._cupy, tree)

    def scatter_add(self, shape, idx, values):
        out = self._cupy.zeros(shape, dtype=values.dtype)
        self._cupy.add.at(out, idx, values)  # atomic adds; cupyx.scatter_add is deprecated
        return out

    def concrete(self, x):
        return not capturing()  # a host read would abandon the CUDA-graph capture

    def synchronize(self, x=None):
        self._cupy.cuda.get_current_stream().synchronize()
        return x

    def jit(self, fn, *, static_argnums=(), donate_argnums=()):
        if not self.graphs:
            return fn
        if self._runtime is None:  # one capture stream per device for every compiled function
            self._runtime = CupyRuntime(self._cupy, cupy_xp.capture_mode)
        return GraphJit(fn, self._runtime, static_argnums, donate_argnums)

    # ---------------------------------------------------------------- branching on the device
    def cond(self, pred, true_fn, false_fn, *operands):
        # Both branches, then an elementwise select, as on JAX; the in-place kernels that a
        # branch runs (the fused optimizers) are predicated on the device, so a branch not
        # taken writes nothing. No host read: a step stays capturable and never stalls.
        cp = self._cupy
        if not isinstance(pred, cp.ndarray):
            return super().cond(pred, true_fn, false_fn, *operands)
        pred = cp.reshape(pred, ()).astype(bool, copy=False)
        stack = self._stack()
        outer = stack[-1] if stack else None
        results = []
        for branch, on in ((true_fn, pred), (false_fn, ~pred)):
            stack.append(on if outer is None else outer & on)
            try:
                results.append(branch(*operands))
            finally:
                stack.pop()
        return ops.select(cp, pred, *results)

    def _stack(self) -> list:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def _predicate(self):
        """The predicate in-place kernels obey: the innermost ``cond`` branch's, else True."""
        stack = self._stack()
        if stack:
            return stack[-1]
        device = self._cupy.cuda.Device().id
        found = self._true.get(device)
        if found is None:
            if capturing():  # made now, it would hold its value only once the graph runs
                raise RuntimeError(f"first use of device {device} inside a CUDA-graph capture")
            found = self._true[device] = self._cupy.ones((), dtype=bool)
        return found

    # ------------------------------------------------------------------------ fused kernels
    # The hooks of activations.py, layers/core.py, random.py and losses.py (found through
    # wframe.backends.fusion) and of wframe.optimizers.fused; None means "use the generic code".
    def bias_activation(self, z, b, activation):
        name = _activation_name(activation)
        if name is None:  # linear (z + b is one kernel already) or a user's callable
            return None
        # leaky_relu's slope is its default argument: the fused kernel takes it as a number.
        slope = activation.__defaults__[0] if name == "leaky_relu" else 0.0
        return ops.bias_activation(self._cupy, z, b, name, slope)

    def dropout(self, x, key, threshold, scale):
        return ops.dropout(self._cupy, x, key, threshold, scale)

    def random_bits(self, key, shape):
        return ops.random_bits(self._cupy, key, shape)

    def softmax_cross_entropy(self, logits, labels):
        return ops.softmax_cross_entropy(self._cupy, logits, labels)

    def sparse_matmul(self, x, data, indices, indptr, shape):
        # cuSPARSE's CSR product (cupyx.scipy.sparse); a CUDA-graph capture it cannot join
        # falls back to running eagerly (cupy_graph).
        sparse = importlib.import_module("cupyx.scipy.sparse")
        matrix = sparse.csr_matrix((data, indices, indptr), shape=tuple(shape))
        return (matrix @ x.T).T

    def erf(self, x):
        y = self._special.erf(x)  # half precision may come back as float32
        return y if y.dtype == x.dtype else y.astype(x.dtype)

    def col2im(self, cols, in_shape, window, strides, padding, dilation):
        out = ops.col2im(self._cupy, cols, in_shape, window, strides, padding, dilation)
        if out is None:
            return super().col2im(cols, in_shape, window, strides, padding, dilation)
        return out

    def fusable(self, groups, counts=()) -> bool:
        return ops.fusable(self._cupy, groups, counts)

    def increment_inplace(self, count):
        """Add 1 to the 0-d int32 device ``count`` (saturating, predicated) and return it: the
        Adam kernels read the new step number on the device, so nothing waits for the host."""
        ops.increment(self._cupy, count, self._predicate())
        return count

    def adam_inplace(self, groups, count, lr, b1, b2, eps, eps_root=0.0, weight_decay=0.0):
        ops.adam(
            self._cupy, groups, count, self._predicate(), lr, b1, b2, eps, eps_root, weight_decay
        )

    def sgd_inplace(self, groups, lr, momentum=None, nesterov=False):
        ops.sgd(self._cupy, groups, self._predicate(), lr, momentum, nesterov)

    def rmsprop_inplace(self, groups, lr, decay, eps, eps_in_sqrt, momentum=None, nesterov=False):
        """RMSProp (not centered, no bias correction) in place on each ``(p, g, nu[, trace])``."""
        ops.rmsprop(
            self._cupy, groups, self._predicate(), lr, decay, eps, eps_in_sqrt, momentum, nesterov
        )


def _activation_name(fn) -> str | None:
    """The fused kernel's name of ``fn`` if it is a wframe activation that has one, else
    ``None``."""
    if getattr(fn, "__module__", None) != "wframe.activations":
        return None
    name = getattr(fn, "__name__", None)
    return FUSED_ACTIVATIONS.get(name) if isinstance(name, str) else None
