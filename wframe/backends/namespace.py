"""Arrays know their namespace: :func:`array_namespace`, cached per array type, and
:func:`register_namespace`, by which a backend makes its own namespace the one of its arrays.

A module of its own so that both the registry (``wframe.backends``) and the backend contract
(``base``) import it, and the registry imports ``base``: no cycle.
"""

from __future__ import annotations

import array_api_compat
import numpy as _numpy

from wframe.backends.numpy_xp import xp as _numpy_xp
from wframe.types import Array, Namespace

# array type -> namespace; a backend adds its arrays' with register_namespace.
_namespaces: dict[type, Namespace] = {_numpy.ndarray: _numpy_xp}


def array_namespace(*arrays: Array) -> Namespace:
    """The array-API namespace of ``arrays`` (cached per array type: this is on hot paths).

    Args:
      *arrays: arrays of one library (NumPy, CuPy, JAX, ...).
    """
    if len(arrays) == 1:
        xp = _namespaces.get(type(arrays[0]))
        if xp is not None:
            return xp
    xp = array_api_compat.array_namespace(*arrays)
    if array_api_compat.is_numpy_namespace(xp):  # see NumpyBackend: NumPy itself, nearly
        xp = _numpy_xp
    if len(arrays) == 1:
        _namespaces[type(arrays[0])] = xp
    return xp


def register_namespace(array_type: type, xp: Namespace) -> None:
    """Make ``xp`` the namespace :func:`array_namespace` gives for arrays of ``array_type``
    (CuPy's backend: its capture-safe namespace for ``cupy.ndarray``).

    Args:
      array_type: the array class, e.g. ``cupy.ndarray``.
      xp: the namespace to return for it.
    """
    _namespaces[array_type] = xp
