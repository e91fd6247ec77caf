"""NumPy's ``predict`` and ``evaluate`` through a model's inference plan
(wframe.training.host_plan.planned_forward) against the general forward they stand in for: the
same outputs bit for bit, Dropout inactive, and the general forward for what the plan was not
made for (another dtype, a user's plan that knows only training)."""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe.layers import Dense, Dropout, Sequential
from wframe.training import host_plan, step, trainer


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
    # A built model's default plan probes its init in its own dtype (float64 graphs once
    # could not fit on NumPy: the probe asked for float32, which a built model refuses).
    "graph_float64": lambda: _graph("float64"),
}


def _data(dtype=np.float32):
    rng = np.random.default_rng(4)
    return rng.standard_normal((50, 12)).astype(dtype), rng.integers(0, 3, 50)


def _outputs(make, planned: bool, monkeypatch):
    """``(predict(batch_size=16), evaluate(batch_size=16))`` of a model trained a little."""
    x, y = _data()
    with monkeypatch.context() as m, wf.use_backend("numpy"):
        wf.training.forget_shared()  # a fresh trainer: its predict and eval functions anew
        if not planned:
            m.setattr(trainer, "planned_forward", lambda *a: None)
            m.setattr(step, "planned_forward", lambda *a: None)
        model = make()
        dtype = np.dtype(model.dtype)
        softmax = getattr(model.layers[-1], "activation", None) == "softmax"
        loss = wf.losses.SoftmaxCrossEntropy(from_logits=not softmax)
        model.compile(optimizer=wf.optimizers.sgd(0.1), loss=loss)
        model.fit(x.astype(dtype), y, epochs=2, batch_size=16, verbose=0)
        out = model.predict(x.astype(dtype), batch_size=16)
        logs = model.evaluate(x.astype(dtype), y, batch_size=16, verbose=0, return_dict=True)
    wf.training.forget_shared()
    return out, logs


@pytest.mark.parametrize("name", sorted(MODELS))
def test_predict_and_evaluate_through_the_plan_are_the_general_forwards(name, monkeypatch):
    general = _outputs(MODELS[name], False, monkeypatch)
    planned = _outputs(MODELS[name], True, monkeypatch)
    np.testing.assert_array_equal(planned[0], general[0])
    assert planned[1] == general[1]


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
