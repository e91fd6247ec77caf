"""GradientMonitor: the per-parameter statistics computed inside the compiled step equal hand
computations at every steps_per_execution, its warnings, and nothing compiled in without it."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import wframe as wf
from wframe.callbacks import Callback, GradientMonitor, LambdaCallback
from wframe.training import log_names
from wframe.tree import flatten

LR = 0.5
DEAD = 0  # the unit of dense_0 whose bias is hugely negative


def data(n=48, features=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, features)).astype(np.float32), rng.integers(0, 3, n)


def relu_net(seed=0):
    return wf.Sequential(
        [wf.layers.Dense(8, activation="relu"), wf.layers.Dense(3)], seed=seed
    ).build((None, 5))


def with_dead_unit(model):
    """Biases 0.1 (no zero norm), and -50 for one unit: no input activates it."""
    host = {name: np.array(wf.to_numpy(a)) for name, a in flatten(model.params)}
    host["dense_0/b"][:] = 0.1
    host["dense_0/b"][DEAD] = -50.0
    host["dense_1/b"][:] = 0.1
    backend = model.backend
    nested = {layer: {} for layer in model.params}
    for name, a in host.items():
        layer, param = name.split("/")
        nested[layer][param] = backend.asarray(a)
    model.params = nested
    return model


def hand_stats(x, y, batch_size):
    """Plain SGD replayed step by step with ``value_and_grad``: each step's statistics."""
    model = with_dead_unit(relu_net())
    per_step = []
    for start in range(0, x.shape[0], batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        _, grads = model.value_and_grad(xb, yb, loss="softmax_cross_entropy")
        params = {n: np.array(wf.to_numpy(a), dtype=np.float64) for n, a in flatten(model.params)}
        g = {n: np.array(wf.to_numpy(a), dtype=np.float64) for n, a in flatten(grads)}
        stats = {f"grad_norm/{n}": np.linalg.norm(g[n]) for n in params}
        # SGD: ‖Δp‖ = lr·‖g‖
        stats.update(
            {
                f"update_ratio/{n}": LR * np.linalg.norm(g[n]) / np.linalg.norm(p)
                for n, p in params.items()
            }
        )
        z = xb @ params["dense_0/W"] + params["dense_0/b"]
        stats["dead_relu/dense_0"] = np.mean(np.all(z <= 0, axis=0))
        per_step.append((len(xb), stats))
        model.params = {
            layer: {k: v - LR * grads[layer][k] for k, v in sub.items()}
            for layer, sub in model.params.items()
        }
    return per_step


def call_means(per_step, sizes):
    """The size-weighted mean of each statistic over the steps of each call."""
    out, i = [], 0
    for k in sizes:
        part = per_step[i : i + k]
        total = sum(n for n, _ in part)
        out.append({name: sum(n * s[name] for n, s in part) / total for name in part[0][1]})
        i += k
    return out


@pytest.mark.parametrize(("spe", "calls"), [(1, [1, 1, 1, 1, 1]), (3, [3, 1, 1]), ("epoch", [5])])
def test_statistics_equal_hand_computations(backend, spe, calls):
    # 52 examples in batches of 12: four full batches and one of 4.
    x, y = data(52)
    model = with_dead_unit(relu_net())
    monitor = GradientMonitor()
    history = model.fit(
        x,
        y,
        epochs=1,
        batch_size=12,
        shuffle=False,
        optimizer=wf.optimizers.sgd(LR),
        verbose=0,
        callbacks=[monitor],
        steps_per_execution=spe,
    )
    expected = call_means(hand_stats(x, y, 12), calls)
    assert history.steps["step"] == monitor.steps == list(np.cumsum(calls))
    names = [
        f"{kind}/dense_{i}/{p}"
        for kind in ("grad_norm", "update_ratio")
        for i in (0, 1)
        for p in ("W", "b")
    ] + ["dead_relu/dense_0"]
    assert list(monitor.values) == names
    for name in names:
        got = history.steps[name]
        assert got == monitor.values[name]
        want = [e[name] for e in expected]
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-7, err_msg=name)
    # the dead unit is always counted (the batch of 4 leaves another unit unused too)
    assert all(v >= 1 / 8 for v in history.steps["dead_relu/dense_0"])
    # the per-parameter entries stay out of the epoch logs
    assert sorted(history.history) == ["accuracy", "loss"]


def test_a_zero_param_moving_has_update_ratio_one(backend):
    x, y = data(12)
    model = relu_net()  # zero biases
    history = model.fit(
        x,
        y,
        epochs=1,
        batch_size=12,
        optimizer=wf.optimizers.sgd(0.1),
        verbose=0,
        callbacks=[GradientMonitor()],
    )
    assert history.steps["update_ratio/dense_0/b"] == [pytest.approx(1.0)]
    assert 0 < history.steps["update_ratio/dense_0/W"][0] < 0.1


@pytest.mark.parametrize(("spe", "every", "steps"), [(1, 3, [1, 4, 7]), (2, 3, [2, 4, 8])])
def test_every_n_steps_records_at_the_first_call_reaching_each_multiple(spe, every, steps):
    x, y = data(8 if spe == 2 else 7)
    monitor = GradientMonitor(every=every)
    history = relu_net().fit(
        x,
        y,
        epochs=1,
        batch_size=1,
        optimizer="sgd",
        verbose=0,
        callbacks=[monitor],
        steps_per_execution=spe,
    )
    assert monitor.steps == history.steps["step"] == steps
    assert all(len(v) == len(steps) for v in monitor.values.values())


def test_frozen_params_are_skipped(backend):
    x, y = data(24)
    model = relu_net().freeze("dense_0")
    monitor = GradientMonitor()
    model.fit(x, y, epochs=1, batch_size=12, verbose=0, callbacks=[monitor])
    assert list(monitor.values) == [
        "grad_norm/dense_1/W",
        "grad_norm/dense_1/b",
        "update_ratio/dense_1/W",
        "update_ratio/dense_1/b",
    ]


def test_conv2d_dead_units_and_nested_names(backend):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 6, 6, 2)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    block = wf.Sequential([wf.layers.Conv2D(4, 3, activation="relu")], name="block")
    model = wf.Sequential([block, wf.layers.Flatten(), wf.layers.Dense(3)])
    model.build((None, 6, 6, 2))
    host = np.array(wf.to_numpy(model.params["block"]["conv2d_0"]["b"]))
    host[:2] = -1e3  # two of the four filters never fire
    params = model.params
    params["block"]["conv2d_0"]["b"] = model.backend.asarray(host)
    model.params = params
    monitor = GradientMonitor()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[monitor])
    assert monitor.values["dead_relu/block/conv2d_0"] == [0.5]
    assert "grad_norm/block/conv2d_0/W" in monitor.values


# ------------------------------------------------------------------------------- warnings
def linear_net():
    return wf.Sequential([wf.layers.Dense(3)], seed=0).build((None, 5))


def messages(record, word):
    return [str(r.message) for r in record if word in str(r.message)]


def test_vanishing_gradients_warn_once_after_patience(backend):
    x, y = data(12)
    x = x * 1e-12  # dL/dW = x^T dz: vanishes; dL/db does not
    fit = dict(batch_size=3, optimizer=wf.optimizers.sgd(0.1), verbose=0, shuffle=False)
    monitor = GradientMonitor()
    model = linear_net()
    model.fit(x[:6], y[:6], epochs=1, callbacks=[monitor], **fit)  # 2 readings: no warning
    assert monitor.messages == []
    with pytest.warns(RuntimeWarning) as record:
        model.fit(x, y, epochs=2, callbacks=[monitor], **fit)  # 8 readings: one warning
    (message,) = messages(record, "vanishing")
    assert "dense_0/W" in message and "dense_0/b" not in message
    assert "at step 5" in message  # the third reading of this fit (2 steps before)
    assert monitor.messages == [message]


def test_exploding_gradients_warn_once(backend):
    x, y = data(12)
    with pytest.warns(RuntimeWarning) as record:
        linear_net().fit(
            x * 1e5,
            y,
            epochs=2,
            batch_size=3,
            optimizer=wf.optimizers.sgd(1e-12),
            verbose=0,
            callbacks=[GradientMonitor()],
        )
    (message,) = messages(record, "exploding")
    assert "dense_0/W" in message and "dense_0/b" not in message


@pytest.mark.parametrize("spe", [1, 4])
def test_non_finite_gradients_are_named_in_the_call_that_broke(backend, spe):
    x, y = data(48)
    x[40] = 3e38  # x @ W overflows in batch 4 of 4: the loss and gradients go NaN
    monitor = GradientMonitor()
    model = relu_net()
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning) as record:
        model.fit(
            x,
            y,
            epochs=1,
            batch_size=12,
            shuffle=False,
            optimizer=wf.optimizers.sgd(0.1),
            verbose=0,
            callbacks=[monitor],
            steps_per_execution=spe,
        )
    assert messages(record, "NaN or inf at step 4")  # fit's own
    (message,) = messages(record, "exploding")
    assert "at step 4" in message and "dense_0/W" in message and "dense_1/b" in message
    assert math.isnan(monitor.values["grad_norm/dense_0/W"][-1])
    assert monitor.steps[-1] == 4
    # Only the broken statistics are read from a call without a finite step (the others are
    # NaN-padded in the series); the finite steps of a longer call keep theirs.
    assert math.isfinite(monitor.values["update_ratio/dense_0/W"][-1]) == (spe == 4)


# ------------------------------------------------------------------------- the separate channel
def test_stats_stay_out_of_the_logs_other_callbacks_see():
    x, y = data(24)
    seen = []
    spy = LambdaCallback(on_batch_end=lambda b, logs: seen.append(dict(logs or {})))
    history = relu_net().fit(
        x,
        y,
        epochs=2,
        batch_size=6,
        verbose=0,
        callbacks=[GradientMonitor(), spy],
        validation_data=(x, y),
    )
    assert seen and all(sorted(logs) == ["accuracy", "loss"] for logs in seen)
    assert sorted(history.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]


def test_no_statistics_are_compiled_without_a_callback_asking():
    x, y = data(24)
    got = []

    class Listener(Callback):  # overrides the hook but does not ask: gets nothing
        def on_grad_stats(self, step, stats):
            got.append(stats)

    model = relu_net()
    model.fit(x, y, epochs=1, batch_size=6, verbose=0, callbacks=[Listener()])
    assert model.trainer.runners() and model.trainer.setup.stats is False
    # The running sums: (logged names, their sizes, statistics)
    sums = [k[1:] for k in model.trainer.memos() if k[0] == "acc"]
    names = log_names(model, model.tracker(model.loss), None)
    assert sums == [(names, (0, 2), 0)] and names == ("loss", "accuracy")
    assert got == []

    model.fit(x, y, epochs=1, batch_size=6, verbose=0, callbacks=[Listener(), GradientMonitor()])
    assert model.trainer.runners() and model.trainer.setup.stats is True
    assert len(got) == 4 and "grad_norm/dense_0/W" in got[0]
    names = log_names(model, model.tracker(model.loss), None, stats=True)
    assert names[:2] == ("loss", "accuracy") and "dead_relu/dense_0" in names


def test_arguments_are_checked():
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(ValueError, match="every must be an int >= 1"):
            GradientMonitor(every=bad)
    with pytest.raises(ValueError, match="vanish must be a finite number > 0"):
        GradientMonitor(vanish=0)


# ------------------------------------------------------------------------------- the example
def test_diagnose_gradients_example_runs_quick(tmp_path):
    script = Path(__file__).parent.parent / "examples" / "diagnose_gradients.py"
    out = subprocess.run(
        [sys.executable, str(script), "--quick", "--plots", str(tmp_path)],
        env={**os.environ, "WFRAME_BACKEND": "numpy"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    verdicts = dict(re.findall(r"^verdict (.+?): (\w+)$", out.stdout, re.MULTILINE))
    assert verdicts == {
        "sigmoid, normal(0, 1)": "unhealthy",
        "sigmoid, glorot": "unhealthy",  # Glorot assumes slope 1 at 0; sigmoid's is 1/4
        "tanh, normal(0, 1)": "unhealthy",
        "tanh, glorot": "healthy",
        "relu, normal(0, 1)": "unhealthy",
        "relu, he": "healthy",
    }, out.stdout
    assert re.search(r"^\| sigmoid, glorot \|.*\| vanishing \|", out.stdout, re.MULTILINE)
    assert re.search(r"^\| relu, normal\(0, 1\) \|.*exploding", out.stdout, re.MULTILINE)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert len(list(tmp_path.glob("*.png"))) == 6


@pytest.mark.parametrize("spe", [1, 3, "epoch"])
def test_measuring_changes_no_weight(backend, spe):
    x, y = data(50)
    trained = []
    for callbacks in ([], [GradientMonitor()]):
        model = relu_net()
        model.fit(
            x, y, epochs=2, batch_size=16, verbose=0, callbacks=callbacks, steps_per_execution=spe
        )
        trained.append({n: np.array(wf.to_numpy(a)) for n, a in flatten(model.params)})
    for name, a in trained[0].items():
        np.testing.assert_array_equal(trained[1][name], a, err_msg=name)
