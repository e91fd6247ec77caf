"""CuPy as wframe's array namespace: ``array_api_compat.cupy`` with a capture-safe ``matmul`` and
``asarray``.

Outside a CUDA-graph capture both are the usual functions. During one (see
:mod:`wframe.backends.cupy_graph`) CuPy refuses what a train step needs: every cuBLAS call
(``cupy.matmul``'s ``cublasSetStream`` raises ``NotImplementedError`` while the stream captures)
and every host-to-device copy (``cupy.asarray([0, 1])``). So while capturing, ``matmul`` calls
cuBLAS's GEMM itself (ctypes, on a handle of ours with its own workspace, bound to the capturing
stream) and ``asarray`` of host data records a copy from a page-locked buffer that the graph
keeps: replays copy the same constants, as each eager call would upload them.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
import types

import array_api_compat.cupy as _compat
import cupy
import numpy

from wframe.backends.cupy_graph import capturing, keep_alive, marked_capturing

xp = types.ModuleType("cupy", __doc__)
xp.__dict__.update({k: v for k, v in vars(_compat).items() if not k.startswith("__")})
_matmul, _asarray = _compat.matmul, _compat.asarray

#: Bytes of the cuBLAS workspace of the capture handle (NVIDIA's advice for Hopper).
WORKSPACE = 32 << 20


class NotCapturable(RuntimeError):
    """This operation cannot be recorded into a CUDA graph; the step runs eagerly instead."""


@contextlib.contextmanager
def capture_mode(keep: list):
    """Mark this thread as capturing; host buffers the graph must keep go into ``keep``."""
    if capturing():
        raise NotCapturable("a CUDA graph capture is already running in this thread")
    try:  # the handle and its workspace before the capture: creating them would break it
        _blas()
    except NotCapturable:  # then a matmul in the step refuses the capture, nothing else does
        pass
    with marked_capturing(keep):
        yield


def asarray(obj, /, *, dtype=None, device=None, copy=None):
    if not capturing() or isinstance(obj, cupy.ndarray) or numpy.ndim(obj) == 0:
        # Scalars become a fill kernel, which captures; arrays of ours need no transfer.
        return _asarray(obj, dtype=dtype, device=device, copy=copy)
    host = numpy.ascontiguousarray(numpy.asarray(obj, dtype=dtype))
    out = cupy.empty(host.shape, dtype=host.dtype)
    if host.nbytes:
        # Its own page-locked allocation (not the pinned pool's, which would hand it out again
        # once the graph drops it): the graph's memcpy node reads it at every replay.
        pinned = cupy.cuda.pinned_memory.PinnedMemory(host.nbytes)
        ctypes.memmove(pinned.ptr, host.ctypes.data, host.nbytes)
        keep_alive(pinned)
        stream = cupy.cuda.get_current_stream()
        cupy.cuda.runtime.memcpyAsync(
            out.data.ptr,
            pinned.ptr,
            host.nbytes,
            cupy.cuda.runtime.memcpyHostToDevice,
            stream.ptr,
        )
    return out


def matmul(x1, x2, /):
    if not capturing():
        return _matmul(x1, x2)
    if x1.dtype != x2.dtype or x1.dtype.name not in ("float32", "float64"):
        raise NotCapturable(f"matmul of {x1.dtype} and {x2.dtype} during capture")
    if x1.ndim < 2 or x2.ndim != 2:
        raise NotCapturable(f"matmul of shapes {x1.shape} @ {x2.shape} during capture")
    if x1.ndim == 2:
        return gemm(x1, x2)
    lead = x1.shape[:-1]  # (..., m, k) @ (k, n): one GEMM over the rows of all batches
    flat = cupy.ascontiguousarray(x1).reshape(-1, x1.shape[-1])
    return gemm(flat, x2).reshape(*lead, x2.shape[1])


xp.asarray, xp.matmul = asarray, matmul


# ------------------------------------------------------------------------------ cuBLAS
_OP_N, _OP_T = 0, 1
_blas_lock = threading.Lock()
_handles: dict[int, tuple] = {}
_lib = None


def _library():
    """libcublas as CuPy loaded it (its extension links it), else by name."""
    global _lib
    if _lib is not None:
        return _lib
    with contextlib.suppress(Exception):  # CuPy's handle: libcublas is loaded, maps name it
        cupy.cuda.device.get_cublas_handle()
    names = []
    try:
        with open("/proc/self/maps") as maps:
            names = [ln.split()[-1] for ln in maps if "libcublas.so" in ln and "Lt" not in ln]
    except OSError:
        pass
    for name in [*names[:1], "libcublas.so.13", "libcublas.so.12", "libcublas.so"]:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        raise NotCapturable("libcublas cannot be loaded with ctypes")
    vp, i = ctypes.c_void_p, ctypes.c_int
    lib.cublasCreate_v2.argtypes = [ctypes.POINTER(vp)]
    lib.cublasSetStream_v2.argtypes = [vp, vp]
    lib.cublasSetWorkspace_v2.argtypes = [vp, vp, ctypes.c_size_t]
    for name, scalar in (("cublasSgemm_v2", ctypes.c_float), ("cublasDgemm_v2", ctypes.c_double)):
        ptr = ctypes.POINTER(scalar)
        getattr(lib, name).argtypes = [vp, i, i, i, i, i, ptr, vp, i, vp, i, ptr, vp, i]
    for name in (
        "cublasCreate_v2",
        "cublasSetStream_v2",
        "cublasSetWorkspace_v2",
        "cublasSgemm_v2",
        "cublasDgemm_v2",
    ):
        getattr(lib, name).restype = ctypes.c_int
    _lib = lib
    return lib


def _check(status: int, what: str) -> None:
    if status != 0:
        raise NotCapturable(f"{what} failed with cuBLAS status {status}")


def _blas() -> tuple:
    """``(lib, handle, workspace)`` for the current device, made on first use."""
    device = cupy.cuda.Device().id
    found = _handles.get(device)
    if found is None:
        with _blas_lock:
            found = _handles.get(device)
            if found is None:
                lib, handle = _library(), ctypes.c_void_p()
                _check(lib.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate")
                # Our own workspace: cuBLAS would otherwise allocate one inside the capture.
                workspace = cupy.empty(WORKSPACE, dtype=cupy.uint8)
                _check(
                    lib.cublasSetWorkspace_v2(handle, workspace.data.ptr, WORKSPACE),
                    "cublasSetWorkspace",
                )
                found = _handles[device] = (lib, handle, workspace)
    return found


def _layout(a):
    """``(op, ld, a)``: how a row-major 2-D array reads as cuBLAS's column-major operand."""
    if a.flags.c_contiguous:  # column-major, it is a.T with leading dimension a.shape[1]
        return _OP_N, max(1, a.shape[1]), a
    if a.flags.f_contiguous:  # a itself, column-major: transpose it in the call
        return _OP_T, max(1, a.shape[0]), a
    a = cupy.ascontiguousarray(a)
    return _OP_N, max(1, a.shape[1]), a


def gemm(a, b):
    """``a @ b`` for 2-D float32/float64 arrays by cuBLAS on the current stream (capturable)."""
    (m, k), (k2, n) = a.shape, b.shape
    if k != k2:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align")
    out = cupy.empty((m, n), dtype=a.dtype)
    if m == 0 or n == 0:
        return out
    if k == 0:
        out.fill(0)
        return out
    lib, handle, _ = _blas()
    op_a, lda, a = _layout(a)
    op_b, ldb, b = _layout(b)
    _check(lib.cublasSetStream_v2(handle, cupy.cuda.get_current_stream().ptr), "cublasSetStream")
    double = a.dtype == cupy.float64
    scalar = ctypes.c_double if double else ctypes.c_float
    one, zero = scalar(1), scalar(0)
    fn = lib.cublasDgemm_v2 if double else lib.cublasSgemm_v2
    # Row-major C = A B is column-major C^T = B^T A^T: (n x k) times (k x m), ldc = n.
    status = fn(
        handle,
        op_b,
        op_a,
        n,
        m,
        k,
        ctypes.byref(one),
        b.data.ptr,
        ldb,
        a.data.ptr,
        lda,
        ctypes.byref(zero),
        out.data.ptr,
        n,
    )
    _check(status, "cublas gemm")
    return out
