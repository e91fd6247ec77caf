"""NumPy's ``predict`` and ``evaluate`` through a model's inference plan
(wframe.training.host_plan.planned_forward) against the general forward they stand in for: the
same outputs bit for bit, Dropout inactive, and the general forward for what the plan was not
made for (another dtype, a user's plan that knows only training). The models (mixed
precision, residuals, convolutions, recurrent layers, graphs of several inputs or outputs,
nested models) also train through the plan as through the general step, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe.layers import Dense, Dropout, Sequential
from wframe.training import host_plan, step, trainer
from wframe.tree import flatten


def _graph(dtype="float32"):
    inputs = wf.Input((12,))
    a, b = Dense(6, "relu")(inputs), Dense(6, "tanh")(inputs)
    return wf.Model(inputs, Dense(3)(wf.layers.Add()([a, b])), seed=3, dtype=dtype)


MODELS = {
    "mlp": lambda: wf.Sequential([Dense(8, "relu"), Dense(3)], seed=3),
    "float64": lambda: wf.Sequential([Dense(8, "relu"), Dense(3)], seed=3, dtype="float64"),
    "softmax_output": lambda: wf.Sequential([Dense(8, "tanh"), Dense(3, "softmax")], seed=3),
    "dropout": lambda: wf.Sequential(
        [Dense(8, "relu"), Dropout(0.5), Sequential([Dense(8, "sigmoid"), Dropout(0.3)]), Dense(3)],
        seed=3,
    ),
    "mixed_layers": lambda: wf.Sequential(
        [wf.layers.Reshape((4, 3)), wf.layers.Conv1D(4, 2), wf.layers.Flatten(), Dense(3)], seed=3
    ),
    "graph": _graph,
    "graph_two_inputs": lambda: _two_inputs(),
    "graph_two_outputs": lambda: _two_outputs(),
    "mixed_bfloat16": lambda: wf.Sequential([Dense(8, "relu"), Dense(3)], dtype="mixed_bfloat16"),
    "residual_conv2d": lambda: wf.Sequential(
        [wf.layers.Reshape((3, 4, 1)), wf.layers.Conv2D(2, 2, activation="relu")]
        + [wf.layers.Flatten(), wf.layers.Residual(Dense(12, "tanh")), Dense(3)],
        seed=3,
    ),
    "bidirectional": lambda: wf.Sequential(
        [wf.layers.Reshape((4, 3)), wf.layers.Bidirectional(wf.layers.LSTM(3)), Dense(3)], seed=3
    ),
    "nested_built": lambda: wf.Sequential(
        [wf.Sequential([Dense(7, "relu")], seed=2).build((None, 12)), Dense(3)], seed=3
    ),
    "regularized": lambda: wf.Sequential(  # the general step (no plan), the inference plan
        [Dense(8, "relu", kernel_regularizer=wf.regularizers.l2(1e-2)), Dense(3)], seed=3
    ),
    # A built model's default plan probes its init in its own dtype (float64 graphs once
    # could not fit on NumPy: the probe asked for float32, which a built model refuses).
    "graph_float64": lambda: _graph("float64"),
}


def _two_inputs():
    a, b = wf.Input((8,), name="a"), wf.Input((4,), name="b")
    h = wf.layers.Concatenate()([Dense(5, "relu")(a), Dense(5)(b)])
    return wf.Model([a, b], Dense(3)(h), seed=3)


def _two_outputs():
    a = wf.Input((12,))
    h = Dense(8, "relu")(a)
    return wf.Model(a, {"c": Dense(3, name="c")(h), "r": Dense(1, name="r")(h)}, seed=3)


def _data(dtype=np.float32):
    rng = np.random.default_rng(4)
    return rng.standard_normal((50, 12)).astype(dtype), rng.integers(0, 3, 50)


def _outputs(make, planned: bool, monkeypatch):
    """``(weights, history, predict(batch_size=16), evaluate(batch_size=16))`` of a model
    trained a little, with the plans or without (the general step and forward)."""
    x, y = _data()
    with monkeypatch.context() as m, wf.use_backend("numpy"):
        wf.training.forget_shared()  # a fresh trainer: its predict and eval functions anew
        if not planned:
            m.setattr(step, "planned_step", lambda *a, **k: None)
            m.setattr(trainer, "planned_forward", lambda *a: None)
            m.setattr(step, "planned_forward", lambda *a: None)
        model = make()
        softmax = getattr(model.layers[-1], "activation", None) == "softmax"
        loss = wf.losses.SoftmaxCrossEntropy(from_logits=not softmax)
        if len(model.output_names) > 1:
            y = {"c": y, "r": x[:, :1]}
            loss = {"c": loss, "r": "mse"}
        if len(model.input_names) > 1:
            x = [x[:, :8], x[:, 8:]]
        x = [a.astype(model.dtype) for a in x] if isinstance(x, list) else x.astype(model.dtype)
        model.compile(optimizer=wf.optimizers.adam(1e-2), loss=loss)
        history = model.fit(x, y, epochs=2, batch_size=16, verbose=0).history
        out = model.predict(x, batch_size=16)
        logs = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    wf.training.forget_shared()
    return dict(flatten(model.params)), history, out, logs


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fit_predict_and_evaluate_through_the_plans_are_the_general_ones(name, monkeypatch):
    general = _outputs(MODELS[name], False, monkeypatch)
    planned = _outputs(MODELS[name], True, monkeypatch)
    assert planned[0].keys() == general[0].keys()
    for k in general[0]:
        np.testing.assert_array_equal(planned[0][k], general[0][k], err_msg=k)
    assert planned[1] == general[1] and planned[3] == general[3]
    outs = (planned[2], general[2])
    for got, want in zip(*(o.values() if isinstance(o, dict) else [o] for o in outs), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_dense_chains_inference_plan_runs_without_the_general_forward(monkeypatch):
    x, _ = _data()
    with wf.use_backend("numpy") as b:
        model = MODELS["dropout"]().build((None, 12))
        want = model.apply(model.params, model.state, x, train=False)[0]
        forward = host_plan.planned_forward(model, b)
        calls = []
        apply = type(model).apply
        monkeypatch.setattr(type(model), "apply", lambda *a, **k: calls.append(1) or apply(*a, **k))
        np.testing.assert_array_equal(forward(model.params, model.state, x), want)  # no dropout
        assert calls == []
        # A batch of another dtype than the plan's: the general forward, the same values.
        x64 = x.astype(np.float64)
        np.testing.assert_array_equal(
            forward(model.params, model.state, x64), apply(model, model.params, {}, x64)[0]
        )
        assert calls == [1]
    with wf.use_backend("jax") as b:  # traced backends compile their own forward
        assert host_plan.planned_forward(MODELS["mlp"]().build((None, 12)), b) is None


class _TrainOnlyPlan(Dense):
    """A user's Dense whose plan predates ``train``: made for training only."""

    def plan(self, xp, in_shape):
        return super().plan(xp, in_shape)


def test_a_plan_without_train_leaves_inference_to_the_layers_apply():
    layer = _TrainOnlyPlan(3, "relu")
    with wf.use_backend("numpy") as b:
        params, state, _ = layer.init(0, (None, 12))
        run, out_shape = layer.planned(b.xp, (None, 12), train=False)
        assert out_shape == (None, 3)
        x = _data()[0]
        np.testing.assert_array_equal(run(params, x, False)[0], layer.apply(params, state, x)[0])
        assert layer.planned(b.xp, (None, 12))[0].dense == ("relu", True)  # training: its own
