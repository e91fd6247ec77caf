"""The backend registry: selection, context switching, laziness and the contract."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import wframe as wf
from wframe import backends
from wframe.backends.base import Backend


def run_python(code: str, **env: str) -> str:
    """Run ``code`` in a fresh interpreter (so the env var is read at first use)."""
    full_env = {k: v for k, v in os.environ.items() if k != "WFRAME_BACKEND"} | env
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        env=full_env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    return out.stdout.strip() + out.stderr.strip()


def test_import_is_lazy():
    out = run_python(
        "import sys, wframe; print(sorted(m for m in ('jax', 'cupy', 'optax') if m in sys.modules))"
    )
    assert out == "[]"


def test_default_backend_is_numpy():
    assert run_python("import wframe; print(wframe.get_backend().name)") == "numpy"


@pytest.mark.parametrize("name", ["numpy", "jax"])
def test_env_var_selects_backend(name):
    if name not in wf.available():
        pytest.skip(f"backend {name!r} unavailable")
    assert (
        run_python("import wframe; print(wframe.get_backend().name)", WFRAME_BACKEND=name) == name
    )


def test_env_var_unknown_name_lists_valid_names():
    out = run_python("import wframe; wframe.get_backend()", WFRAME_BACKEND="tensorflow")
    assert "Unknown backend 'tensorflow'" in out
    assert "['cupy', 'jax', 'numpy']" in out


def test_env_var_change_after_resolution_warns():
    code = (
        "import os, warnings, wframe\n"
        "wframe.get_backend()\n"
        "os.environ['WFRAME_BACKEND'] = 'jax'\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    print(wframe.get_backend().name, str(w[0].message))\n"
    )
    out = run_python(code)
    assert out.startswith("numpy ")
    assert "WFRAME_BACKEND changed to 'jax'" in out and "set_backend('jax')" in out


def test_unknown_name_raises_value_error():
    with pytest.raises(ValueError, match=r"Unknown backend 'nope'. Expected one of \["):
        wf.set_backend("nope")
    with pytest.raises(ValueError, match="Unknown backend"), wf.use_backend("nope"):
        pass


class MissingBackend(Backend):
    name = "missing"

    @classmethod
    def is_available(cls):
        return False, "package 'missing' is not installed; install it with: pip install missing"


def test_unavailable_backend_says_why(monkeypatch):
    monkeypatch.setitem(backends._REGISTRY, "missing", f"{__name__}:MissingBackend")
    with pytest.raises(wf.BackendUnavailableError, match="pip install missing"):
        wf.set_backend("missing")
    assert "missing" not in wf.available()


def test_cupy_without_device_is_unavailable_with_reason():
    ok, why = backends.backend_class("cupy").is_available()
    if ok:
        pytest.skip("a CUDA device works here")
    assert "cupy" in why and ("install" in why or "CUDA" in why)
    with pytest.raises(wf.BackendUnavailableError, match="backend 'cupy' is unavailable"):
        wf.set_backend("cupy")


def test_register_third_party_backend(monkeypatch):
    monkeypatch.setattr(backends, "_REGISTRY", dict(backends._REGISTRY))
    monkeypatch.setattr(backends, "_instances", dict(backends._instances))
    backends.register("numpy2", "wframe.backends.numpy:NumpyBackend")
    assert "numpy2" in wf.available()
    with wf.use_backend("numpy2") as b:
        assert wf.get_backend() is b and b.name == "numpy"
    with pytest.raises(ValueError, match="package.module:Class"):
        backends.register("bad", "no_colon_here")


def test_use_backend_nests_and_restores(backend):
    outer = wf.get_backend()
    with wf.use_backend("numpy") as inner:
        assert wf.get_backend() is inner
        with wf.use_backend(outer.name):
            assert wf.get_backend() is outer
        assert wf.get_backend() is inner
    assert wf.get_backend() is outer


def test_use_backend_restores_after_error():
    before = wf.get_backend()
    with pytest.raises(RuntimeError), wf.use_backend("numpy"):
        raise RuntimeError("boom")
    assert wf.get_backend() is before


def test_use_backend_is_thread_local():
    if "jax" not in wf.available():
        pytest.skip("needs a second backend")
    seen = {}
    entered, release = threading.Event(), threading.Event()

    def worker():
        with wf.use_backend("jax"):
            entered.set()
            release.wait(10)
            seen["worker"] = wf.get_backend().name

    t = threading.Thread(target=worker)
    with wf.use_backend("numpy"):
        t.start()
        entered.wait(10)
        seen["main"] = wf.get_backend().name  # the worker's context does not leak here
        release.set()
        t.join()
    assert seen == {"main": "numpy", "worker": "jax"}


def test_set_backend_sets_process_default():
    before = wf.get_backend()
    try:
        assert wf.set_backend("numpy").name == "numpy"
        assert wf.get_backend().name == "numpy"
    finally:
        wf.set_backend(before)


def test_backend_round_trip(backend):
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    a = backend.asarray(host)
    assert backends.array_namespace(a) is backend.xp
    np.testing.assert_array_equal(wf.to_numpy(a), host)
    np.testing.assert_array_equal(backend.to_numpy(backend.synchronize(a)), host)
    assert wf.to_numpy(backend.asarray(host, dtype="float32")).dtype == np.float32
    assert isinstance(backend.device, str)


def test_every_backend_class_implements_the_contract():
    contract = {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(Backend)
        if callable(member) and not name.startswith("_")
    }
    for name in backends._REGISTRY:
        cls = backends.backend_class(name)
        assert issubclass(cls, Backend)
        assert cls.name == name and isinstance(cls.install, str)
        for attr, sig in contract.items():
            got = inspect.signature(getattr(cls, attr))
            assert list(got.parameters) == list(sig.parameters), f"{cls.__name__}.{attr}"


def test_entry_point_group_registers_backends(monkeypatch):
    from importlib.metadata import EntryPoint

    ep = EntryPoint("viaplugin", "wframe.backends.numpy:NumpyBackend", "wframe.backends")
    monkeypatch.setattr(
        backends.importlib.metadata,
        "entry_points",
        lambda group: [ep] if group == "wframe.backends" else [],
    )
    monkeypatch.setattr(backends, "_REGISTRY", dict(backends._REGISTRY))
    monkeypatch.setattr(backends, "_instances", dict(backends._instances))
    monkeypatch.setattr(backends, "_entry_points_loaded", False)
    assert "viaplugin" in wf.available()
    with wf.use_backend("viaplugin") as b:
        assert b.name == "numpy" and b.xp.sum is wf.backends._instance("numpy").xp.sum


@pytest.mark.parametrize(
    ("source", "dtype"),
    [
        ("float64", None),
        ("int64", None),
        ("float32", "float32"),
        ("int64", "float32"),
        ("float32", "bfloat16"),
        ("uint8", None),
        ("bool", None),
    ],
)
def test_jax_asarray_of_host_data_is_a_copy_with_jnp_dtypes_and_no_program(
    jax, caplog, source, dtype
):
    # NumPy arrays reach JAX by device_put: the dtypes jnp.asarray gives, always a copy (a
    # later write to the host array does not reach it), and no program compiled (jnp.asarray
    # stages one per shape).
    host = (np.arange(7 * 13) % 5).reshape(7, 13).astype(source)
    with wf.use_backend("jax") as b:
        with jax.log_compiles(), caplog.at_level("WARNING", logger="jax"):
            got = b.asarray(host, dtype)
        want = jax.numpy.asarray(host, dtype=None if dtype is None else b.dtype(dtype))
    assert not [r for r in caplog.records if r.getMessage().startswith("Compiling")]
    assert got.dtype == want.dtype and got.shape == want.shape
    expected = np.array(want, copy=True)  # (jnp.asarray itself may alias an aligned buffer)
    np.testing.assert_array_equal(np.asarray(got), expected)
    host[...] = 3
    np.testing.assert_array_equal(np.asarray(got), expected)
