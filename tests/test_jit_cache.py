"""JAX's persistent compilation cache in a per-user folder (:mod:`wframe.backends.jit_cache`):
on by default, a second process loads what the first compiled, off with ``WFRAME_JIT_CACHE=0``,
never an error when the folder cannot be written, and a cache JAX was given wins."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from wframe.backends import jit_cache

SCRIPT = """
import json, time, numpy as np, wframe as wf
t = time.perf_counter()
with wf.use_backend("jax") as b:
    m = wf.Sequential([wf.layers.Dense(32, activation="relu"), wf.layers.Dense(3)], seed=0)
    m.fit(np.ones((64, 8), np.float32), np.arange(64) % 3, epochs=1, batch_size=16, verbose=0)
print(json.dumps({"dir": b.cache_dir, "seconds": time.perf_counter() - t}))
"""


def _run(env_extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "WFRAME_"))}
    env.update(env_extra)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_what_the_first_compiled(tmp_path):
    pytest.importorskip("jax")
    env = {"WFRAME_CACHE_DIR": str(tmp_path)}
    first = _run(env)
    folder = tmp_path / "jax"
    assert first["dir"] == str(folder)
    written = sorted(p.name for p in folder.iterdir())
    assert written, "the first process wrote nothing"
    _run(env)
    assert sorted(p.name for p in folder.iterdir()) == written  # all loaded, none compiled anew


class _Config:
    """The part of ``jax.config`` the cache touches (``enable`` only reads and updates it)."""

    def __init__(self, **given):
        self.jax_compilation_cache_dir = None
        self.jax_persistent_cache_min_compile_time_secs = 1.0
        self.jax_compilation_cache_max_size = -1
        vars(self).update(given)

    def update(self, name, value):
        setattr(self, name, value)


class _Jax:
    def __init__(self, **given):
        self.config = _Config(**given)


def test_off_unwritable_and_a_given_cache(tmp_path, monkeypatch):
    for var in (
        "WFRAME_CACHE_DIR",
        "WFRAME_JIT_CACHE",
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    jax = _Jax()
    assert jit_cache.enable(jax) == str(tmp_path / "xdg" / "wframe" / "jax")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == jit_cache.MIN_COMPILE_SECONDS
    assert jax.config.jax_compilation_cache_max_size == jit_cache.MAX_BYTES
    assert jit_cache.enable(_Jax(jax_compilation_cache_dir="/mine")) == "/mine"  # theirs wins
    monkeypatch.setenv("WFRAME_CACHE_DIR", str(tmp_path / "file"))
    (tmp_path / "file").write_text("not a folder")
    assert jit_cache.enable(_Jax()) is None  # cannot be made: skipped, no error
    monkeypatch.setenv("WFRAME_JIT_CACHE", "Off")
    off = _Jax()
    assert jit_cache.enable(off) is None and off.config.jax_compilation_cache_dir is None
