"""Magnitude pruning: exact sparsities, masks through fit and make_train_step, the gradual
schedule, the report, strip_pruning and the error messages."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pytest

import wframe as wf
from wframe.callbacks import Callback
from wframe.layers import Conv2D, Dense, Flatten
from wframe.pruning import PruningSchedule, prune, sparsity_report, strip_pruning, to_sparse
from wframe.tree import flatten, tree_map

WEIGHTS = ("dense_0/W", "dense_1/W")


def mlp(seed=0):
    return wf.Sequential([Dense(16, activation="relu"), Dense(3)], seed=seed)


def cnn(seed=0):
    return wf.Sequential([Conv2D(4, 3, activation="relu"), Flatten(), Dense(3)], seed=seed)


def data(n=64, features=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)).astype(np.float32), rng.integers(0, 3, n)


def host(tree):
    """``{"dense_0/W": numpy copy, ...}`` of any backend's tree."""
    return {name: np.array(wf.to_numpy(a)) for name, a in flatten(tree)}


def zeros(model, names=WEIGHTS):
    params = host(model.params)
    return sum(int(np.sum(params[name] == 0)) for name in names)


def assert_masked_zero(model):
    """Pruned weights and their Adam moments (mu, nu) are exactly zero."""
    params, masks = host(model.params), host(model.masks)
    for name, mask in masks.items():
        assert np.all(params[name][mask == 0] == 0), name
    for kind in ("mu", "nu"):
        found = moments(model.opt_state, kind)
        assert set(found) >= set(masks)
        for name, mask in masks.items():
            assert np.all(found[name][mask == 0] == 0), (kind, name)


def moments(opt_state, kind):
    """``{"dense_0/W": ...}`` of the ``kind`` ("mu", "nu") dict wherever it is nested (the
    state may be wrapped, e.g. in an InjectHyperparamsState)."""
    out = {}
    for path, leaf in host(opt_state).items():
        head, sep, name = path.partition(f"{kind}/")
        if sep and (not head or head.endswith("/")):
            out[name] = leaf
    return out


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_prune_zeroes_exactly_that_fraction_of_the_smallest_weights(backend, sparsity, scope):
    model = mlp().build((None, 8))
    before = host(model.params)
    assert prune(model, sparsity, scope=scope) is model
    after, masks = host(model.params), host(model.masks)
    assert set(masks) == set(WEIGHTS)  # biases are not pruned by default
    for name in ("dense_0/b", "dense_1/b"):
        np.testing.assert_array_equal(after[name], before[name])
    for name in WEIGHTS:
        np.testing.assert_array_equal(masks[name] == 0, after[name] == 0)
        kept = masks[name] != 0
        np.testing.assert_array_equal(after[name][kept], before[name][kept])
        if scope == "layer":
            assert int(np.sum(after[name] == 0)) == round(sparsity * after[name].size)
    n = sum(before[name].size for name in WEIGHTS)
    assert zeros(model) == round(sparsity * n)
    if scope == "global":  # one threshold: every pruned weight is below every kept one
        w = np.concatenate([np.abs(before[name]).ravel() for name in WEIGHTS])
        m = np.concatenate([masks[name].ravel() for name in WEIGHTS])
        assert w[m == 0].max() <= w[m != 0].min()


def test_layer_scope_on_a_conv_kernel(backend):
    model = cnn().build((None, 6, 6, 2))
    before = host(model.params)
    prune(model, 0.7, scope="layer")
    params = host(model.params)
    assert set(host(model.masks)) == {"conv2d_0/W", "dense_0/W"}
    for name in ("conv2d_0/W", "dense_0/W"):
        assert int(np.sum(params[name] == 0)) == round(0.7 * params[name].size)
    np.testing.assert_array_equal(params["conv2d_0/b"], before["conv2d_0/b"])


def test_include_exclude_and_biases(backend):
    model = prune(mlp().build((None, 8)), 0.5, include="dense_0/*")
    assert set(host(model.masks)) == {"dense_0/W"}
    model = prune(mlp().build((None, 8)), 0.5, include=["dense_1/W"], exclude_bias=False)
    assert set(host(model.masks)) == {"dense_1/W"}
    model = prune(mlp().build((None, 8)), 0.5, exclude=lambda name: name.startswith("dense_0"))
    assert set(host(model.masks)) == {"dense_1/W"}
    model = prune(mlp().build((None, 8)), 0.5, scope="layer", exclude_bias=False)
    masks = host(model.masks)
    assert set(masks) == {*WEIGHTS, "dense_0/b", "dense_1/b"}
    assert int(np.sum(masks["dense_0/b"] == 0)) == 8


def test_pruning_again_keeps_what_was_pruned(backend):
    model = prune(mlp().build((None, 8)), 0.5)
    first = host(model.masks)
    prune(model, 0.3)  # lower: nothing more, nothing revived
    for name in WEIGHTS:
        np.testing.assert_array_equal(host(model.masks)[name], first[name])
    prune(model, 0.8)
    for name in WEIGHTS:
        assert np.all(host(model.masks)[name][first[name] == 0] == 0)
    assert zeros(model) == round(0.8 * 176)


def test_fit_keeps_pruned_weights_and_adam_moments_at_zero(backend):
    x, y = data(48)  # 6 steps per epoch: 2 calls of 3, or 1 call
    model = mlp()
    model.fit(x, y, batch_size=8, verbose=0, steps_per_execution=3)
    assert np.all(moments(model.opt_state, "mu")["dense_0/W"] != 0)  # Adam has state to zero
    prune(model, 0.8)
    assert_masked_zero(model)  # right away: the moments of the pruned weights are zeroed
    for per_call in (3, "epoch"):
        before = host(model.params)
        model.fit(x, y, epochs=2, batch_size=8, verbose=0, steps_per_execution=per_call)
        assert_masked_zero(model)
        after, kept = host(model.params), host(model.masks)["dense_1/W"] != 0
        assert np.mean(after["dense_1/W"][kept] != before["dense_1/W"][kept]) > 0.9  # trained
        assert zeros(model) == round(0.8 * 176)


def test_make_train_step_with_masks(backend):
    model = prune(mlp().build((None, 8)), 0.6)
    adam = wf.optimizers.adam(0.05)
    step = wf.make_train_step(model, "softmax_cross_entropy", adam)
    # The step consumes (donates on JAX) the whole state, masks included: pass copies.
    ts = backend.copy(
        wf.TrainState(model.params, model.state, adam.init(model.params), model.masks)
    )
    x, y = data()
    xb, yb = backend.asarray(x), backend.asarray(y, dtype="int32")
    for _ in range(5):
        ts, _ = step(ts, xb, yb)
    params, masks = host(ts.params), host(model.masks)
    for name in WEIGHTS:
        off = masks[name] == 0
        assert np.all(params[name][off] == 0)
        assert np.all(moments(ts.opt_state, "mu")[name][off] == 0)
        assert np.all(moments(ts.opt_state, "nu")[name][off] == 0)
        assert np.any(moments(ts.opt_state, "nu")[name][~off] != 0)
    for name, mask in host(model.masks).items():  # the model's own arrays are intact
        assert np.all(host(model.params)[name][mask == 0] == 0)


class Wrapped(NamedTuple):  # shaped like optax's InjectHyperparamsState
    count: object
    hyperparams: dict
    inner_state: object


def test_prune_zeroes_moments_in_any_nesting_of_the_optimizer_state(backend):
    model = mlp().build((None, 8))
    ones = lambda tree: tree_map(lambda a: a + 1, tree)  # noqa: E731
    adam_state = ones(wf.optimizers.scale_by_adam().init(model.params))
    trace = wf.optimizers.TraceState(trace=backend.copy(adam_state.mu))
    model.opt_state = Wrapped(
        adam_state.count, {"learning_rate": backend.asarray(0.1)}, [trace, {"extra": adam_state}]
    )
    prune(model, 0.5)
    state, masks = host(model.opt_state), host(model.masks)
    assert float(state["hyperparams/learning_rate"]) == pytest.approx(0.1)
    for prefix in ("inner_state/0/trace", "inner_state/1/extra/mu", "inner_state/1/extra/nu"):
        for name in WEIGHTS:
            leaf = state[f"{prefix}/{name}"]
            assert np.all(leaf[masks[name] == 0] == 0) and np.any(leaf != 0), prefix
        assert np.all(state[f"{prefix}/dense_0/b"] != 0)


class Sparsities(Callback):
    def __init__(self):
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(zeros(self.model) / 176)


@pytest.mark.parametrize(
    "per_call, steps",
    [
        (1, [3, 7, 11, 15, 19, 23, 27]),
        (3, [3, 9, 12, 15, 21, 24, 27]),
        ("epoch", [6, 12, 18, 24, 30]),
    ],
)
def test_schedule_follows_the_polynomial(backend, per_call, steps):
    # 48 examples, batches of 8: 6 steps per epoch, 30 in all, pruning planned at steps 3, 7,
    # ..., 27. The hook runs after every step, every 3rd, or every 6th: it prunes at the first
    # hook at or after each planned step, to the target of the step it is at.
    schedule = PruningSchedule(0.8, 0.1, begin_step=3, end_step=27, frequency=4)
    record = Sparsities()
    model = mlp()
    model.fit(
        *data(48),
        epochs=5,
        batch_size=8,
        verbose=0,
        steps_per_execution=per_call,
        callbacks=[schedule, record],
    )
    assert [t for t, _ in schedule.pruned] == steps
    formula = [0.8 + (0.1 - 0.8) * (1 - (min(t, 27) - 3) / 24) ** 3 for t in steps]
    np.testing.assert_allclose([s for _, s in schedule.pruned], formula, rtol=1e-12)
    for epoch, seen in enumerate(record.seen):  # at each epoch end: the last pruning's target
        last = max(t for t in steps if t <= 6 * (epoch + 1))
        assert seen == round(schedule.sparsity_at(last) * 176) / 176
    assert zeros(model) == round(0.8 * 176)
    assert_masked_zero(model)


def test_schedule_counts_steps_across_fit_calls_and_defaults_end_step(backend):
    schedule = PruningSchedule(0.5, frequency=8)
    model = mlp()
    model.fit(*data(), epochs=2, batch_size=8, verbose=0, callbacks=[schedule])
    assert schedule.end_step == 16 and schedule.pruned[-1] == (16, 0.5)
    assert [t for t, _ in schedule.pruned] == [1, 8, 16]  # begin_step=0: the first hook
    model.fit(*data(), epochs=3, initial_epoch=2, batch_size=8, verbose=0, callbacks=[schedule])
    assert len(schedule.pruned) == 3 and schedule.end_step == 16  # past end_step: done
    assert zeros(model) == round(0.5 * 176)


def test_sparsity_report(backend):
    model = prune(mlp().build((None, 8)), 0.75, scope="layer")
    lines = []
    rows = sparsity_report(model, print_fn=lines.append)
    names = ["dense_0/W", "dense_0/b", "dense_1/W", "dense_1/b", "total"]
    assert [r["name"] for r in rows] == names
    assert rows[0] == {
        "name": "dense_0/W",
        "shape": (8, 16),
        "size": 128,
        "nonzero": 32,
        "sparsity": 0.75,
    }
    assert rows[2]["nonzero"] == 12 and rows[3]["sparsity"] == 1.0  # biases start at zero
    assert rows[-1] == {
        "name": "total",
        "shape": None,
        "size": 195,
        "nonzero": 44,
        "sparsity": 1 - 44 / 195,
    }
    assert "dense_0/W" in lines[0] and "75.00%" in lines[0] and "total" in lines[0]


def test_strip_pruning_returns_an_unmasked_copy(backend):
    model = prune(mlp().build((None, 8)), 0.8)
    stripped = strip_pruning(model)
    assert stripped is not model and stripped.masks is None and model.masks is not None
    for name, a in host(model.params).items():
        np.testing.assert_array_equal(host(stripped.params)[name], a)
    before = host(model.params)
    stripped.fit(*data(), epochs=1, batch_size=8, verbose=0)
    assert zeros(stripped) < zeros(model)  # the copy's zeros grow back
    for name, a in host(model.params).items():  # the pruned model did not change
        np.testing.assert_array_equal(a, before[name])


def test_to_sparse(backend):
    pytest.importorskip("scipy")
    model = prune(mlp().build((None, 8)), 0.9)
    matrices = to_sparse(model)
    assert set(matrices) == set(WEIGHTS)
    assert sum(m.nnz for m in matrices.values()) == 176 - zeros(model)
    np.testing.assert_array_equal(matrices["dense_1/W"].toarray(), host(model.params)["dense_1/W"])


def test_bad_input(backend):
    with pytest.raises(RuntimeError, match=r"no params yet.*build"):
        prune(mlp(), 0.5)
    with pytest.raises(RuntimeError, match="build"):
        sparsity_report(mlp())
    model = mlp().build((None, 8))
    for bad in (1.0, -0.1, math.nan, "0.5", True):
        with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
            prune(model, bad)
    with pytest.raises(ValueError, match=r"scope must be one of \('global', 'layer'\).*'per'"):
        prune(model, 0.5, scope="per")
    with pytest.raises(ValueError, match=r"include: 'conv\*' matches no param.*dense_0/W"):
        prune(model, 0.5, include="conv*")
    with pytest.raises(ValueError, match=r"exclude: 'x' matches no param"):
        prune(model, 0.5, exclude=["dense_0/W", "x"])
    with pytest.raises(ValueError, match=r"no param to prune.*exclude_bias"):
        prune(model, 0.5, include="*/b")
    with pytest.raises(TypeError, match="include must be a glob"):
        prune(model, 0.5, include=3)
    assert model.masks is None  # a refused call changed nothing
    for kwargs, message in [
        ({"final_sparsity": 1.5}, "final_sparsity must be a number in"),
        ({"final_sparsity": 0.5, "initial_sparsity": 0.6}, "initial_sparsity must be <="),
        ({"final_sparsity": 0.5, "begin_step": -1}, "begin_step must be an int >= 0"),
        ({"final_sparsity": 0.5, "begin_step": 10, "end_step": 10}, "end_step must be an int >="),
        ({"final_sparsity": 0.5, "frequency": 0}, "frequency must be an int >= 1"),
        ({"final_sparsity": 0.5, "power": 0}, "power must be a number > 0"),
        ({"final_sparsity": 0.5, "scope": "all"}, "scope must be one of"),
    ]:
        with pytest.raises(ValueError, match=message):
            PruningSchedule(**kwargs)
    with pytest.raises(ValueError, match="matches no param"):  # before the first step
        mlp().fit(*data(), verbose=0, callbacks=[PruningSchedule(0.5, include="conv*")])


def test_numpy_and_jax_prune_and_train_the_same(jax):
    results = []
    for name in ("numpy", "jax"):
        with wf.use_backend(name):
            model = prune(mlp(seed=3).build((None, 8)), 0.7)
            model.fit(
                *data(),
                epochs=3,
                batch_size=8,
                verbose=0,
                callbacks=[PruningSchedule(0.9, 0.7, begin_step=8, end_step=16, frequency=4)],
            )
            results.append((host(model.params), host(model.masks)))
    (p_np, m_np), (p_jax, m_jax) = results
    for name in m_np:
        np.testing.assert_array_equal(m_np[name], m_jax[name])
    for name in p_np:
        np.testing.assert_allclose(p_np[name], p_jax[name], rtol=1e-4, atol=1e-6)
