"""NumPy's compiled train step (wframe.training.host_plan) against the general step it stands
in for: the same weights bit for bit, the same history, where it applies (chains of Dense
layers, any activation, nested chains and models, every optimizer, float64, the in-step guard)
and the general step where it does not (a batch it was not made for, pruning masks, weighted
labels, layers without a plan, a Dense subclass with its own forward, a mixed policy).
Dropout's plan is its forward: the same masks, from the step's key folded as the chain folds it."""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe import activations
from wframe.layers import BatchNormalization, Dense, Dropout, Sequential
from wframe.training import guard, step
from wframe.tree import flatten


def _data(n=70, features=6, classes=3, dtype=np.float32):
    rng = np.random.default_rng(1)
    return rng.standard_normal((n, features)).astype(dtype), rng.integers(0, classes, n)


def _mlp(dtype="float32", **dense):
    return wf.Sequential([Dense(8, activation="relu", **dense), Dense(3)], seed=3, dtype=dtype)


def _tanh_by_hand(x):  # a user's activation: no fused kernel
    y = np.tanh(x)
    return y, lambda dy: dy * (1 - y * y)


MODELS = {
    "mlp": _mlp,
    "float64": lambda: _mlp("float64"),
    "no_bias": lambda: _mlp(use_bias=False),
    "activations": lambda: wf.Sequential(
        [Dense(8, activation="tanh"), Dense(8, activation=_tanh_by_hand), Dense(3, "softmax")],
        seed=3,
    ),
    "nested": lambda: wf.Sequential(
        [Sequential([Dense(8, activation="relu"), Dense(8, activation="gelu")]), Dense(3)], seed=3
    ),
    "model_in_model": lambda: wf.Sequential([_mlp(), Dense(3)], seed=3),
    # Keras' idiom: a softmax output, the loss of probabilities (LOSSES): the chain's kernel.
    "softmax_output": lambda: wf.Sequential([Dense(8, "relu"), Dense(3, "softmax")], seed=3),
    # Keyed: the same masks as the general step's (the step's key folded per position).
    "dropout": lambda: wf.Sequential(
        [Dense(8, "relu"), Dropout(0.3), Sequential([Dense(8, "relu"), Dropout(0.5)]), Dense(3)],
        seed=3,
    ),
}

OPTIMIZERS = {
    "sgd": lambda: wf.optimizers.sgd(0.05),
    "momentum": lambda: wf.optimizers.sgd(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: wf.optimizers.adam(1e-2),
    "settable_adam": lambda: wf.optimizers.inject_hyperparams(wf.optimizers.adam)(
        learning_rate=1e-2
    ),
    "lion": lambda: wf.optimizers.lion(1e-3),  # checked per step (no deferred check)
}


@pytest.fixture
def count_planned(monkeypatch):
    """``calls``: how many steps the plan ran itself (not passed to the general step)."""
    calls = [0]
    made = step.planned_step

    def counting(*args, **kwargs):
        core = made(*args, **kwargs)
        if core is None:
            return None
        general = args[5]

        def counted(ts, x, y, key, allowed):
            passed = [False]

            def marking(*a):
                passed[0] = True
                return general(*a)

            out = made(*args[:5], marking, **kwargs)(ts, x, y, key, allowed)
            calls[0] += not passed[0]
            return out

        return counted

    monkeypatch.setattr(step, "planned_step", counting)
    return calls


def _fit(make, tx, planned: bool, monkeypatch, loss=None, **kw):
    with monkeypatch.context() as m:
        if not planned:
            m.setattr(step, "planned_step", lambda *a, **k: None)
        model = make()
        x, y = _data(dtype=np.float64 if model.dtype == "float64" else np.float32)
        model.compile(optimizer=tx(), loss=loss or wf.losses.SoftmaxCrossEntropy())
        history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, **kw)
    return dict(flatten(model.params)), history.history


def _same(a, b):
    (wa, ha), (wb, hb) = a, b
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
    assert ha == hb


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_plan_gives_the_general_steps_weights_bit_for_bit(name, monkeypatch, count_planned):
    # A softmax output: the loss of probabilities.
    softmax = name in ("activations", "softmax_output")
    loss = wf.losses.get("sparse_categorical_crossentropy") if softmax else None
    with wf.use_backend("numpy"):
        general = _fit(MODELS[name], OPTIMIZERS["adam"], False, monkeypatch, loss)
        planned = _fit(MODELS[name], OPTIMIZERS["adam"], True, monkeypatch, loss)
    assert count_planned[0] == 15  # 5 batches x 3 epochs, each by the plan
    _same(general, planned)


@pytest.mark.parametrize("tx", sorted(OPTIMIZERS))
@pytest.mark.parametrize("checked", ["deferred", "in_step"])
def test_the_plan_runs_every_optimizer_and_either_check(tx, checked, monkeypatch, count_planned):
    if checked == "in_step":  # a train state over the replay's limit: checked in each step
        monkeypatch.setattr(guard, "HOST_REPLAY_BYTES", 0)
    with wf.use_backend("numpy"):
        general = _fit(_mlp, OPTIMIZERS[tx], False, monkeypatch, steps_per_execution=2)
        planned = _fit(_mlp, OPTIMIZERS[tx], True, monkeypatch, steps_per_execution=2)
    assert count_planned[0] == 15
    _same(general, planned)


def _sqrt_abs(z):  # finite at 0, its gradient there NaN
    y = np.sqrt(np.abs(z))
    return y, lambda dy: dy * np.sign(z) * 0.5 / y


@pytest.mark.parametrize("checked", ["deferred", "in_step"])
def test_a_nonfinite_step_stops_the_planned_fit_where_the_general_one_stops(checked, monkeypatch):
    if checked == "in_step":
        monkeypatch.setattr(guard, "HOST_REPLAY_BYTES", 0)
    x, y = _data()
    x[50] = 0  # the fourth batch (shuffle off): a NaN gradient under a finite loss
    results = []
    for planned in (False, True):
        with monkeypatch.context() as m, wf.use_backend("numpy"):
            if not planned:
                m.setattr(step, "planned_step", lambda *a, **k: None)
            model = wf.Sequential([Dense(4, activation=_sqrt_abs, use_bias=False), Dense(3)])
            model.compile(optimizer=wf.optimizers.sgd(0.1), loss=wf.losses.SoftmaxCrossEntropy())
            with np.errstate(all="ignore"), pytest.warns(RuntimeWarning, match="at step 4"):
                h = model.fit(x, y, epochs=3, batch_size=16, verbose=0, shuffle=False)
            results.append((dict(flatten(model.params)), h.history, model.steps))
    (wa, ha, sa), (wb, hb, sb) = results
    assert sa == sb == 3  # the weights of the three steps before it
    _same((wa, ha), (wb, hb))


def _spy_general(monkeypatch):
    """Count the batches the plan hands to the general step."""
    handed = [0]
    made = step.planned_step

    def spying(*args, **kwargs):
        general = args[5]

        def marking(*a):
            handed[0] += 1
            return general(*a)

        return made(*args[:5], marking, **kwargs)

    monkeypatch.setattr(step, "planned_step", spying)
    return handed


def test_what_the_plan_was_not_made_for_runs_the_general_step(monkeypatch):
    x, y = _data()
    with wf.use_backend("numpy"):
        # Weighted labels, then a pruned model (masks): each batch goes to the general step.
        handed = _spy_general(monkeypatch)
        model = _mlp()
        model.compile(optimizer=wf.optimizers.sgd(0.1), loss=wf.losses.SoftmaxCrossEntropy())
        model.fit(x, y, sample_weight=np.linspace(0, 1, len(y)), batch_size=16, verbose=0)
        assert handed[0] == 5
        wf.pruning.prune(model, 0.5)
        model.fit(x, y, batch_size=16, verbose=0)
        assert handed[0] == 10
        assert (dict(flatten(model.params))["dense_0/W"] == 0).mean() >= 0.5
        # A float64 batch for a float32 model, through make_train_step: the general step.
        train = wf.make_train_step(model, wf.losses.SoftmaxCrossEntropy(), wf.optimizers.sgd(0.1))
        train(model.train_state, x[:8].astype(np.float64), y[:8])
        assert handed[0] == 11


class _Doubled(Dense):
    """A user's Dense with a forward of its own."""

    def forward(self, params, state, x, *, train=False, key=None, vjp=True):
        y, state, back = super().forward(params, state, x, train=train, key=key, vjp=vjp)
        return 2 * y, state, (lambda dy, **kw: back(2 * dy, **kw))


class _Shifted(Sequential):
    """A user's chain whose forward does more than its layers'."""

    def forward(self, params, state, x, **kw):
        y, state, back = super().forward(params, state, x, **kw)
        return y + 1, state, back


def _shared():  # one layer used twice (6 -> 6 each time)
    first = Dense(6)
    return wf.Sequential([first, first, Dense(3)], seed=3)


def test_a_layer_with_state_has_no_plan_and_its_model_none():
    with wf.use_backend("numpy") as b:
        assert BatchNormalization().planned(b.xp, (None, 6)) is None
        model = wf.Sequential([Dense(8, activation="relu"), BatchNormalization(), Dense(3)])
        model.build((None, 6))
        assert model.planned(b.xp, model.input_shape) is None


@pytest.mark.parametrize(
    "make",
    [
        lambda: wf.Sequential([_Doubled(8, activation="relu"), Dense(3)], seed=3),
        lambda: wf.Sequential([_Shifted([Dense(8, "relu")]), Dense(3)], seed=3),
        _shared,
        lambda: wf.Sequential([Dense(8), Dense(3)], seed=3, dtype="mixed_bfloat16"),
    ],
    ids=["subclass_forward", "chain_forward", "shared", "mixed"],
)
def test_a_forward_the_plan_cannot_stand_for_is_planned_as_itself(make, monkeypatch):
    """A subclass's own forward, a layer used twice, a mixed policy: the default plan (the
    layer's own apply) stands in, and the planned fit trains as the general one."""
    with wf.use_backend("numpy") as b:
        model = make()
        model.build((None, 6))
        run, _ = model.planned(b.xp, model.input_shape)
        x = _data()[0][:5]
        want = model.apply(model.params, model.state, x, train=True)[0]
        np.testing.assert_array_equal(run(model.params, x)[0], want)
        general = _fit(make, OPTIMIZERS["sgd"], False, monkeypatch)
        planned = _fit(make, OPTIMIZERS["sgd"], True, monkeypatch)
    _same(general, planned)


@pytest.mark.parametrize(
    "activation", ["relu", None, "softmax", "sigmoid", "gelu"]
)  # gelu: general
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("dy_dtype", [np.float32, np.float64])  # another dtype: relu's mask
def test_a_dense_plan_computes_its_forward_and_backprop(activation, use_bias, dy_dtype):
    rng = np.random.default_rng(0)
    layer = Dense(5, activation=activation, use_bias=use_bias, name="d")
    with wf.use_backend("numpy") as b:
        params, state, _ = layer.init(0, (None, 4))
        if use_bias:
            params["b"] = rng.standard_normal(5).astype(np.float32)
        x, dy = rng.standard_normal((7, 4)).astype(np.float32), rng.standard_normal((7, 5))
        run, out_shape = layer.plan(b.xp, (None, 4))
        assert out_shape == (None, 5)
        y, back = run(params, x)
        y_ref, _, back_ref = layer.apply(params, state, x, train=True)
        np.testing.assert_array_equal(y, y_ref)
        dy = dy.astype(dy_dtype)
        for input_grad in (True, False):
            (dx, grads), (dx_ref, grads_ref) = back(dy, input_grad), back_ref(dy, input_grad)
            assert (dx is None) == (dx_ref is None) == (not input_grad)
            if input_grad:
                np.testing.assert_array_equal(dx, dx_ref)
            assert grads.keys() == grads_ref.keys() == ({"W", "b"} if use_bias else {"W"})
            for k in grads:
                np.testing.assert_array_equal(grads[k], grads_ref[k])
        # Rank 3: the default plan (forward's reshaping path), the same outputs.
        x3 = rng.standard_normal((2, 3, 4)).astype(np.float32)
        run3, out3 = layer.plan(b.xp, (None, 3, 4))
        assert out3 == (None, 3, 5)
        np.testing.assert_array_equal(run3(params, x3)[0], layer.apply(params, state, x3)[0])
        # A float64 batch for float32 weights: the kernel declines, the general code runs.
        y64, _ = run(params, x.astype(np.float64))
        np.testing.assert_array_equal(y64, layer.apply(params, state, x.astype(np.float64))[0])
    z = np.array([[-1.0, 2.0]], np.float32)
    np.testing.assert_array_equal(activations.kernel(activations.relu, b.xp)(z)[0], [[0, 2]])


@pytest.mark.parametrize("dy_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("last", [None, "softmax", "sigmoid", "tanh"])
def test_a_chain_plan_computes_the_chains_forward_and_backprop(use_bias, dy_dtype, last):
    rng = np.random.default_rng(1)
    chain = Sequential(
        [Dense(6, "relu", use_bias=use_bias), Dense(5, "relu"), Dense(3, last, use_bias=use_bias)]
    )
    with wf.use_backend("numpy") as b:
        params, state, _ = chain.init(0, (None, 4))
        for p in params.values():
            if "b" in p:
                p["b"] = rng.standard_normal(p["b"].shape).astype(np.float32)
        run, out_shape = chain.plan(b.xp, (None, 4))
        assert out_shape == (None, 3) and run.__qualname__.startswith("dense_chain")
        x = rng.standard_normal((9, 4)).astype(np.float32)
        dy = rng.standard_normal((9, 3)).astype(dy_dtype)
        y, back = run(params, x)
        y_ref, _, back_ref = chain.apply(params, state, x, train=True)
        np.testing.assert_array_equal(y, y_ref)
        for input_grad in (True, False):
            (dx, grads), (dx_ref, grads_ref) = back(dy, input_grad), back_ref(dy, input_grad)
            assert (dx is None) == (dx_ref is None) == (not input_grad)
            if input_grad:
                np.testing.assert_array_equal(dx, dx_ref)
            assert list(grads) == list(grads_ref) == list(params)
            for name in grads:
                assert list(grads[name]) == list(grads_ref[name])
                for k in grads[name]:
                    np.testing.assert_array_equal(grads[name][k], grads_ref[name][k])
        # Weights of another dtype than the batch: the layers' own runs, the same values.
        y64, _ = run(params, x.astype(np.float64))
        np.testing.assert_array_equal(y64, chain.apply(params, state, x.astype(np.float64))[0])


def _sequence_data(n=70, steps=5, features=3, vocab=None):
    rng = np.random.default_rng(2)
    if vocab:
        return rng.integers(0, vocab, (n, steps)).astype(np.int32), rng.integers(0, 3, n)
    return rng.standard_normal((n, steps, features)).astype(np.float32), rng.integers(0, 3, n)


def _graph():
    inputs = wf.Input((5, 3))
    h = wf.layers.Flatten()(inputs)
    a, b = Dense(6, "relu")(h), Dense(6, "tanh")(h)
    return wf.Model(inputs, Dense(3)(wf.layers.Add()([a, b])), seed=3)


OTHER_MODELS = {  # the default plan: each layer's own apply, in the plan's step
    "cnn": lambda: wf.Sequential(
        [wf.layers.Conv1D(4, 3, activation="relu"), wf.layers.Flatten(), Dense(3)], seed=3
    ),
    "lstm": lambda: wf.Sequential([wf.layers.LSTM(4), Dense(3)], seed=3),
    "sequence_dense": lambda: wf.Sequential(  # a Dense on (batch, steps, features)
        [Dense(4, "relu"), wf.layers.GlobalAveragePooling1D(), Dense(3)], seed=3
    ),
    "embedding": lambda: wf.Sequential(
        [wf.layers.Embedding(11, 4), wf.layers.GlobalAveragePooling1D(), Dense(3)], seed=3
    ),
    "graph": _graph,
    "layer_norm": lambda: wf.Sequential(
        [wf.layers.Flatten(), Dense(6), wf.layers.LayerNormalization(), Dense(3)], seed=3
    ),
}


@pytest.mark.parametrize("name", sorted(OTHER_MODELS))
def test_other_stateless_models_train_through_the_plan_as_through_the_general_step(
    name, monkeypatch, count_planned
):
    x, y = _sequence_data(vocab=11 if name == "embedding" else None)
    results = []
    for planned in (False, True):
        with monkeypatch.context() as m, wf.use_backend("numpy"):
            if not planned:
                m.setattr(step, "planned_step", lambda *a, **k: None)
            model = OTHER_MODELS[name]()
            model.compile(optimizer=wf.optimizers.adam(1e-2), loss=wf.losses.SoftmaxCrossEntropy())
            h = model.fit(x, y, epochs=3, batch_size=16, verbose=0)
            results.append((dict(flatten(model.params)), h.history))
    assert count_planned[0] == 15
    _same(*results)
