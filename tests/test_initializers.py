"""Initializers: Keras statistics, fans, cross-backend bit-identity, lookup and errors."""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe import initializers as init
from wframe.random import split

ALIASES = {
    "random_normal": "normal",
    "random_uniform": "uniform",
    "xavier_uniform": "glorot_uniform",
    "xavier_normal": "glorot_normal",
    "kaiming_uniform": "he_uniform",
    "kaiming_normal": "he_normal",
}
NAMES = sorted(init._ALL)

# name -> expected variance as a function of (fan_in, fan_out)
VARIANCE = {
    "glorot_uniform": lambda i, o: 2 / (i + o),
    "glorot_normal": lambda i, o: 2 / (i + o),
    "he_uniform": lambda i, o: 2 / i,
    "he_normal": lambda i, o: 2 / i,
    "lecun_uniform": lambda i, o: 1 / i,
    "lecun_normal": lambda i, o: 1 / i,
}


def host(name, key=0, shape=(5, 4), dtype="float32", **kwargs):
    with wf.use_backend("numpy"):
        return np.asarray(init.get(name, **kwargs)(key, shape, dtype))


@pytest.mark.parametrize("shape", [(1000, 1000), (500, 2000)], ids=["square", "wide"])
@pytest.mark.parametrize("name", sorted(VARIANCE))
def test_variance_matches_formula(name, shape):
    w = host(name, key=1, shape=shape, dtype="float64")
    expected = VARIANCE[name](*shape)
    assert abs(w.var() / expected - 1) < 0.02
    assert abs(w.mean()) < 0.01 * np.sqrt(expected)


def test_three_inputs_two_outputs_give_a_3x2_matrix(backend):
    w = init.glorot_uniform(0, (3, 2))
    assert w.shape == (3, 2)
    assert wf.to_numpy(w).dtype == np.float32


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_is_bit_identical_on_every_backend(backend, name):
    shape = (3, 3, 4, 6)
    got = wf.to_numpy(init.get(name)(42, shape, "float32"))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, host(name, key=42, shape=shape))


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("zeros", "ones", "constant")])
def test_different_keys_give_different_arrays(name):
    a, b = split(7)
    assert not np.array_equal(host(name, key=0), host(name, key=1))
    assert not np.array_equal(host(name, key=a), host(name, key=b))
    np.testing.assert_array_equal(host(name, key=a), host(name, key=split(7)[0]))


@pytest.mark.parametrize(("alias", "name"), sorted(ALIASES.items()))
def test_aliases_give_identical_arrays(alias, name):
    np.testing.assert_array_equal(host(alias, key=3), host(name, key=3))


def test_every_name_resolves_and_callables_pass_through():
    for name in NAMES:
        assert callable(init.get(name))
    assert init.get(init.he_normal) is init.he_normal
    assert init.get("HeNormal") is init.he_normal  # Keras class-style names
    assert init.get("GlorotUniform") is init.glorot_uniform


def test_parametrized_factories():
    np.testing.assert_array_equal(host("constant", value=0.5), np.full((5, 4), 0.5, np.float32))
    with wf.use_backend("numpy"):
        np.testing.assert_array_equal(init.constant(0.5)(0, (2,)), [0.5, 0.5])
    np.testing.assert_array_equal(host("zeros"), np.zeros((5, 4)))
    np.testing.assert_array_equal(host("ones"), np.ones((5, 4)))
    u = host("uniform", shape=(1000,), minval=2.0, maxval=3.0)
    assert u.min() >= 2.0 and u.max() < 3.0
    n = host("normal", shape=(100_000,), dtype="float64", mean=1.0, stddev=2.0)
    assert abs(n.mean() - 1.0) < 0.03 and abs(n.std() - 2.0) < 0.03
    g = host("orthogonal", shape=(6, 4), dtype="float64", gain=2.0)
    np.testing.assert_allclose(g.T @ g, 4.0 * np.eye(4), atol=1e-12)


def test_truncated_normal_stays_within_two_stddev():
    w = host("truncated_normal", shape=(200_000,), dtype="float64")
    assert np.abs(w).max() <= 2 * 0.05
    assert np.abs(w).max() > 1.9 * 0.05  # redrawn, not squeezed: the tails are still reached
    # Clipping would pile ~4.6% of the mass at the edge; the truncated density puts ~0.1% there.
    assert np.mean(np.abs(w) > 1.99 * 0.05) < 0.005
    s = host("truncated_normal", shape=(2000,), dtype="float64", mean=5.0, stddev=0.1)
    assert np.all(np.abs(s - 5.0) <= 0.2 + 1e-12)


@pytest.mark.parametrize("shape", [(8, 5), (5, 5), (3, 3, 4, 6)])
def test_orthogonal(shape):
    w = host("orthogonal", shape=shape, dtype="float64").reshape(-1, shape[-1])
    np.testing.assert_allclose(w.T @ w, np.eye(shape[-1]), atol=1e-12)
    wide = host("orthogonal", shape=(3, 7), dtype="float64")
    np.testing.assert_allclose(wide @ wide.T, np.eye(3), atol=1e-12)


def test_float64_on_numpy():
    with wf.use_backend("numpy"):
        w = init.he_normal(0, (4, 3), "float64")
    assert isinstance(w, np.ndarray) and w.dtype == np.float64
    np.testing.assert_array_equal(w.astype(np.float32), host("he_normal", shape=(4, 3)))


@pytest.mark.parametrize(
    ("shape", "fans"),
    [((), (1, 1)), ((7,), (7, 7)), ((3, 2), (3, 2)), ((3, 5, 4, 6), (60, 90)), ((2, 3, 4), (6, 8))],
)
def test_compute_fans(shape, fans):
    assert init.compute_fans(shape) == fans


def test_conv_kernel_uses_receptive_field():
    w = host("he_normal", key=5, shape=(3, 3, 64, 128), dtype="float64")
    assert w.shape == (3, 3, 64, 128)
    assert abs(w.var() / (2 / (3 * 3 * 64)) - 1) < 0.02


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"Unknown initializer 'he_nrmal'\. Expected one of") as e:
        init.get("he_nrmal")
    assert "'he_normal'" in str(e.value) and "'xavier_uniform'" in str(e.value)


@pytest.mark.parametrize("bad", [3, None, 1.5])
def test_bad_identifier_type_names_the_type(bad):
    with pytest.raises(TypeError, match=type(bad).__name__):
        init.get(bad)


def test_kwargs_for_a_plain_initializer_are_rejected():
    with pytest.raises(TypeError, match="takes no arguments"):
        init.get("he_normal", value=1.0)


@pytest.mark.parametrize("shape", [(3, 0), (3, -2), 5, (3.0, 2), "3x2", (True, 2), None])
def test_bad_shape_is_named(shape):
    with pytest.raises(ValueError, match=r"shape must be a tuple of positive ints, got shape="):
        init.glorot_uniform(0, shape)


@pytest.mark.parametrize("dtype", ["int32", "bool", "complex64", "floot32"])
def test_non_float_dtype_is_rejected(dtype):
    with pytest.raises(ValueError, match=r"dtype must be a floating dtype.*got dtype="):
        init.zeros(0, (2, 2), dtype)


def test_orthogonal_needs_two_dims():
    with pytest.raises(ValueError, match="at least 2 dims"):
        init.orthogonal()(0, (4,))
