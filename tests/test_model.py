"""Sequential: building, params, fit/evaluate/predict, cross-backend agreement and errors."""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe.testing import assert_close
from wframe.tree import flatten


def mlp(seed=0, dtype="float32", **kw):
    return wf.Sequential(
        [wf.layers.Dense(16, activation="relu", kernel_init="he_normal"), wf.layers.Dense(3)],
        seed=seed,
        dtype=dtype,
        **kw,
    )


def blobs(n=96, features=5, classes=3, seed=0):
    """Three separable Gaussian blobs: a task an MLP learns in a few epochs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centers = rng.normal(0, 3, (classes, features))
    return (centers[y] + rng.normal(0, 1, (n, features))).astype(np.float32), y


def test_build_names_shapes_and_summary(backend, capsys):
    model = mlp().build((None, 5))
    shapes = {k: tuple(v.shape) for k, v in flatten(model.params)}
    assert shapes == {
        "dense_0/W": (5, 16),
        "dense_0/b": (16,),
        "dense_1/W": (16, 3),
        "dense_1/b": (3,),
    }
    text = model.summary()
    assert text in capsys.readouterr().out
    assert "dense_0 (Dense)" in text and "(None, 16)" in text and "Total params: 147" in text


def test_three_inputs_two_outputs_is_a_3x2_matrix():
    model = wf.Sequential([wf.layers.Dense(2)]).build((None, 3))
    assert model.params["dense_0"]["W"].shape == (3, 2)


def test_large_network_reports_over_a_million_weights():
    model = wf.Sequential([wf.layers.Dense(1000), wf.layers.Dense(1000), wf.layers.Dense(1000)])
    model.build((None, 1000))
    assert model.count_params() == 3 * (1000 * 1000 + 1000)
    assert "Total params: 3,003,000" in model.summary(print_fn=lambda s: None)


def test_same_seed_gives_bit_identical_params_on_every_backend(backend):
    with wf.use_backend("numpy"):
        ref = dict(flatten(mlp(seed=7).build((None, 5)).params))
    got = dict(flatten(mlp(seed=7).build((None, 5)).params))
    for name, a in got.items():
        np.testing.assert_array_equal(wf.to_numpy(a), ref[name], err_msg=name)
    other = dict(flatten(mlp(seed=8).build((None, 5)).params))
    assert not np.array_equal(wf.to_numpy(other["dense_0/W"]), ref["dense_0/W"])


def test_builds_lazily_on_first_call(backend):
    x, _ = blobs(8)
    model = mlp()
    out = model.predict(x)
    assert model.built and tuple(out.shape) == (8, 3)
    assert wf.backends.array_namespace(out) is backend.xp


def test_fit_learns_and_returns_history(backend):
    x, y = blobs()
    model = mlp()
    hist = model.fit(
        x,
        y,
        epochs=8,
        batch_size=20,
        optimizer=wf.optimizers.adam(0.02),
        validation_data=(x, y),
        verbose=0,
    )
    assert hist.epoch == list(range(8))
    assert set(hist.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert hist.history["loss"][-1] < hist.history["loss"][0] / 2
    result = model.evaluate(x, y)
    assert result["accuracy"] > 0.9
    assert result["loss"] == pytest.approx(hist.history["val_loss"][-1], rel=1e-5)


def test_fit_keeps_last_partial_batch_and_is_seeded():
    x, y = blobs(50)
    a, b = mlp(), mlp()
    ha = a.fit(x, y, epochs=2, batch_size=16, optimizer=wf.optimizers.sgd(0.1), verbose=0)
    hb = b.fit(x, y, epochs=2, batch_size=16, optimizer=wf.optimizers.sgd(0.1), verbose=0)
    assert ha.history == hb.history
    # 50 = 3 * 16 + 2: the 2 leftover examples train too, so the update differs from 48.
    c = mlp()
    c.fit(
        x[:48],
        y[:48],
        epochs=1,
        batch_size=16,
        optimizer=wf.optimizers.sgd(0.1),
        shuffle=False,
        verbose=0,
    )
    d = mlp()
    d.fit(x, y, epochs=1, batch_size=16, optimizer=wf.optimizers.sgd(0.1), shuffle=False, verbose=0)
    assert not np.allclose(
        wf.to_numpy(c.params["dense_1"]["b"]), wf.to_numpy(d.params["dense_1"]["b"])
    )


def test_string_optimizer_and_losses(backend):
    x, y = blobs(40)
    model = mlp()
    model.fit(x, y, epochs=1, optimizer="sgd", loss="softmax_cross_entropy", verbose=0)
    onehot = np.eye(3, dtype=np.float32)[y]
    assert model.evaluate(x, onehot)["loss"] == pytest.approx(
        model.evaluate(x, y)["loss"], rel=1e-5
    )
    reg = wf.Sequential([wf.layers.Dense(2)])
    hist = reg.fit(x, x[:, :2], epochs=3, optimizer="adam", loss="mse", verbose=0)
    assert set(hist.history) == {"loss"}
    binary = wf.Sequential([wf.layers.Dense(1)])
    hist = binary.fit(
        x, (y[:, None] > 0).astype(np.float32), epochs=2, loss="binary_cross_entropy", verbose=0
    )
    assert set(hist.history) == {"loss", "accuracy"}


def test_value_and_grad_matches_params(backend):
    x, y = blobs(10)
    model = mlp().build((None, 5))
    value, grads = model.value_and_grad(x, y, loss="softmax_cross_entropy")
    assert float(wf.to_numpy(value)) > 0
    assert [(k, tuple(v.shape)) for k, v in flatten(grads)] == [
        (k, tuple(v.shape)) for k, v in flatten(model.params)
    ]


def test_params_setter_validates(backend):
    model = mlp().build((None, 5))
    new = {k: {n: a * 0 for n, a in v.items()} for k, v in model.params.items()}
    model.params = new
    assert float(wf.to_numpy(model.params["dense_0"]["W"]).sum()) == 0
    with pytest.raises(ValueError, match=r"missing \['dense_1/b'\]"):
        model.params = {"dense_0": new["dense_0"], "dense_1": {"W": new["dense_1"]["W"]}}
    bad = {
        "dense_0": new["dense_0"],
        "dense_1": {"W": new["dense_0"]["W"], "b": new["dense_1"]["b"]},
    }
    with pytest.raises(ValueError, match=r"'dense_1/W' must have shape \(16, 3\)"):
        model.params = bad


def test_float64_on_request():
    x, y = blobs(20)
    model = mlp(dtype="float64")
    model.fit(x, y, epochs=1, verbose=0)
    assert model.params["dense_0"]["W"].dtype == np.float64
    assert model.predict(x).dtype == np.float64


def _train(backend_name, optimizer, steps=20):
    x, y = blobs(64, seed=3)
    with wf.use_backend(backend_name):
        model = mlp(seed=1).build((None, 5))
        opt = optimizer()
        step = wf.make_train_step(model, "softmax_cross_entropy", opt)
        ts = wf.TrainState(model.params, model.state, opt.init(model.params))
        b = wf.get_backend()
        xb, yb = b.asarray(x, dtype="float32"), b.asarray(y, dtype="int32")
        for _ in range(steps):
            ts, logs = step(ts, xb, yb)
        return {k: wf.to_numpy(v) for k, v in flatten(ts.params)}, float(wf.to_numpy(logs["loss"]))


@pytest.mark.parametrize(
    "optimizer",
    [lambda: wf.optimizers.sgd(0.1), lambda: wf.optimizers.adam(1e-2)],
    ids=["sgd", "adam"],
)
def test_numpy_and_jax_training_agree(optimizer):
    if "jax" not in wf.available():
        pytest.skip("jax unavailable")
    ref, ref_loss = _train("numpy", optimizer)
    got, got_loss = _train("jax", optimizer)
    assert got_loss == pytest.approx(ref_loss, rel=1e-4)
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_fit_runs_the_same_on_numpy_and_jax():
    if "jax" not in wf.available():
        pytest.skip("jax unavailable")
    x, y = blobs(70)
    runs = {}
    for name in ("numpy", "jax"):
        with wf.use_backend(name):
            runs[name] = mlp().fit(x, y, epochs=3, batch_size=16, verbose=0).history
    for k in runs["numpy"]:
        np.testing.assert_allclose(runs["jax"][k], runs["numpy"][k], rtol=1e-4, err_msg=k)


def test_jax_train_step_traced_once_per_input_shape():
    if "jax" not in wf.available():
        pytest.skip("jax unavailable")
    x, y = blobs(70)  # 70 = 4 * 16 + 6: two batch shapes
    with wf.use_backend("jax"):
        wf.training.forget_shared()  # a fresh trainer: no shape another test traced
        model = mlp()
        model.fit(x, y, epochs=3, batch_size=16, verbose=0)
        (run,) = model.trainer.runners().values()
        assert run._cache_size() == 2  # the full batches and the last partial one
        model.fit(x, y, epochs=2, batch_size=16, verbose=0)  # a second fit: no new trace
        assert run._cache_size() == 2


def test_to_backend_moves_params_and_optimizer_state():
    if "jax" not in wf.available():
        pytest.skip("jax unavailable")
    x, y = blobs(64)
    with wf.use_backend("numpy"):
        model = mlp()
        model.fit(x, y, epochs=2, batch_size=16, optimizer="adam", verbose=0)
        before = model.predict(x)
        state_class = type(model.opt_state)
        model.to_backend("jax")  # changes no default
        assert wf.get_backend().name == "numpy"
        assert model.backend.name == "jax" and wf.backend_of(model.params["dense_0"]["W"]) is (
            model.backend
        )
        assert_close(model.predict(x), before, rtol=1e-5, atol=1e-6)
        assert int(wf.to_numpy(model.opt_state.count)) == 8
        assert type(model.opt_state) is state_class  # the same optimizer, the same state
        model.fit(x, y, epochs=1, batch_size=16, verbose=0)  # continues the same Adam
        assert int(wf.to_numpy(model.opt_state.count)) == 12
        model.to_backend("numpy")
        model.fit(x, y, epochs=1, batch_size=16, verbose=0)  # and back
        assert int(wf.to_numpy(model.opt_state.count)) == 16


# ---------------------------------------------------------------- errors (messages asserted)
def test_wrong_feature_count_names_layer_and_shapes(backend):
    model = mlp().build((None, 5))
    with pytest.raises(
        ValueError,
        match=r"Dense 'dense_0' expects inputs of shape \(batch, 5\), "
        r"got array of shape \(4, 7\)",
    ):
        model.predict(np.zeros((4, 7)))


def test_wrong_label_shape_or_dtype(backend):
    x, y = blobs(10)
    model = mlp()
    with pytest.raises(ValueError, match=r"per example \(10 rows, like x\), got shape \(9,\)"):
        model.fit(x, y[:9], verbose=0)
    with pytest.raises(ValueError, match=r"integer class labels of shape \(10,\).*float64"):
        model.fit(x, y.astype(np.float64), verbose=0)
    with pytest.raises(ValueError, match=r"class labels in \[0, 3\), got values in \[1, 7\]"):
        model.fit(x, np.where(y == 0, 7, y), verbose=0)
    with pytest.raises(ValueError, match=r"labels of shape \(10, 3\).*got \(10, 4\)"):
        model.evaluate(x, np.zeros((10, 4), np.float32))
    with pytest.raises(ValueError, match=r"integer class labels.*got shape \(10,\) with dtype <U1"):
        model.fit(x, np.array(["a"] * 10), verbose=0)
    with pytest.raises(TypeError, match="x must be a numeric array, got dtype <U1"):
        model.fit(np.full((10, 5), "a"), y, verbose=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_inputs_to_fit(bad):
    x, y = blobs(10)
    x[3, 2] = bad
    with pytest.raises(ValueError, match=r"x contains NaN or inf \(first at index \(3, 2\)"):
        mlp().fit(x, y, verbose=0)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: wf.layers.Dense(3, activation="rellu"), "Unknown activation 'rellu' for Dense"),
        (lambda: wf.layers.Dense(3, kernel_init="he_nrmal"), "Unknown initializer 'he_nrmal'"),
        (lambda: wf.losses.get("crossentropy"), "Unknown loss 'crossentropy'. Expected"),
        (lambda: wf.optimizers.get("adamm"), "Unknown optimizer 'adamm'. Expected"),
        (lambda: mlp().fit(np.zeros((2, 5)), [0, 1], loss="hinje"), "Unknown loss 'hinje'"),
    ],
    ids=["activation", "initializer", "loss", "optimizer", "fit-loss"],
)
def test_unknown_names_list_valid_ones(make, message):
    with pytest.raises(ValueError, match=message) as info:
        make()
    assert "[" in str(info.value)  # the valid names follow


def test_params_of_another_backend_are_refused():
    if "jax" not in wf.available():
        pytest.skip("jax unavailable")
    x, _ = blobs(4)
    model = mlp().build((None, 5))  # on numpy
    with wf.use_backend("jax"):  # a built model runs on its own backend, whatever is active
        assert wf.backend_of(model.predict(x)).name == "numpy"
        jax_params = mlp().build((None, 5)).params
        jax_x = wf.get_backend().asarray(x)
    with pytest.raises(
        TypeError,
        match=r"params 'dense_0/W' is an array of backend 'jax', but the model lives "
        r"on 'numpy'.*model.to_backend\('jax'\)",
    ):
        model.params = jax_params
    with pytest.raises(TypeError, match=r"x is an array of backend 'jax' but the model lives on"):
        model.predict(jax_x)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="units must be a positive int, got 0"):
        wf.layers.Dense(0)
    with pytest.raises(TypeError, match=r"item 0 must be a wframe Layer .*got str"):
        wf.Sequential(["dense"])
    with pytest.raises(ValueError, match="dtype must be one of"):
        wf.Sequential([wf.layers.Dense(2)], dtype="int32")
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        mlp().fit(np.zeros((2, 5)), [0, 1], batch_size=0)
    with pytest.raises(RuntimeError, match=r"call model.build\(\(None, features\)\)"):
        _ = mlp().params


def test_float64_on_jax_needs_x64_mode():
    if "jax" not in wf.available():
        pytest.skip("jax unavailable")
    import jax

    if jax.config.jax_enable_x64:
        pytest.skip("64-bit mode is on")
    with wf.use_backend("jax"), pytest.raises(ValueError, match="jax_enable_x64"):
        mlp(dtype="float64").build((None, 5))


def test_non_finite_loss_stops_and_keeps_last_finite_weights(backend):
    x, y = blobs(64)
    model = mlp()
    model.fit(x, y, epochs=1, batch_size=16, optimizer=wf.optimizers.sgd(0.1), verbose=0)
    # NumPy also warns about the overflow itself; only wframe's warning is under test.
    with (
        np.errstate(all="ignore"),
        pytest.warns(RuntimeWarning, match=r"became NaN or inf at step \d+ \(epoch 1, batch"),
    ):
        hist = model.fit(
            x * 1e4, y, epochs=3, batch_size=16, optimizer=wf.optimizers.sgd(1e6), verbose=0
        )
    assert hist.epoch == []
    for _, a in flatten(model.params):
        assert np.isfinite(wf.to_numpy(a)).all()


def test_fit_accepts_any_optax_transformation_on_jax(jax):
    optax = pytest.importorskip("optax")
    x, y = blobs(64)
    with wf.use_backend("jax"):
        model = mlp()
        tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2))
        hist = model.fit(x, y, epochs=4, batch_size=16, optimizer=tx, verbose=0)
    assert model.optimizer is tx
    assert hist.history["loss"][-1] < hist.history["loss"][0]


def test_label_vector_for_a_single_output_column(backend):
    x, y = blobs(40)
    target = (y > 0).astype(np.float32)
    model = wf.Sequential([wf.layers.Dense(1)])
    hist = model.fit(x, target, epochs=2, loss="binary_cross_entropy", verbose=0)
    column = model.evaluate(x, target[:, None])
    assert model.evaluate(x, target) == column
    assert set(hist.history) == {"loss", "accuracy"}
    with pytest.raises(ValueError, match=r"labels of shape \(40, 1\).*got \(40, 2\)"):
        model.evaluate(x, np.zeros((40, 2), np.float32))


def test_predict_in_small_batches_gives_the_one_batch_outputs(backend):
    """On NumPy the inputs are checked and cast once, then sliced; elsewhere each batch
    moves on its own: the same outputs either way, float64 inputs cast as before."""
    model = wf.Sequential([wf.layers.Dense(5, activation="relu"), wf.layers.Dense(3)], seed=1)
    x = np.random.default_rng(0).standard_normal((37, 4))  # float64 for a float32 model
    whole = wf.to_numpy(model.predict(x, batch_size=64))
    sliced = wf.to_numpy(model.predict(x, batch_size=8))  # 5 batches, the last of 5 rows
    assert sliced.dtype == np.float32 and sliced.shape == (37, 3)
    np.testing.assert_allclose(sliced, whole, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="x"):
        model.predict(np.ones((37, 5)), batch_size=8)
