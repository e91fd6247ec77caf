"""Backend registry: names map to ``"module:Class"`` paths imported on first use.

The active backend is a ContextVar set by :func:`use_backend` (per thread and task), falling back
to the process default set by :func:`set_backend` or read once from ``WFRAME_BACKEND``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import threading
import warnings
from collections.abc import Iterator
from contextvars import ContextVar

import array_api_compat
import array_api_compat.numpy as _compat_numpy
import numpy as _numpy

from wframe.backends.base import Backend
from wframe.types import Array, Namespace

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "array_namespace",
    "available",
    "get_backend",
    "register",
    "set_backend",
    "to_numpy",
    "use_backend",
]

ENV_VAR = "WFRAME_BACKEND"
DEFAULT = "numpy"
_REGISTRY: dict[str, str] = {
    "numpy": "wframe.backends.numpy:NumpyBackend",
    "jax": "wframe.backends.jax:JaxBackend",
    "cupy": "wframe.backends.cupy:CupyBackend",
}
_entry_points_loaded = False
_instances: dict[str, Backend] = {}
_lock = threading.RLock()
_context: ContextVar[Backend | None] = ContextVar("wframe_backend", default=None)
_default: Backend | None = None
_env_seen: str | None = None


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here; the message says why and how to fix it."""


def register(name: str, path: str) -> None:
    """Register a third-party backend class under ``name`` as ``"package.module:Class"``."""
    if ":" not in path:
        raise ValueError(f"backend path must look like 'package.module:Class', got {path!r}")
    _REGISTRY[name] = path
    _instances.pop(name, None)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if not _entry_points_loaded:
        for ep in importlib.metadata.entry_points(group="wframe.backends"):
            _REGISTRY.setdefault(ep.name, ep.value)
        _entry_points_loaded = True


def _backend_class(name: str) -> type[Backend]:
    _load_entry_points()
    if name not in _REGISTRY:
        raise ValueError(f"Unknown backend {name!r}. Expected one of {sorted(_REGISTRY)}.")
    module, _, cls = _REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def available() -> list[str]:
    """Names of the registered backends that can run on this machine."""
    _load_entry_points()
    return [name for name in _REGISTRY if _backend_class(name).is_available()[0]]


def _instance(name: str) -> Backend:
    if name in _instances:
        return _instances[name]
    with _lock:
        if name not in _instances:
            cls = _backend_class(name)
            ok, why = cls.is_available()
            if not ok:
                raise BackendUnavailableError(f"backend {name!r} is unavailable: {why}")
            _instances[name] = cls()
    return _instances[name]


def _resolve(name: str | Backend) -> Backend:
    return name if isinstance(name, Backend) else _instance(name)


def get_backend() -> Backend:
    """The active backend: the innermost :func:`use_backend`, else the process default."""
    global _default, _env_seen
    backend = _context.get()
    if backend is not None:
        return backend
    env = os.environ.get(ENV_VAR)
    if _default is None:
        with _lock:
            if _default is None:
                _env_seen = env
                _default = _instance(env or DEFAULT)
    elif env != _env_seen:
        warnings.warn(
            f"{ENV_VAR} changed to {env!r} after the backend was resolved as "
            f"{_default.name!r}; it is read once. Use wframe.set_backend({env!r}) instead.",
            stacklevel=2,
        )
        _env_seen = env
    return _default


def set_backend(name: str | Backend) -> Backend:
    """Make ``name`` the process-wide default backend and return it."""
    global _default, _env_seen
    backend = _resolve(name)
    with _lock:
        _default, _env_seen = backend, os.environ.get(ENV_VAR)
    return backend


@contextlib.contextmanager
def use_backend(name: str | Backend) -> Iterator[Backend]:
    """Use ``name`` inside a ``with`` block; nests, and is local to the thread or task."""
    token = _context.set(_resolve(name))
    try:
        yield _context.get()
    finally:
        _context.reset(token)


_namespaces: dict[type, Namespace] = {}


def array_namespace(*arrays: Array) -> Namespace:
    """The array-API namespace of ``arrays`` (cached per array type: this is on hot paths)."""
    try:
        if len(arrays) == 1:
            return _namespaces[type(arrays[0])]
    except KeyError:
        pass
    xp = array_api_compat.array_namespace(*arrays)
    if xp is _compat_numpy:  # see NumpyBackend: NumPy itself is the namespace
        xp = _numpy
    if len(arrays) == 1:
        _namespaces[type(arrays[0])] = xp
    return xp


def to_numpy(a: Array):
    """Copy an array of any backend to a host NumPy array."""
    if array_api_compat.is_cupy_array(a):
        return a.get()
    return _numpy.asarray(a)
