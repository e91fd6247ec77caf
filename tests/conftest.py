"""The one ``backend`` fixture: every numeric test runs on each backend that can run here."""

from __future__ import annotations

import functools
import os
import shutil
import tempfile

import pytest

# JAX's persistent compilation cache for this test session (one folder for the xdist workers
# and the examples they start, which inherit the environment): a model compiled again with the
# same program, in this process or another, loads the executable instead of recompiling it
# (the prune example's 12 identical fit compilations: 20 s -> 14 s). Set before jax is imported.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="wframe-tests-jax-")
    os.environ["WFRAME_TESTS_OWN_JAX_CACHE"] = os.environ["JAX_COMPILATION_CACHE_DIR"]
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
# One BLAS thread per test process: the suite runs a process per core (xdist), and threaded
# BLAS on cores already busy spins instead of computing (a tiny matmul then takes 100x longer).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
# XLA's CPU backend without LLVM's optimizations compiles ~20% faster (the suite: 6:40 -> 5:36),
# for this process and the ones the tests start (they inherit XLA_FLAGS; the scripts that set
# their own device count add WFRAME_TESTS_XLA_FLAGS to it). The few tests whose JAX oracle must
# round as users' programs do (saturated tanh, exact zeros) compile it with ``jit_as_users``.
os.environ.setdefault("WFRAME_TESTS_XLA_FLAGS", "--xla_backend_optimization_level=0")
os.environ.setdefault("XLA_FLAGS", os.environ["WFRAME_TESTS_XLA_FLAGS"])

import wframe as wf  # noqa: E402 (after the environment above)
from wframe.backends import backend_class  # noqa: E402

BACKENDS = ["numpy", "jax", "cupy"]


def pytest_unconfigure(config):
    """The session's compilation cache goes with it (removed by the process that made it)."""
    own = os.environ.get("WFRAME_TESTS_OWN_JAX_CACHE")
    if own and not hasattr(config, "workerinput"):
        shutil.rmtree(own, ignore_errors=True)


def _param(name):
    ok, why = backend_class(name).is_available()
    marks = [pytest.mark.gpu] if name == "cupy" else []
    if not ok:
        marks.append(pytest.mark.skip(reason=f"backend {name!r} unavailable: {why}"))
    return pytest.param(name, id=name, marks=marks)


@pytest.fixture(params=[_param(name) for name in BACKENDS])
def backend(request):
    """The backend named by the parameter, made active for the test."""
    with wf.use_backend(request.param) as b:
        yield b


@pytest.fixture
def jax():
    """The jax module, for tests that compare with ``jax.grad``; skips where jax cannot run."""
    jax = pytest.importorskip("jax")
    ok, why = backend_class("jax").is_available()
    if not ok:
        pytest.skip(why)
    return jax


@pytest.fixture
def jit_as_users(jax):
    """``jax.jit`` at XLA's default optimization level (3), whatever this process's XLA_FLAGS:
    for JAX oracles whose last bits the tests compare (the suite compiles at level 0)."""
    return functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 3})
