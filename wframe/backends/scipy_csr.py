"""SciPy CSR matrices for the numpy backend's ``sparse_matmul``, made once per set of arrays.

A sparse layer holds its kernel as three arrays (values, column indices, row pointers); SciPy's
product needs them wrapped in a ``csr_matrix``, whose constructor checks them: 17-25 us, as
long as the product itself for a 784x1024 kernel at 95% sparsity and batch 1. So each wrapper is
kept, keyed by the identity of the value array, for as long as that array lives (a weak
reference: the cache keeps no model's arrays alive; the wrapper holds copies). Params are never
updated in place (DESIGN section 3): new arrays are new keys. Each wrapper is checked in full
once (indices in range, row pointers increasing), as SciPy's products read without bounds
checks and the arrays may come from a file.
"""

from __future__ import annotations

import weakref
from typing import Any

_CACHE: dict[int, tuple[tuple[weakref.ref, ...], Any]] = {}


def scipy_sparse() -> Any:
    """``scipy.sparse``, or an ImportError saying how to install it."""
    try:
        from scipy import sparse
    except ImportError:
        raise ImportError(
            "sparse products on the numpy backend need SciPy: pip install scipy"
        ) from None
    return sparse


def csr_matrix(data: Any, indices: Any, indptr: Any, shape: tuple[int, int]) -> Any:
    """The ``scipy.sparse.csr_matrix`` of these arrays (made on the first call for them)."""
    key = id(data)
    hit = _CACHE.get(key)
    arrays = (data, indices, indptr)
    if hit is not None:
        refs, matrix = hit
        if all(r() is a for r, a in zip(refs, arrays, strict=True)) and matrix.shape == shape:
            return matrix
    matrix = scipy_sparse().csr_matrix(tuple(a.copy() for a in arrays), shape=shape)
    # SciPy's products do not check bounds: arrays from a file must not read past x.
    matrix.check_format(full_check=True)
    _CACHE[key] = (tuple(weakref.ref(a) for a in arrays), matrix)
    weakref.finalize(data, _CACHE.pop, key, None)
    return matrix
