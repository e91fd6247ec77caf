"""Adagrad, Adamax, NAdam, Lion and Adafactor against optax (100 float32 steps on every backend,
also by name), their states against optax's; every named optimizer's learning rate made settable
(same numbers, in place on NumPy, refusals naming the fix); the learning-rate callbacks on
``wf.optimizers.adam(...)`` inside ``fit`` and the rates they show, rounded."""

from __future__ import annotations

import functools
import io

import numpy as np
import pytest

import wframe as wf
from wframe import optimizers as opt
from wframe.callbacks import LearningRateScheduler, ProgressBar, ReduceLROnPlateau
from wframe.testing import assert_close
from wframe.tree import flatten, tree_leaves, tree_map

optax = pytest.importorskip("optax")
jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

STEPS = 100


def matrices(params):
    return tree_map(lambda x: x.ndim > 1, params)


# name -> factory(module), module being wframe.optimizers or optax: the same call on both.
CASES = {
    "adagrad": lambda m: m.adagrad(1e-2),
    "adamax": lambda m: m.adamax(1e-2),
    "nadam": lambda m: m.nadam(1e-2),
    "lion": lambda m: m.lion(1e-3, weight_decay=0.1, mask=matrices),
    "adafactor": lambda m: m.adafactor(1e-2),  # leaves below 128: a full second moment
    "adafactor_factored": lambda m: m.adafactor(
        1e-2, min_dim_size_to_factor=2, momentum=0.9, weight_decay_rate=1e-3
    ),
}
NAMES = ("adagrad", "adamax", "nadam", "lion", "adafactor")


def _params():
    rng = np.random.default_rng(0)
    return {
        "W": rng.standard_normal((3, 4)).astype(np.float32),
        "b": rng.standard_normal(4).astype(np.float32),
    }


def _grads(steps):
    # A fixed, seeded sequence; scale 2 so that Adafactor's block clipping triggers.
    rng = np.random.default_rng(1)
    return [
        tree_map(lambda p: (2 * rng.standard_normal(p.shape)).astype(p.dtype), _params())
        for _ in range(steps)
    ]


GRADS = _grads(STEPS)


def _run(tx, backend, grads=GRADS, params=None, state=None):
    """``tx`` for ``len(grads)`` steps on ``backend`` (one compiled step on JAX)."""

    def step(params, state, g):
        updates, state = tx.update(g, state, params)
        return opt.apply_updates(params, updates), state

    step = backend.jit(step)
    params = tree_map(backend.asarray, _params() if params is None else params)
    state = tx.init(params) if state is None else state
    for g in grads:
        params, state = step(params, state, tree_map(backend.asarray, g))
    return tree_map(backend.to_numpy, params), state


@functools.cache
def _optax(case, steps=STEPS):
    """optax's params after ``steps`` steps of ``CASES[case]`` (``"get:name"``: optax's
    ``name`` at Keras' default rate, 1e-3) under one ``jax.jit``; and its state."""
    by_name = case.startswith("get:")
    tx = getattr(optax, case[4:])(1e-3) if by_name else CASES[case](optax)

    @jax.jit
    def step(params, state, g):
        updates, state = tx.update(g, state, params)
        return optax.apply_updates(params, updates), state

    params = tree_map(jnp.asarray, _params())
    state = tx.init(params)
    for g in GRADS[:steps]:
        params, state = step(params, state, tree_map(jnp.asarray, g))
    return tree_map(np.asarray, params), state


def _close(a, b, rtol=1e-5, atol=1e-6):
    tree_map(lambda x, y: assert_close(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol), a, b)


def _structure(state):
    if isinstance(state, tuple):
        fields = getattr(state, "_fields", None)
        return (type(state).__name__, fields, tuple(_structure(s) for s in state))
    if isinstance(state, dict):
        return {k: _structure(v) for k, v in state.items()}
    return (np.asarray(state).dtype.name, np.shape(state))


# --- each against optax --------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_optax_over_100_steps(backend, case):
    ours, state = _run(CASES[case](opt), backend)
    _close(ours, _optax(case)[0])
    assert {type(leaf) for leaf in tree_leaves(state)} <= {
        type(backend.asarray(np.zeros(1))),
        type(backend.asarray(np.zeros((), np.int32))),
    }


@pytest.mark.parametrize("name", NAMES)
def test_by_name_with_keras_learning_rates(name):
    tx = opt.get(name.upper())
    assert opt.learning_rate(tx, tx.init(_params())) == 1e-3  # Keras 3's default
    ours, _ = _run(tx, wf.backends.resolve("numpy"))
    _close(ours, _optax(f"get:{name}")[0])


@pytest.mark.parametrize("case", sorted(CASES))
def test_states_mirror_optax_and_continue_from_its_state(case):
    ours = CASES[case](opt).init(_params())
    theirs = CASES[case](optax).init(tree_map(jnp.asarray, _params()))
    assert _structure(ours) == _structure(theirs)
    # optax's state after 50 steps, converted leaf-wise, goes on under wframe's update
    half = STEPS // 2
    params, state = _optax(case, half)
    on_host = jax.tree_util.tree_map(np.asarray, state)
    numpy = wf.backends.resolve("numpy")
    ours, _ = _run(CASES[case](opt), numpy, GRADS[half:], params, on_host)
    _close(ours, _optax(case)[0])


def test_runs_on_array_api_strict():
    # Only standard array-API calls: what lets the same code run on CuPy (and any xp).
    xs = pytest.importorskip("array_api_strict")
    numpy = wf.backends.resolve("numpy")
    for case in sorted(CASES):
        tx = CASES[case](opt)
        params = tree_map(xs.asarray, _params())
        state = tx.init(params)
        for g in GRADS[:5]:
            updates, state = tx.update(tree_map(xs.asarray, g), state, params)
            params = opt.apply_updates(params, updates)
        expected, _ = _run(tx, numpy, GRADS[:5])
        _close(tree_map(np.asarray, params), expected, rtol=1e-6, atol=0)


def test_adafactor_factors_the_two_largest_axes():
    params = {"k": np.ones((2, 5, 3), np.float32), "v": np.ones(7, np.float32)}
    state = opt.adafactor(1e-2, min_dim_size_to_factor=3).init(params)
    factored = state[0]
    assert factored.v_row["k"].shape == (2, 3) and factored.v_col["k"].shape == (2, 5)
    assert factored.v["k"].shape == (1,) and factored.v["v"].shape == (7,)
    theirs = optax.adafactor(1e-2, min_dim_size_to_factor=3).init(tree_map(jnp.asarray, params))
    assert _structure(state) == _structure(theirs)


# --- a settable learning rate --------------------------------------------------------------------

ALL = {
    "sgd": lambda: opt.sgd(0.1, momentum=0.9),
    "adam": lambda: opt.adam(1e-2),
    "adamw": lambda: opt.adamw(1e-2, weight_decay=0.1, mask=matrices),
    "rmsprop": lambda: opt.rmsprop(1e-2),
    **{name: functools.partial(CASES[name], opt) for name in NAMES},
}


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_named_optimizer_can_be_made_settable(name):
    numpy = wf.backends.resolve("numpy")
    tx = ALL[name]()
    params = _params()
    plain, plain_state = _run(tx, numpy, GRADS[:3])
    settable = opt.with_settable_learning_rate(tx, tx.init(params), params)
    assert type(settable) is opt.InjectHyperparamsState
    assert settable.hyperparams["learning_rate"].dtype == np.float32
    same, state = _run(tx, numpy, GRADS[:3], state=settable)
    _close(same, plain, rtol=1e-6, atol=1e-7)  # the same numbers until the rate is set
    assert _structure(state.inner_state) == _structure(plain_state)
    assert opt.with_settable_learning_rate(tx, state, same) is state  # already settable
    frozen, _ = _run(tx, numpy, GRADS[3:6], same, opt.set_hyperparam(state, "learning_rate", 0))
    _close(frozen, same, rtol=0, atol=0)  # rate 0: nothing moves


def test_settable_adam_keeps_its_fused_in_place_path_and_count():
    tx = opt.adam(1e-2)
    params = tree_map(np.copy, _params())
    state = opt.with_settable_learning_rate(tx, tx.init(params), params)
    assert state.count is not state.inner_state[0].count  # each incremented once, in place
    apply = opt.fused(tx)
    for g in GRADS[:3]:
        new, state = apply(params, g, state)
        assert new is params
    assert int(state.count) == int(state.inner_state[0].count) == 3
    state = opt.set_hyperparam(state, "learning_rate", 0.5)
    expected, _ = _run(
        tx, wf.backends.resolve("numpy"), GRADS[3:5], params, tree_map(np.copy, state)
    )
    for g in GRADS[3:5]:
        params, state = apply(params, g, state)
    _close(params, expected, rtol=1e-6, atol=1e-7)
    assert opt.get_hyperparam(state, "learning_rate") == 0.5


def test_settable_continues_an_advanced_state_under_jax_jit():
    tx = opt.adam(1e-2)
    jax_backend = wf.backends.resolve("jax")
    params, state = _run(tx, jax_backend, GRADS[:2])
    state = opt.with_settable_learning_rate(tx, state, tree_map(jnp.asarray, params))
    assert int(state.count) == 2 and isinstance(state.count, jax.Array)
    ours, _ = _run(tx, jax_backend, GRADS[2:4], params, state)
    expected, _ = _run(tx, wf.backends.resolve("numpy"), GRADS[:4])
    _close(ours, expected)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: opt.adam(lambda count: 0.1), "made with a schedule for it"),
        (lambda: opt.get("sgd", learning_rate=lambda count: 0.1), "made with a schedule for it"),
        (lambda: opt.chain(opt.scale_by_adam(), opt.scale(-0.1)), "constant of its code"),
        (lambda: optax.adam(1e-3), "optax.inject_hyperparams"),
        (lambda: opt.adafactor(), r"pass one: wf.optimizers.adafactor\(learning_rate=1e-3\)"),
    ],
    ids=["schedule", "injected_schedule", "chain_by_hand", "optax", "adafactor_without_rate"],
)
def test_an_unsettable_rate_is_refused_naming_the_fix(make, message):
    tx = make()
    params = tree_map(jnp.asarray, _params())
    with pytest.raises(TypeError, match=message):
        opt.with_settable_learning_rate(tx, tx.init(params), params)
    with pytest.raises(TypeError, match=message):  # the optimizer alone, before any state
        opt.with_settable_learning_rate(tx, None, None)
    theirs = optax.inject_hyperparams(optax.sgd)(learning_rate=lambda count: 0.1)
    with pytest.raises(TypeError, match="made with a schedule for it"):
        opt.with_settable_learning_rate(theirs, theirs.init(params), params)


def test_host_float_shows_the_rate_that_was_set():
    assert opt.host_float(np.float32(0.001)) == 0.001
    assert opt.host_float(np.asarray(1e-3, np.float32)) == 0.001
    assert opt.host_float(jnp.asarray(3e-4, jnp.float32)) == 0.0003
    assert opt.host_float(np.float32(0.1) * np.float32(0.5)) == 0.05
    assert opt.host_float(np.asarray(1 / 3, np.float32)) == 0.33333334  # 8 digits needed
    assert opt.host_float(np.float16(0.1)) == 0.1 and opt.host_float(np.float16(65504)) == 65500
    assert opt.host_float(np.float64(0.1) + 1e-17) == float(np.float64(0.1) + 1e-17)
    assert np.isnan(opt.host_float(np.float32("nan"))) and opt.host_float(1e-3) == 1e-3
    for value in np.random.default_rng(0).uniform(-5, 5, 200).astype(np.float32) ** 9:
        assert np.float32(opt.host_float(value)) == value  # the same float32, always


# --- the learning-rate callbacks on wf.optimizers objects, inside fit ---------------------------


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((32, 4)).astype(np.float32), rng.integers(0, 3, 32)


def _model():
    return wf.Sequential([wf.layers.Dense(3)], seed=0)


def test_reduce_lr_on_plateau_on_an_adam_object(backend, capsys, tmp_path):
    x, y = _data()
    model = _model().compile(optimizer=wf.optimizers.adam(1e-2))
    # min_delta 10: no epoch after the first counts as an improvement
    reduce = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10, verbose=1)
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[reduce])
    assert history.history["learning_rate"] == [0.01, 0.01, 0.005]  # the rate each epoch used
    assert opt.get_hyperparam(model.opt_state, "learning_rate") == 0.0025
    assert opt.learning_rate(model.optimizer, model.opt_state) == 0.0025
    out = capsys.readouterr().out
    assert "Epoch 2: ReduceLROnPlateau reducing learning rate to 0.005." in out
    assert "Epoch 3: ReduceLROnPlateau reducing learning rate to 0.0025." in out
    assert model.steps == 6
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)  # and fits again without callbacks
    assert model.steps == 8 and opt.get_hyperparam(model.opt_state, "learning_rate") == 0.0025
    # a checkpoint of that state loads into a model compiled with a new adam(1e-2)
    model.save_checkpoint(tmp_path / "c.safetensors")
    again = _model().compile(optimizer=wf.optimizers.adam(1e-2))
    again.load_checkpoint(tmp_path / "c.safetensors")
    assert opt.get_hyperparam(again.opt_state, "learning_rate") == 0.0025
    assert again.steps == 8


def test_the_progress_line_shows_a_small_rate():
    out = io.StringIO()
    bar = ProgressBar(file=out, lines=True)
    bar.set_params({"epochs": 1, "steps": 1})
    bar.on_epoch_begin(0)
    bar.on_epoch_end(0, {"loss": 0.5, "learning_rate": 1e-5})
    assert "loss: 0.5000 - learning_rate: 1.0000e-05" in out.getvalue()  # as Keras prints it


class _Weights(wf.callbacks.Callback):
    def __init__(self):
        self.kept = []

    def on_epoch_end(self, epoch, logs=None):
        self.kept.append({k: np.array(wf.to_numpy(a)) for k, a in flatten(self.model.params)})


def test_learning_rate_scheduler_on_an_adam_object_is_used(backend, capsys):
    x, y = _data()
    model, weights = _model(), _Weights()
    model.compile(optimizer=wf.optimizers.adam(1e-2))
    schedule = LearningRateScheduler(lambda epoch, lr: lr if epoch == 0 else 0.0, verbose=1)
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[schedule, weights])
    assert history.history["learning_rate"] == [0.01, 0.0, 0.0]
    assert (
        "Epoch 1: LearningRateScheduler setting learning rate to 0.01." in capsys.readouterr().out
    )
    first, second, third = weights.kept
    for name in first:  # rate 0 from the second epoch on: nothing moves
        np.testing.assert_array_equal(second[name], first[name])
        np.testing.assert_array_equal(third[name], first[name])
    # the first epoch ran Adam at 0.01, as with no callback
    plain = _model().compile(optimizer=wf.optimizers.adam(1e-2))
    plain.fit(x, y, epochs=1, batch_size=16, verbose=0)
    for name, value in flatten(plain.params):
        assert_close(first[name], np.asarray(wf.to_numpy(value)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("callback", [ReduceLROnPlateau, LearningRateScheduler])
def test_an_unsettable_optimizer_is_refused_before_any_step(backend, callback):
    x, y = _data()
    model = _model()
    cb = callback(monitor="loss") if callback is ReduceLROnPlateau else callback(lambda e: 0.1)
    tx = wf.optimizers.adam(lambda count: 1e-2 / (1 + count))
    with pytest.raises(TypeError, match=f"{callback.__name__} cannot set the learning rate"):
        model.fit(x, y, epochs=2, batch_size=16, optimizer=tx, verbose=0, callbacks=[cb])
    assert model.steps == 0
    if backend.name == "jax":  # an optax object with a constant rate
        with pytest.raises(TypeError, match="optax.inject_hyperparams") as info:
            model.fit(x, y, epochs=2, optimizer=optax.adam(1e-3), verbose=0, callbacks=[cb])
        assert "wf.optimizers.adam(1e-3)" in str(info.value) and model.steps == 0
