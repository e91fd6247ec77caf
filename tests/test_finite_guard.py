"""The finite guard without per-step gradient sums: the optimizers that declare that a
non-finite gradient makes a non-finite param (checked on every backend, Lion's refusal shown);
``fit`` stopping where the per-step guard stops when only a gradient is non-finite (its loss
finite); NumPy's replay from a sync point against its per-step guard, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe import optimizers as opt
from wframe.backends import array_namespace
from wframe.layers import Dense
from wframe.tree import flatten, tree_map

OPTIMIZERS = {
    "sgd": lambda: opt.sgd(0.1),
    "sgd_nesterov": lambda: opt.sgd(0.1, momentum=0.9, nesterov=True),
    "sgd_rate_0": lambda: opt.sgd(0.0),  # 0 * inf is NaN
    "adam": lambda: opt.adam(1e-3),
    "adamw": lambda: opt.adamw(1e-3, weight_decay=0.1),
    "rmsprop_centered": lambda: opt.rmsprop(1e-3, centered=True, momentum=0.9),
    "adagrad": lambda: opt.adagrad(0.1),
    "adamax": lambda: opt.adamax(1e-3),
    "nadam": lambda: opt.nadam(1e-3),
    "adafactor": lambda: opt.adafactor(1e-3),
    "adafactor_factored": lambda: opt.adafactor(min_dim_size_to_factor=2, momentum=0.9),
    "settable_adam": lambda: opt.inject_hyperparams(opt.adam)(learning_rate=1e-3),
}


def _steps(tx, params, state, grads):
    for g in grads:
        updates, state = tx.update(g, state, params)
        params = opt.apply_updates(params, updates)
    return params, state


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_declared_optimizer_makes_a_nonfinite_gradient_a_nonfinite_param(backend, name):
    tx, xp, rng = OPTIMIZERS[name](), backend.xp, np.random.default_rng(0)
    assert opt.propagates_nonfinite(tx)

    def draw():
        return {"W": rng.standard_normal((4, 3)), "b": rng.standard_normal(3)}

    for bad in (np.nan, np.inf, -np.inf):
        for warm in (0, 3):  # from a fresh state, and from one with moments
            params = tree_map(lambda a: xp.asarray(a, dtype=xp.float32), draw())
            grads = [draw() for _ in range(warm + 4)]
            grads[warm]["W"][1, 2] = bad
            grads = [tree_map(lambda a: xp.asarray(a, dtype=xp.float32), g) for g in grads]
            with np.errstate(all="ignore"):
                params, state = _steps(tx, params, tx.init(params), grads[:warm])
                params, state = _steps(tx, params, state, grads[warm : warm + 1])
                assert not np.isfinite(wf.to_numpy(params["W"])[1, 2]), (bad, warm)
                # Updates are added: finite steps after it never make it finite again.
                params, _ = _steps(tx, params, state, grads[warm + 1 :])
            assert not np.isfinite(wf.to_numpy(params["W"])[1, 2]), (bad, warm)


def test_lion_does_not_declare_it_the_sign_of_an_infinity_is_finite(backend):
    tx, xp = opt.lion(1e-3), backend.xp
    assert not opt.propagates_nonfinite(tx) and not opt.propagates_nonfinite((tx.init, tx.update))
    params = {"W": xp.ones((2, 2), dtype=xp.float32)}
    grads = {"W": xp.asarray([[np.inf, 1.0], [1.0, 1.0]], dtype=xp.float32)}
    updates, _ = tx.update(grads, tx.init(params), params)
    assert np.isfinite(wf.to_numpy(opt.apply_updates(params, updates)["W"])).all()


def sqrt_abs(z):
    """``sqrt(|z|)``: finite at 0, its gradient there NaN (backprop and autodiff alike)."""
    xp = array_namespace(z)
    y = xp.sqrt(xp.abs(z))
    return y, lambda dy: dy * xp.sign(z) * 0.5 / y


def _model():
    return wf.Sequential([Dense(4, activation=sqrt_abs, use_bias=False), Dense(3)], seed=3)


@pytest.mark.parametrize("optimizer", ["sgd", "lion"])  # the params checked once, or each step
@pytest.mark.parametrize("spe", [1, 3, "epoch"])
def test_a_nonfinite_gradient_under_a_finite_loss_stops_fit_at_its_step(backend, optimizer, spe):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 5)).astype(np.float32)
    # The last batch (of 16, shuffle off) has a zero pre-activation, so a NaN gradient, and no
    # later step whose loss it would make NaN: only the params can show it.
    x[85] = 0
    y = rng.integers(0, 3, 96)
    make = {"sgd": lambda: opt.sgd(0.1), "lion": lambda: opt.lion(1e-3)}[optimizer]
    model = _model()
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning, match="at step 6"):
        history = model.fit(
            x,
            y,
            epochs=1,
            batch_size=16,
            shuffle=False,
            optimizer=make(),
            steps_per_execution=spe,
            verbose=0,
        )
    assert history.epoch == [] and model.steps == 5
    five = _model()  # the weights are those of the 5 steps before it
    five.fit(x[:80], y[:80], epochs=1, batch_size=16, shuffle=False, optimizer=make(), verbose=0)
    expected = dict(flatten(five.params))
    for name, value in flatten(model.params):
        got = wf.to_numpy(value)
        assert np.isfinite(got).all(), name
        np.testing.assert_allclose(got, wf.to_numpy(expected[name]), rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("spe", [1, "epoch"])
def test_a_replay_from_the_fits_start_leaves_the_arrays_held_before_it(backend, spe):
    # The replay of a first stretch starts from the model's own arrays (the calls train a copy):
    # it copies them first, so arrays a user held before fit are neither updated in place
    # (NumPy's optimizers) nor donated (JAX).
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((96, 5)).astype(np.float32), rng.integers(0, 3, 96)
    x[85] = 0  # the sixth step's gradient is NaN, its loss finite
    model = _model().build((None, 5))
    held = dict(flatten(model.params))
    values = {k: wf.to_numpy(v).copy() for k, v in held.items()}
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning, match="at step 6"):
        model.fit(x, y, epochs=1, batch_size=16, shuffle=False, optimizer=opt.sgd(0.1),
                  steps_per_execution=spe, verbose=0)  # fmt: skip
    assert model.steps == 5
    for k, v in held.items():
        np.testing.assert_array_equal(wf.to_numpy(v), values[k], err_msg=k)
        assert not np.array_equal(wf.to_numpy(dict(flatten(model.params))[k]), values[k])


class _ZeroAfterFirstEpoch(wf.callbacks.Callback):
    """Records each epoch's logs; after the first, zeroes the first layer's weights: every
    pre-activation of ``sqrt_abs`` is then 0, the next step's gradient NaN, its loss finite."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append((epoch, dict(logs)))
        if epoch == 0:
            params = self.model.params
            zero = {**params["dense_0"], "W": np.zeros_like(params["dense_0"]["W"])}
            self.model.params = {**params, "dense_0": zero}


@pytest.mark.parametrize("spe", [1, 3])
@pytest.mark.parametrize("frozen", [False, True])
def test_numpy_replays_a_bad_stretch_as_its_steps_would_have_guarded(monkeypatch, spe, frozen):
    # NumPy checks a small model's params at each sync point and replays from a copy there;
    # forced to check every step's gradients instead (no state counted small), it must end
    # with the same weights, steps, history and callback logs, bit for bit.
    from wframe.training import loop

    rng = np.random.default_rng(1)
    x = rng.standard_normal((96, 5)).astype(np.float32)
    y = rng.integers(0, 3, 96)
    runs = []
    for limit in (loop.HOST_REPLAY_BYTES, 0):
        monkeypatch.setattr(loop, "HOST_REPLAY_BYTES", limit)
        with wf.use_backend("numpy"):
            model, cb = _model(), _ZeroAfterFirstEpoch()
            if frozen:
                model.build((None, 5)).freeze("dense_1")
            # 6 steps an epoch: the first of the second epoch is not finite
            with np.errstate(all="ignore"), pytest.warns(RuntimeWarning, match="at step 7"):
                history = model.fit(
                    x,
                    y,
                    epochs=3,
                    batch_size=16,
                    shuffle=False,
                    optimizer=opt.sgd(0.1),
                    steps_per_execution=spe,
                    callbacks=[cb],
                    verbose=0,
                )
        runs.append((dict(flatten(model.params)), model.steps, history.history, cb.seen))
    (replayed, steps, hist, seen), (guarded, steps0, hist0, seen0) = runs
    assert steps == steps0 == 6 and len(hist["loss"]) == 1 and [e for e, _ in seen] == [0]
    assert hist == hist0 and seen == seen0
    for name, value in guarded.items():
        assert np.isfinite(value).all(), name
        np.testing.assert_array_equal(replayed[name], value, err_msg=name)


def test_jax_calls_of_one_step_leave_the_params_check_to_the_sync_points(jax):
    # A reduction over the params in every one-step call (~4% of a small MLP's step on
    # XLA:CPU) becomes one compiled check per sync point; longer calls check themselves.
    x, y = np.ones((32, 5), np.float32), np.arange(32) % 3
    with wf.use_backend("jax"):
        for spe, checked in ((1, False), (2, True), ("epoch", True)):
            wf.training.forget_shared()  # its own runners only
            model = _model()
            model.fit(
                x, y, batch_size=8, steps_per_execution=spe, optimizer=opt.sgd(0.1), verbose=0
            )
            assert {s.checked for s in model.trainer.runners() if not s.guarded} == {checked}
