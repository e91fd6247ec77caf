"""Backend registry: names map to ``"module:Class"`` paths imported on first use.

The active backend is a ContextVar set by :func:`use_backend` (per thread and task), falling back
to the process default set by :func:`set_backend` or read once from ``WFRAME_BACKEND``. Code below
the model never asks for the active backend: it asks its arrays, with :func:`backend_of`.
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
import numpy as _numpy

from wframe.backends.base import Backend
from wframe.backends.namespace import array_namespace, register_namespace
from wframe.types import Array

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "array_namespace",
    "available",
    "backend_of",
    "get_backend",
    "backend_class",
    "register",
    "register_namespace",
    "registered",
    "resolve",
    "set_backend",
    "to_numpy",
    "use_backend",
    "why_unavailable",
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
    """Register a third-party backend class under ``name`` as ``"package.module:Class"``.

    The module is imported on first use of the backend, not here; registering a name again
    replaces the earlier registration.

    Args:
      name: the name ``set_backend``, ``use_backend`` and ``WFRAME_BACKEND`` will accept.
      path: ``"package.module:Class"``, a subclass of :class:`wframe.backends.Backend`.

    Raises:
      ValueError: ``name`` is empty or not a str, or ``path`` has no ``":"``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"backend name must be a non-empty str, got {name!r}")
    if not isinstance(path, str) or ":" not in path:
        raise ValueError(f"backend path must look like 'package.module:Class', got {path!r}")
    with _lock:
        _REGISTRY[name] = path
        _instances.pop(name, None)
        _types.clear()


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    with _lock:
        if not _entry_points_loaded:
            for ep in importlib.metadata.entry_points(group="wframe.backends"):
                _REGISTRY.setdefault(ep.name, ep.value)
            _entry_points_loaded = True


def _canonical(name: str) -> str:
    """``name`` as registered: names are case-insensitive (``"JAX"`` is ``"jax"``) unless two
    registered names differ only in case, when the exact spelling is needed."""
    if name in _REGISTRY or not isinstance(name, str):
        return name
    matches = [n for n in _REGISTRY if n.lower() == name.lower()]
    return matches[0] if len(matches) == 1 else name


def backend_class(name: str) -> type[Backend]:
    """The class registered as ``name`` (any case), imported on the first call.

    Args:
      name: a registered backend name (:func:`registered` lists them).

    Raises:
      ValueError: no backend is registered as ``name``.
      BackendUnavailableError: the registered path cannot be imported or is not a Backend
        subclass.
    """
    _load_entry_points()
    with _lock:
        name = _canonical(name)
        if name not in _REGISTRY:
            raise ValueError(f"Unknown backend {name!r}. Expected one of {sorted(_REGISTRY)}.")
        path = _REGISTRY[name]
    module, _, cls_name = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module), cls_name)
    except (ImportError, AttributeError) as e:
        raise BackendUnavailableError(
            f"backend {name!r} is registered as {path!r}, which cannot be loaded: "
            f"{type(e).__name__}: {e}; fix the path given to wframe.backends.register"
        ) from e
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise BackendUnavailableError(
            f"backend {name!r} is registered as {path!r}, which is not a subclass of "
            "wframe.backends.Backend"
        )
    return cls


def why_unavailable(name: str) -> str:
    """``""`` if backend ``name`` can run here, else the reason.

    Args:
      name: a registered backend name.
    """
    try:
        ok, why = backend_class(name).is_available()
    except BackendUnavailableError as e:
        return str(e)
    return "" if ok else why


def registered() -> list[str]:
    """Names of every registered backend (built-in, ``register``ed and entry points), whether
    or not it can run here."""
    _load_entry_points()
    with _lock:
        return list(_REGISTRY)


def available() -> list[str]:
    """Names of the registered backends that can run on this machine.

    A broken registration (bad path, failing import) leaves only that name out.
    """
    _load_entry_points()
    with _lock:
        names = list(_REGISTRY)
    return [name for name in names if not why_unavailable(name)]


def _instance(name: str) -> Backend:
    backend = _instances.get(name)
    if backend is not None:
        return backend
    _load_entry_points()
    with _lock:
        name = _canonical(name)
        if name not in _instances:
            cls = backend_class(name)
            ok, why = cls.is_available()
            if not ok:
                raise BackendUnavailableError(f"backend {name!r} is unavailable: {why}")
            _instances[name] = cls()
    return _instances[name]


def resolve(name: str | Backend) -> Backend:
    """The backend named ``name`` (made on first use), or ``name`` itself if it is one.

    Args:
      name: a registered backend name, or a :class:`Backend` instance.

    Raises:
      TypeError: ``name`` is neither a str nor a Backend.
    """
    if isinstance(name, Backend):
        return name
    if not isinstance(name, str):
        raise TypeError(f"a backend is a name such as 'numpy' or a Backend, got {name!r}")
    return _instance(name)


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
    """Make ``name`` the process-wide default backend and return it.

    Args:
      name: a registered backend name (``"numpy"``, ``"jax"``, ``"cupy"``, ...) or a
        :class:`Backend`; it replaces the default that ``WFRAME_BACKEND`` chose.
    """
    global _default, _env_seen
    backend = resolve(name)
    with _lock:
        _default, _env_seen = backend, os.environ.get(ENV_VAR)
    return backend


@contextlib.contextmanager
def use_backend(name: str | Backend) -> Iterator[Backend]:
    """Use ``name`` inside a ``with`` block; nests, and is local to the thread or task.

    Args:
      name: a registered backend name or a :class:`Backend`.

    Yields:
      The backend, active until the block ends.
    """
    token = _context.set(resolve(name))
    try:
        yield _context.get()
    finally:
        _context.reset(token)


# ----------------------------------------------------------------- arrays know their backend
_types: dict[type, Backend] = {}
_generic: dict[int, Backend] = {}


def _backend_for_type(a: Array) -> Backend:
    if array_api_compat.is_numpy_array(a):
        return _instance("numpy")
    if array_api_compat.is_jax_array(a):
        return _instance("jax")
    if array_api_compat.is_cupy_array(a):
        return _instance("cupy")
    if array_api_compat.is_torch_array(a):  # array-API, but no wframe backend holds it
        raise TypeError(
            f"a torch.Tensor (shape {tuple(a.shape)}, {a.dtype}) is not an array of any wframe "
            "backend; pass x.numpy() (x.detach().cpu().numpy() for a tensor on a GPU or with "
            "gradients), or any NumPy array"
        )
    xp = array_namespace(a)
    with _lock:
        for backend in _instances.values():  # a registered third-party backend's arrays
            if backend.xp is xp:
                return backend
        # Any other array-API array (array_api_strict in the tests): the generic kernels of
        # the base class on its own namespace.
        if id(xp) not in _generic:
            generic = Backend()
            generic.name, generic.xp = getattr(xp, "__name__", "array-api"), xp
            _generic[id(xp)] = generic
    return _generic[id(xp)]


def backend_of(*arrays: Array) -> Backend:
    """The backend the ``arrays`` live on (tracers included); they must all share one.

    Args:
      *arrays: arrays of any registered backend.

    Raises:
      TypeError: if the arrays belong to two backends, naming both and the fix.
    """
    found: Backend | None = None
    for a in arrays:
        kind = type(a)
        backend = _types.get(kind)
        if backend is None:
            if not hasattr(a, "shape"):
                raise TypeError(f"expected an array, got {kind.__name__} {a!r}")
            backend = _types.setdefault(kind, _backend_for_type(a))
        if found is None:
            found = backend
        elif backend is not found:
            raise TypeError(
                f"arrays of two backends are mixed: '{found.name}' and '{backend.name}'; move "
                f"them to one backend first (model.to_backend('{found.name}'), or "
                f"wf.get_backend().asarray(wf.to_numpy(a)))"
            )
    if found is None:
        raise TypeError("backend_of needs at least one array")
    return found


def to_numpy(a: Array):
    """Copy an array of any backend to a host NumPy array.

    Args:
      a: an array of any backend (or anything ``numpy.asarray`` takes).
    """
    if array_api_compat.is_cupy_array(a):
        return a.get()
    return _numpy.asarray(a)
