"""The CuPy backend's CUDA sources compiled for the host, for tests/test_cupy.py.

g++ compiles ``cupy_kernels.render(dtype)`` behind a few macros standing in for CUDA's
(``__global__``, ``__shared__``, ``blockIdx`` ...); a kernel then runs one thread per block, with
``blockIdx.x`` going over the grid, so the grid-stride loops and the row kernels cover every
element as on a GPU. With ``-ffp-contract=off`` the IEEE operations round as CUDA's do under
``--fmad=false``; only libm (``exp``, ``tanh``, ``pow``) differs from CUDA's.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import types

import numpy as np

from wframe.backends import cupy_kernels

ACTS = ["relu", "sigmoid", "tanh", "gelu", "leaky_relu"]

SHIM = r"""
#include <cmath>
#include <cstring>
using namespace std;
struct wf_dim3 { unsigned x, y, z; };
static wf_dim3 blockIdx = {0, 0, 0}, threadIdx = {0, 0, 0}, blockDim = {1, 1, 1},
    gridDim = {1, 1, 1};
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
static inline void __syncthreads() {}
static inline int __syncthreads_or(int p) { return p; }
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline double __longlong_as_double(long long i) { double d; memcpy(&d, &i, 8); return d; }
extern "C" void wf_grid(unsigned block, unsigned grid) { blockIdx.x = block; gridDim.x = grid; }
"""
_CTYPES = {
    np.int64: ctypes.c_longlong,
    np.int32: ctypes.c_int,
    np.uint32: ctypes.c_uint,
    np.float32: ctypes.c_float,
    np.float64: ctypes.c_double,
}
_PARAM_TYPES = {"long long": np.int64, "int": np.int32, "unsigned int": np.uint32}


def signatures() -> dict[str, list]:
    """Each kernel's parameters as the NumPy scalar type CuPy must be given (``"T"`` for the
    element type, ``ndarray`` for pointers): CuPy packs scalars by their own size, so an int32
    where the kernel reads ``long long`` would shift every later argument."""
    source = cupy_kernels.SOURCE.replace("\\\n", " ")
    found = re.findall(r'extern "C" __global__ void (wf_\w+)\(([^)]*)\)', source)
    macro = re.findall(r"void (wf_\w+_)##NAME\(([^)]*)\)", source)
    found += [(prefix + act, params) for prefix, params in macro for act in ACTS]
    out = {}
    for name, params in found:
        kinds = []
        for p in params.split(","):
            kind = " ".join(p.replace("const", "").split()[:-1])
            kinds.append(np.ndarray if "*" in p else "T" if kind == "T" else _PARAM_TYPES[kind])
        out[name] = kinds
    return out


def build(folder):
    """``(fake cupy module, kernel(name, dtype))``: a stand-in for ``cupy_kernels.kernel`` that
    checks each launch's argument types against the kernel's signature, then runs it."""
    gxx = shutil.which("g++")
    libs = {}
    for dtype in cupy_kernels.CTYPES:
        src, lib = folder / f"{dtype}.cpp", folder / f"{dtype}.so"
        src.write_text(SHIM + cupy_kernels.render(dtype))
        flags = ["-O2", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off", "-Werror", "-Wall"]
        subprocess.run([gxx, *flags, "-o", str(lib), str(src)], check=True, capture_output=True)
        libs[dtype] = ctypes.CDLL(str(lib))
    sigs = signatures()

    def kernel(name, dtype):
        lib = libs[str(dtype)]
        fn = getattr(lib, name)
        element = np.dtype(str(dtype)).type
        expected = [element if k == "T" else k for k in sigs[name]]

        def run(grid, block, args):
            assert [np.ndarray if isinstance(a, np.ndarray) else type(a) for a in args] == expected
            cargs = [
                ctypes.c_void_p(a.ctypes.data) if isinstance(a, np.ndarray) else _CTYPES[type(a)](a)
                for a in args
            ]
            for b in range(grid[0]):
                lib.wf_grid(b, grid[0])
                fn(*cargs)

        return run

    fake = types.SimpleNamespace(
        ndarray=np.ndarray,
        empty=np.empty,
        empty_like=np.empty_like,
        asarray=np.asarray,
        ascontiguousarray=np.ascontiguousarray,
        sum=np.sum,
        stack=np.stack,
        uint32=np.uint32,
        int32=np.int32,
    )
    return fake, kernel
