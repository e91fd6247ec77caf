"""The CuPy backend's fused kernels (wframe/backends/cupy_kernels.py, cupy_ops.py).

Everywhere: the CUDA sources compile with ``nvcc`` (where it is on PATH), and the same sources,
compiled for the host by ``g++`` with a few macros standing in for CUDA's, run through
``cupy_ops``'s own argument checks and launch code on NumPy arrays (one thread per block) and are
compared with the generic code: bit for bit where the math is IEEE adds, multiplies, divides,
square roots and integer hashing, to float rounding where ``exp``/``tanh`` come from another libm.
On a GPU (marker ``gpu``, skipped without CuPy) every fused op is compared with the generic
array-API code on the same CuPy arrays.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

import wframe as wf
from wframe import activations, losses
from wframe import optimizers as opt
from wframe import random as wr
from wframe.backends import Backend, backend_class, cupy_host, cupy_kernels, cupy_ops, fusion
from wframe.layers.core import Dropout
from wframe.testing import assert_close
from wframe.tree import tree_leaves, tree_map

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _host_kernels  # noqa: E402

ACTS = _host_kernels.ACTS  # the activations with fused kernels
EXACT_ACTS = {"relu", "leaky_relu"}  # no libm call: the same bits everywhere
ENTRIES = set(re.findall(r'extern "C" __global__ void (wf_\w+)\(', cupy_kernels.SOURCE))
ENTRIES |= {f"wf_{kind}_{a}" for a in ACTS for kind in ("bias", "grad")}  # the WF_ACT macro


def test_kernel_sources_compile_with_nvcc(tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on PATH")
    for dtype in cupy_kernels.CTYPES:
        src, ptx = tmp_path / f"{dtype}.cu", tmp_path / f"{dtype}.ptx"
        src.write_text(cupy_kernels.render(dtype))
        cmd = [nvcc, "-arch=sm_90", "-ptx", *cupy_kernels.OPTIONS, "-Werror", "all-warnings"]
        subprocess.run([*cmd, "-o", str(ptx), str(src)], check=True, capture_output=True)
        entries = set(re.findall(r"\.entry (wf_\w+)\(", ptx.read_text()))
        assert entries == ENTRIES


# ------------------------------------------------------------- the kernels, run on the host
@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """``(fake cupy, stand-in for cupy_kernels.kernel)``: the kernels as host code."""
    if shutil.which("g++") is None:
        pytest.skip("g++ is not on PATH")
    built = _host_kernels.build(tmp_path_factory.mktemp("host_kernels"))
    assert set(_host_kernels.signatures()) == ENTRIES
    return built


@pytest.fixture
def cp(host, monkeypatch):
    fake, kernel = host
    monkeypatch.setattr(cupy_kernels, "kernel", kernel)
    return fake


def _rand(shape, dtype="float32", seed=0, scale=2.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def _exact(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", ACTS)
def test_host_bias_activation_matches_generic(cp, act, dtype):
    z, b, dy = _rand((7, 5), dtype), _rand((5,), dtype, 1), _rand((7, 5), dtype, 2)
    z[0, 0] = -b[0]  # an exact zero before the activation
    fn = getattr(activations, "gelu_approximate" if act == "gelu" else act)  # the tanh kernel
    for bias in (b, None):
        y, back = cupy_ops.bias_activation(cp, z, bias, act, 0.01)
        y_ref, back_ref = fn(z if bias is None else z + bias)
        # Host libm and NumPy differ by an ulp in exp/tanh; 1 - y*y near |y| = 1 magnifies it.
        check = (
            _exact if act in EXACT_ACTS else (lambda a, e: assert_close(a, e, rtol=2e-6, atol=1e-6))
        )
        check(y, y_ref)
        check(back(dy), back_ref(dy))
        half = dy.astype("float16")  # another dtype: the generic formula on the kernel's y
        assert_close(back(half), back_ref(half), rtol=2e-6, atol=1e-6)


def test_host_dropout_and_random_bits_are_bit_identical(cp):
    key = wr.array_key(2024, 7, wf.backends._instance("numpy"))
    for shape in [(3, 5), (1,), (257, 3)]:
        _exact(cupy_ops.random_bits(cp, key, shape), wr.random_bits(key, shape))
    x = _rand((33, 9))
    layer = Dropout(0.3)
    y_ref, _, back_ref = layer.forward({}, {}, x, train=True, key=key)
    threshold = min(round(0.3 * 2.0**32), 2**32 - 1)
    y, mask = cupy_ops.dropout(cp, x, key, threshold, 1.0 / (1.0 - 0.3))
    _exact(y, y_ref)
    _exact(mask * x, y_ref)
    _exact(x * mask, back_ref(x)[0])
    assert cupy_ops.dropout(cp, x, key.astype(np.int32), threshold, 1.0) is None


@pytest.mark.parametrize("labels", ["int32", "int64", "soft"])
def test_host_softmax_cross_entropy_matches_generic(cp, labels):
    logits = _rand((6, 11), seed=3)
    logits[1, 4] = 30.0
    rng = np.random.default_rng(4)
    y = rng.integers(0, 11, 6).astype(labels) if labels != "soft" else rng.random((6, 11))
    y = y.astype("float32") if labels == "soft" else y
    value, grad = cupy_ops.softmax_cross_entropy(cp, logits, y)
    ref_value, ref_grad = losses.SoftmaxCrossEntropy()(logits, y)
    assert_close(value, ref_value, rtol=2e-6)
    assert_close(grad, ref_grad, rtol=2e-6, atol=1e-7)  # e / s * sum(y) - y cancels
    bad = logits.copy()
    bad[2, 0] = -np.inf  # the generic sum of onehot * shifted is NaN there: the kernel's too
    with np.errstate(invalid="ignore"):
        assert np.isnan(cupy_ops.softmax_cross_entropy(cp, bad, y)[0]) == np.isnan(
            losses.SoftmaxCrossEntropy()(bad, y)[0]
        )


GEOMETRIES = [
    ((3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    ((2, 3), (2, 1), ((0, 1), (2, 0)), (1, 2)),
]


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_host_col2im_matches_generic(cp, geometry):
    window, strides, padding, dilation = geometry
    x = _rand((2, 7, 6, 3))
    cols = Backend().im2col(x, window, strides, padding, dilation)
    cols = _rand(cols.shape, seed=5)
    ref = Backend.col2im(Backend(), cols, x.shape, window, strides, padding, dilation)
    _exact(cupy_ops.col2im(cp, cols, x.shape, window, strides, padding, dilation), ref)


def _params(dtype="float32"):
    return {"a": {"W": _rand((5, 4), dtype, 6), "b": _rand((4,), dtype, 7)}}


def _grads(step, dtype="float32"):
    return tree_map(lambda p: _rand(p.shape, dtype, 100 + step), _params(dtype))


def _pure(tx, steps, dtype="float32"):
    params = _params(dtype)
    state = tx.init(params)
    for s in range(steps):
        updates, state = tx.update(_grads(s, dtype), state, params)
        params = opt.apply_updates(params, updates)
    return params


def schedule(count):
    return 0.1 / (1.0 + 0.05 * count)


inject = opt.inject_hyperparams
OPTIMIZERS = {  # name -> (factory, rtol against the pure path; 0: the same bits)
    "adam": (lambda: opt.adam(1e-2), 1e-5),
    "adamw_eps_root": (lambda: opt.adamw(1e-2, eps_root=1e-8, weight_decay=0.1), 1e-5),
    "adamw_injected": (lambda: inject(opt.adamw)(1e-2, weight_decay=0.1), 1e-5),
    "adam_schedule": (lambda: opt.adam(schedule), 1e-5),
    "sgd": (lambda: opt.sgd(0.1), 0),
    "sgd_momentum": (lambda: opt.sgd(0.1, momentum=0.9), 0),
    "sgd_nesterov": (lambda: opt.sgd(0.1, momentum=0.9, nesterov=True), 0),
    "sgd_schedule": (lambda: opt.sgd(schedule, momentum=0.5), 1e-6),
    "sgd_injected": (lambda: inject(opt.sgd)(0.1, momentum=0.9), 1e-6),
    "rmsprop": (lambda: opt.rmsprop(1e-2), 0),
    "rmsprop_momentum": (lambda: opt.rmsprop(1e-2, momentum=0.9, nesterov=True), 0),
    "rmsprop_eps_out": (lambda: opt.rmsprop(1e-2, eps_in_sqrt=False, momentum=0.5), 0),
    "rmsprop_injected": (lambda: inject(opt.rmsprop)(1e-2, momentum=0.9), 1e-6),
}


def _host_fused(cp, tx, steps, dtype, pred, device_scalars=False):
    # fused.py drives a backend with these methods: here cupy_ops on the host. With
    # device_scalars, hyper-parameters come as 0-d arrays (CuPy's way: no host read).
    class HostBackend:
        def fusable(self, groups, counts=()):
            return cupy_ops.fusable(cp, groups, counts)

        def increment_inplace(self, count):
            cupy_ops.increment(cp, count, pred)
            return count

        def adam_inplace(self, groups, count, lr, b1, b2, eps, eps_root=0.0, weight_decay=0.0):
            cupy_ops.adam(cp, groups, count, pred, lr, b1, b2, eps, eps_root, weight_decay)

        def sgd_inplace(self, groups, lr, momentum=None, nesterov=False):
            cupy_ops.sgd(cp, groups, pred, lr, momentum, nesterov)

        def rmsprop_inplace(
            self, groups, lr, decay, eps, eps_in_sqrt, momentum=None, nesterov=False
        ):
            cupy_ops.rmsprop(cp, groups, pred, lr, decay, eps, eps_in_sqrt, momentum, nesterov)

    HostBackend.device_scalars = device_scalars
    fused_mod = importlib.import_module("wframe.optimizers.fused")  # the name is the function
    params = _params(dtype)
    state, apply = tx.init(params), fused_mod.fused(tx)
    original = fused_mod.backend_of
    fused_mod.backend_of = lambda *a: HostBackend()
    try:
        for s in range(steps):
            new, state = apply(params, _grads(s, dtype), state)
            assert new is params  # updated in place: the kernels ran
    finally:
        fused_mod.backend_of = original
    return params, state


@pytest.mark.parametrize("device_scalars", [False, True], ids=["floats", "device"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_host_optimizer_kernels_match_the_pure_path(cp, name, dtype, device_scalars):
    make, rtol = OPTIMIZERS[name]
    ours, state = _host_fused(cp, make(), 30, dtype, np.ones((), bool), device_scalars)
    expected = _pure(make(), 30, dtype)
    if rtol:  # Adam: the bias corrections associate differently from the pure chain
        tree_map(lambda a, e: assert_close(a, e, rtol=rtol, atol=1e-7), ours, expected)
    else:
        tree_map(_exact, ours, expected)
    skipped, skipped_state = _host_fused(cp, make(), 3, dtype, np.zeros((), bool), device_scalars)
    tree_map(_exact, skipped, _params(dtype))  # a false predicate writes nothing
    tree_map(_exact, skipped_state, make().init(_params(dtype)))


def test_host_adam_matches_the_numpy_in_place_kernel(cp):
    ours, _ = _host_fused(cp, opt.adamw(1e-2, weight_decay=0.1), 30, "float32", np.ones((), bool))
    params, tx = _params(), opt.adamw(1e-2, weight_decay=0.1)
    state, apply = tx.init(params), opt.fused(opt.adamw(1e-2, weight_decay=0.1))
    for s in range(30):
        params, state = apply(params, _grads(s), state)
    tree_map(lambda a, e: assert_close(a, e, rtol=1e-6, atol=1e-8), ours, params)


def test_host_increment_saturates(cp):
    count, pred = np.array(2**31 - 2, np.int32), np.ones((), bool)
    cupy_ops.increment(cp, count, pred)
    cupy_ops.increment(cp, count, pred)
    assert int(count) == 2**31 - 1
    cupy_ops.increment(cp, np.array(5, np.int32), np.zeros((), bool))


def test_hooks_are_inert_on_numpy():
    # NumPy's hooks (wframe.backends.numpy_ops) cover relu, tanh, sigmoid, softmax and the
    # cross-entropies only (tests/test_numpy_ops.py): every other hook falls through to the
    # generic code.
    xp = wf.backends.array_namespace(np.zeros(1))
    hooks = fusion.FUSED.get(xp)
    assert hooks is None or hooks.bias_activation(np.zeros((2, 3)), None, activations.gelu) is None
    z, b = _rand((4, 3)), _rand((3,), seed=1)
    y, back = activations.apply(activations.tanh, z, b)
    _exact(y, np.tanh(z + b))
    # rmsprop has an in-place kernel on CuPy only: on NumPy its fused path is the pure one
    apply, tx = opt.fused(opt.rmsprop(1e-2, momentum=0.9)), opt.rmsprop(1e-2, momentum=0.9)
    params, state = _params(), tx.init(_params())
    for s in range(5):
        new, state = apply(params, _grads(s), state)
        assert new is not params
        params = new
    tree_map(_exact, params, _pure(tx, 5))


class _DeviceArray(np.ndarray):
    """A NumPy array that, like CuPy's, is read back with ``get()`` (each call counted)."""

    gets = 0

    def get(self):
        _DeviceArray.gets += 1
        return np.asarray(self).copy()


def test_to_host_reads_small_leaves_back_in_one_copy_per_dtype():
    fake = types.SimpleNamespace(
        ndarray=_DeviceArray, concatenate=lambda xs: np.concatenate(xs).view(_DeviceArray)
    )
    dev = lambda a: np.asarray(a).view(_DeviceArray)  # noqa: E731
    big = np.arange(70000.0)
    tree = {"a": dev([1.0, 2.0]), "b": (dev(np.int32(3)), 2.5, None), "c": dev(big), "d": dev(4.0)}
    _DeviceArray.gets = 0
    out = cupy_host.to_host(fake, tree)
    assert _DeviceArray.gets == 3  # float64 scalars together, the int32, the large one alone
    _exact(out["a"], [1.0, 2.0])
    assert out["b"][0].shape == () and int(out["b"][0]) == 3 and out["b"][2] is None
    assert float(out["b"][1]) == 2.5 and float(out["d"]) == 4.0
    _exact(out["c"], big)
    assert not any(isinstance(leaf, _DeviceArray) for leaf in tree_leaves(out))


def test_cond_select_keeps_buffers_both_branches_return():
    shared, a, b = np.zeros(2), np.ones(2), np.full(2, 2.0)
    picked = cupy_ops.select(
        np, np.asarray(False), {"p": shared, "s": (a, 1.0)}, {"p": shared, "s": (b, 3.0)}
    )
    assert picked["p"] is shared
    _exact(picked["s"][0], b)
    assert float(picked["s"][1]) == 3.0
    with pytest.raises(ValueError, match="different structures"):
        cupy_ops.select(np, np.asarray(True), (a, None), (a, b))


# ------------------------------------------------------------------------------ on a GPU
def _cupy_ok():
    return backend_class("cupy").is_available()


gpu = pytest.mark.gpu
needs_cupy = pytest.mark.skipif(not _cupy_ok()[0], reason=f"cupy unavailable: {_cupy_ok()[1]}")


@pytest.fixture
def cb(monkeypatch):
    with wf.use_backend("cupy") as backend:
        yield backend


def _generic(monkeypatch, backend):
    """Within the test, the generic code runs on CuPy arrays (no fused kernel registered)."""
    monkeypatch.delitem(fusion.FUSED, backend.xp)


@gpu
@needs_cupy
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", ACTS)
def test_gpu_bias_activation_matches_generic(cb, monkeypatch, act, dtype):
    z, b, dy = (cb.asarray(_rand(s, dtype, i)) for i, s in enumerate([(64, 33), (33,), (64, 33)]))
    fn = getattr(activations, "gelu_approximate" if act == "gelu" else act)  # the tanh kernel
    y, back = activations.apply(fn, z, b)
    dx = back(dy)
    _generic(monkeypatch, cb)
    y_ref, back_ref = activations.apply(fn, z, b)
    rtol = 0 if act in EXACT_ACTS else (1e-5 if dtype == "float32" else 1e-12)
    assert_close(y, y_ref, rtol=rtol)
    assert_close(dx, back_ref(dy), rtol=rtol, atol=0 if rtol == 0 else 1e-7)


@gpu
@needs_cupy
def test_gpu_dropout_and_random_bits_equal_numpy_bits(cb):
    layer, x = Dropout(0.4), _rand((129, 65))
    with wf.use_backend("numpy") as nb:
        key_np = wr.array_key(99, 3, nb)
        y_np = layer.forward({}, {}, x, train=True, key=key_np)[0]
        bits_np = wr.random_bits(wr.fold_in(key_np, "dense_1"), (1000, 3))
    key = wr.array_key(99, 3, cb)
    _exact(cb.to_numpy(layer.forward({}, {}, cb.asarray(x), train=True, key=key)[0]), y_np)
    _exact(cb.to_numpy(wr.random_bits(wr.fold_in(key, "dense_1"), (1000, 3))), bits_np)


@gpu
@needs_cupy
@pytest.mark.parametrize("labels", ["int32", "int64", "soft"])
def test_gpu_softmax_cross_entropy_matches_generic(cb, monkeypatch, labels):
    rng = np.random.default_rng(8)
    logits = cb.asarray(_rand((300, 1000), seed=9))
    y = rng.integers(0, 1000, 300).astype(labels) if labels != "soft" else rng.random((300, 1000))
    y = cb.asarray(y.astype("float32") if labels == "soft" else y)
    value, grad = losses.SoftmaxCrossEntropy()(logits, y)
    _generic(monkeypatch, cb)
    ref_value, ref_grad = losses.SoftmaxCrossEntropy()(logits, y)
    assert_close(value, ref_value, rtol=1e-5)
    assert_close(grad, ref_grad, rtol=1e-5, atol=1e-9)


@gpu
@needs_cupy
def test_gpu_col2im_matches_generic(cb):
    geometry = ((3, 3), (2, 2), ((1, 1), (0, 1)), (1, 1))
    cols = cb.asarray(_rand((4, 8, 8, 9 * 5)))
    ours = cb.col2im(cols, (4, 16, 16, 5), *geometry)
    _exact(cb.to_numpy(ours), cb.to_numpy(Backend.col2im(cb, cols, (4, 16, 16, 5), *geometry)))


@gpu
@needs_cupy
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_gpu_optimizer_kernels_match_the_pure_path(cb, name):
    make, rtol = OPTIMIZERS[name]
    tx = make()
    params = tree_map(cb.asarray, _params())
    state, apply = tx.init(params), opt.fused(tx)
    for s in range(30):
        new, state = apply(params, tree_map(cb.asarray, _grads(s)), state)
        assert all(a is b for a, b in zip(tree_leaves(new), tree_leaves(params), strict=True))
    expected = _pure(make(), 30)
    tree_map(lambda a, e: assert_close(a, e, rtol=max(rtol, 1e-6), atol=1e-7), params, expected)


@gpu
@needs_cupy
def test_gpu_guard_skips_in_place_updates_on_the_device(cb):
    tx = opt.adam(1e-2)
    params = tree_map(cb.asarray, _params())
    before, state = cb.to_host(params), tx.init(params)
    apply = opt.fused(tx)
    bad = cb.xp.asarray(False)
    params, state = cb.cond(
        bad, lambda: apply(params, tree_map(cb.asarray, _grads(0)), state), lambda: (params, state)
    )
    tree_map(_exact, cb.to_host(params), before)
    assert int(state[0].count) == 0


@gpu
@needs_cupy
def test_gpu_pinned_upload_and_batched_to_host(cb):
    host = np.random.default_rng(0).standard_normal((300, 1000))
    _exact(cb.to_numpy(cb.asarray(host, dtype="float32")), host.astype("float32"))
    tree = {"a": cb.asarray(host[:3]), "b": (cb.asarray(np.arange(4)), 2.5)}
    out = cb.to_host(tree)
    _exact(out["a"], host[:3])
    _exact(out["b"][0], np.arange(4))
