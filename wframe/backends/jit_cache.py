"""JAX's persistent compilation cache in a per-user folder, on by default.

A program XLA compiled once (a model's train step, its predict function) is written to disk and
loaded, instead of compiled again, by any later process of the same user with the same JAX and
the same program: the second run of a script skips most of its compile time.

Where: ``$WFRAME_CACHE_DIR/jax`` if set, else ``$XDG_CACHE_HOME/wframe/jax``, else
``~/.cache/wframe/jax``. ``WFRAME_JIT_CACHE=0`` (or ``off``, ``false``, ``no``) turns it off.
A cache JAX was already given (``JAX_COMPILATION_CACHE_DIR``, ``jax.config``) wins and is left
as it is. A folder that cannot be created or written is skipped with a debug log: the cache is
a speed-up, never a reason to fail. Every program is written, however fast it compiled (unless
``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` says otherwise), and no more than
:data:`MAX_BYTES` is kept (JAX evicts the least recently used entries).

Why every program: a ``fit`` in a fresh process compiles its train steps and a dozen small
programs (the optimizer's state made eagerly, the copies, the reads), each 10-40 ms to compile
and ~1 ms to load. Measured on the digits MLP (2-core VM, ``python -m wframe bench --workloads
cold``): with JAX's default threshold of 0.1 s only the two train steps were written (4 files,
100 KB) and the second process's first epoch took 1.08 s against the first's 3.94 s; with every
program written (28 files, 200 KB) 0.54-0.66 s against 2.56 s.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The most the per-user cache keeps, in bytes (least recently used entries go first).
MAX_BYTES = 2 * 1024**3
#: Programs compiling faster than this (seconds) are not written: none (loading beats compiling).
MIN_COMPILE_SECONDS = 0.0
_OFF = ("0", "off", "false", "no")


def cache_dir() -> Path | None:
    """The per-user folder wframe gives JAX, or ``None`` when ``WFRAME_JIT_CACHE`` is off."""
    if os.environ.get("WFRAME_JIT_CACHE", "1").strip().lower() in _OFF:
        return None
    root = os.environ.get("WFRAME_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "wframe")
    return Path(root) / "jax"


def enable(jax: Any) -> str | None:
    """Point ``jax`` at the per-user cache unless it has one or the switch is off; returns the
    folder in use (``None``: none)."""
    given = jax.config.jax_compilation_cache_dir
    if given:  # the user's (or JAX_COMPILATION_CACHE_DIR's) choice
        return str(given)
    path = cache_dir()
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass  # writable
    except OSError as e:
        log.debug("wframe: JAX compilation cache %s skipped: %s", path, e)
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    if jax.config.jax_compilation_cache_max_size == -1:
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return str(path)
