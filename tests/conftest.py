"""The one ``backend`` fixture: every numeric test runs on each backend that can run here."""

from __future__ import annotations

import pytest

import wframe as wf
from wframe.backends import backend_class

BACKENDS = ["numpy", "jax", "cupy"]


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
