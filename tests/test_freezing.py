"""Freezing and per-group optimizers: frozen params stay bit-identical, get no optimizer state,
no clipping share and no backward pass; partition gives each group its optimizer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import wframe as wf
from wframe.layers import Dense, Dropout, Layer, Sequential
from wframe.testing import assert_close
from wframe.tree import flatten


def _data(n=48):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 6)).astype(np.float32), rng.integers(0, 3, n)


def _model(extra=()):
    body = Sequential(
        [Dense(12, activation="relu"), *extra, Dense(12, activation="tanh")], name="body"
    )
    return wf.Sequential([body, Dropout(0.1), Dense(3, name="head")], seed=1)


def _host(tree):
    return {k: wf.to_numpy(v).copy() for k, v in flatten(tree)}


@pytest.mark.parametrize("spe", [1, "epoch"])
def test_frozen_params_stay_bit_identical_and_get_no_optimizer_state(backend, spe):
    x, y = _data()
    model = _model().build((None, 6)).freeze("body/*")
    before = _host(model.params)
    model.fit(
        x,
        y,
        epochs=3,
        batch_size=16,
        optimizer=wf.optimizers.adamw(1e-2, weight_decay=0.5),
        global_clipnorm=0.5,
        steps_per_execution=spe,
        verbose=0,
    )
    after = _host(model.params)
    for name in before:
        same = np.array_equal(before[name], after[name])
        assert same == name.startswith("body/"), name
    assert model.trainable == {n: not n.startswith("body/") for n in before}
    state_names = [n for n, _ in flatten(model.opt_state)]
    assert not any("body" in n for n in state_names)
    assert any("head/W" in n for n in state_names)


def test_clip_norm_covers_trainable_params_only(backend):
    x, y = _data(16)
    model = _model().build((None, 6))
    _, grads = model.value_and_grad(x, y)  # the dropout key of the next fit step
    head = np.sqrt(sum((wf.to_numpy(g) ** 2).sum() for _, g in flatten(grads["head"])))
    model.freeze(["body"])
    hist = model.fit(
        x,
        y,
        epochs=1,
        batch_size=16,
        optimizer=wf.optimizers.sgd(0.1),
        global_clipnorm=1e-3,
        shuffle=False,
        verbose=0,
    )
    assert_close(hist.history["grad_norm"][0], head, rtol=1e-5)


@dataclass(frozen=True)
class Spy(Layer):
    """An identity layer with a hand-written backward that counts its calls."""

    calls = []

    def init(self, key, in_shape, *, dtype="float32"):
        return {}, {}, in_shape

    def forward(self, params, state, x, *, train=False, key=None):
        def backprop(dy, input_grad=True):
            Spy.calls.append(input_grad)
            return dy, {}

        return x, state, backprop


def test_a_frozen_body_is_not_traversed_backward_on_numpy():
    x, y = _data(16)
    with wf.use_backend("numpy"):
        model = wf.Sequential([Spy(), Dense(8, activation="relu"), Dense(3)]).build((None, 6))
        Spy.calls.clear()
        model.fit(x, y, epochs=1, batch_size=16, verbose=0)
        assert len(Spy.calls) == 1  # trainable: the chain goes down to the first layer
        model.freeze("dense_0")
        Spy.calls.clear()
        model.fit(x, y, epochs=1, batch_size=16, verbose=0)
        assert Spy.calls == []
        # asked for one layer's gradients, the chain returns only those
        p = model.params
        _, _, back = model.apply(p, {}, wf.backends.get_backend().asarray(x), train=True)
        need = {"dense_1": {"W": True, "b": True}}
        _, g = back(
            wf.backends.get_backend().asarray(np.ones((16, 3), np.float32)),
            input_grad=False,
            need=need,
        )
        assert set(g) == {"dense_1"}


def test_numpy_and_jax_agree_with_a_frozen_body(jax):
    x, y = _data()
    runs = []
    for name in ("numpy", "jax"):
        with wf.use_backend(name):
            model = _model().build((None, 6)).freeze("body/dense_0")
            model.fit(x, y, epochs=2, batch_size=16, optimizer="adam", verbose=0)
            runs.append(_host(model.params))
    for name in runs[0]:
        assert_close(runs[0][name], runs[1][name], rtol=1e-4, atol=1e-6)


def test_make_train_step_with_frozen_params(backend):
    x, y = _data(16)
    model = _model().build((None, 6)).freeze("body")
    sgd = wf.optimizers.sgd(0.1)
    step = wf.make_train_step(model, "softmax_cross_entropy", sgd)
    ts = wf.TrainState(backend.copy(model.params), model.state, sgd.init(model.trainable_params))
    ts, _ = step(
        ts,
        backend.asarray(x),
        backend.asarray(y, dtype="int32"),
        wf.random.array_key(0, 0, backend),
    )
    new, old = _host(ts.params), _host(model.params)
    assert all(np.array_equal(new[n], old[n]) == n.startswith("body/") for n in old)


def test_unfreeze_and_summary_counts():
    model = _model().build((None, 6))
    total = model.count_params()
    model.freeze("body")
    text = model.summary(print_fn=lambda s: None)
    head = 12 * 3 + 3
    assert f"Trainable params: {head:,}; frozen params: {total - head:,}" in text
    model.unfreeze("body/dense_1")
    assert model.frozen == {"body/dense_0/W", "body/dense_0/b"}
    model.unfreeze()
    assert model.frozen == frozenset() and all(model.trainable.values())


def test_bad_freeze_requests_are_refused():
    model = _model()
    with pytest.raises(RuntimeError, match="no params yet"):
        model.freeze("body")
    model.build((None, 6))
    with pytest.raises(
        ValueError,
        match=r"freeze: 'bdy' names no parameter of the model; its "
        r"parameters are \['body/dense_0/W'",
    ):
        model.freeze("bdy")
    with pytest.raises(TypeError, match="freeze: expected a name, a glob or a list"):
        model.freeze(3)


def test_partition_gives_each_group_its_optimizer(backend):
    x, y = _data()
    model = _model().build((None, 6))
    before = _host(model.params)
    opt = wf.optimizers.partition(
        {"body": wf.optimizers.sgd(0.0), "head": wf.optimizers.adam(1e-2)},
        {"head": "head", "*": "body"},
    )
    model.fit(x, y, epochs=2, batch_size=16, optimizer=opt, verbose=0)
    after = _host(model.params)
    for name in before:
        assert np.array_equal(before[name], after[name]) == (not name.startswith("head/"))
    assert list(model.opt_state.inner_states) == ["body", "head"]
    # labels as a function of the flat name, and a lower body rate really applies
    fn = wf.optimizers.partition(
        {"slow": wf.optimizers.sgd(1e-3), "fast": wf.optimizers.sgd(1e-1)},
        lambda name: "fast" if name.startswith("head") else "slow",
    )
    g = {
        "body": {"dense_0": {"W": backend.asarray(np.ones((2, 2), np.float32))}},
        "head": {"W": backend.asarray(np.ones(2, np.float32))},
    }
    updates, _ = fn.update(g, fn.init(g), g)
    assert_close(updates["body"]["dense_0"]["W"], np.full((2, 2), -1e-3), rtol=1e-6)
    assert_close(updates["head"]["W"], np.full(2, -0.1), rtol=1e-6)


def test_partition_matches_optax_multi_transform(jax):
    optax = pytest.importorskip("optax")
    x, y = _data()
    runs = []
    for opt in (
        wf.optimizers.partition(
            {"a": wf.optimizers.sgd(0.05), "b": wf.optimizers.adam(1e-2)}, {"head": "b", "*": "a"}
        ),
        optax.multi_transform(
            {"a": optax.sgd(0.05), "b": optax.adam(1e-2)},
            lambda p: {
                k: jax.tree.map(lambda _, k=k: "b" if k == "head" else "a", v) for k, v in p.items()
            },
        ),
    ):
        with wf.use_backend("jax"):
            model = _model().build((None, 6))
            model.fit(x, y, epochs=2, batch_size=16, optimizer=opt, verbose=0)
            runs.append(_host(model.params))
    for name in runs[0]:
        assert_close(runs[0][name], runs[1][name], rtol=1e-5, atol=1e-7)


def test_partition_errors_name_the_param():
    g = {"dense_0": {"W": np.ones(2, np.float32)}}
    opt = wf.optimizers.partition({"a": wf.optimizers.sgd(0.1)}, {"head*": "a"})
    with pytest.raises(
        ValueError,
        match=r"no pattern of \['head\*'\] matches the param "
        r"'dense_0/W'",
    ):
        opt.init(g)
    opt = wf.optimizers.partition({"a": wf.optimizers.sgd(0.1)}, lambda name: "b")
    with pytest.raises(ValueError, match=r"'dense_0/W' has label 'b', which has no optimizer"):
        opt.init(g)


def test_pruning_zeroes_moments_inside_partitions_and_trainable_parts(backend):
    x, y = _data()
    opt = wf.optimizers.partition(
        {"a": wf.optimizers.adam(1e-2), "b": wf.optimizers.adam(1e-3)}, {"head": "b", "*": "a"}
    )
    model = _model().build((None, 6)).freeze("body/dense_0")
    model.fit(x, y, epochs=1, batch_size=16, optimizer=opt, verbose=0)
    wf.pruning.prune(model, 0.5, include=["body/dense_1/W", "head/W"])
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    for label, inner in model.opt_state.inner_states.items():
        for name, mask in model.masks.items():
            for moment in (inner[0].mu, inner[0].nu):
                leaf = dict(flatten(moment)).get(name)
                if leaf is not None:
                    assert not np.any(wf.to_numpy(leaf)[wf.to_numpy(mask) == 0]), (label, name)


def test_value_and_grad_of_a_partly_frozen_model_leaves_the_frozen_params_out(backend):
    model = wf.Sequential([wf.layers.Dense(3), wf.layers.Dense(2)]).build((None, 4))
    model.freeze("dense_0")
    _, grads = model.value_and_grad(np.ones((2, 4)), np.array([0, 1]))
    assert list(grads) == ["dense_1"] and set(grads["dense_1"]) == {"W", "b"}
