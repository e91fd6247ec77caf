"""BatchNorm, LayerNorm and RMSNorm (wframe/layers/norm.py).

* Hand-written backprop against central finite differences (float64, NumPy, rtol 1e-6) and
  against ``jax.grad`` of the same forward (float32, rtol 1e-5), BatchNorm in train mode
  (through the batch statistics) and eval mode, on 2-D and 4-D inputs; LayerNorm and RMSNorm
  on 2-D and 3-D inputs, over the last axis, another one, or two.
* Outputs against PyTorch's ``batch_norm`` / ``layer_norm`` / ``nn.RMSNorm`` (oracles no one
  here wrote); RMSNorm in half precision and through weight and model files.
* Running statistics through ``Sequential.fit`` against the closed-form exponential average,
  and the inference mode of ``evaluate`` / ``predict``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import wframe as wf
from wframe.layers import BatchNorm, Dense, LayerNorm, RMSNorm, RMSNormalization
from wframe.saving import layer_config, layer_from_config, load_model, save_model
from wframe.saving.io import read_safetensors
from wframe.testing import assert_close, numerical_grad
from wframe.tree import flatten, tree_map

FD_RTOL = 1e-6
FD_ATOL = 1e-9
# float32 on NumPy vs XLA: the batch-norm input gradient is a difference of O(1) terms
# (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), so near-zero entries only agree to a few
# ulps of those terms; same floor as tests/test_gradients.py.
JAX_RTOL = 1e-5
JAX_ATOL = 1e-6

# (id, layer factory, input shape): BatchNorm after Dense (N, C), after Conv2D (N, H, W, C), and
# channels-first (axis=1); one case without gamma/beta.
BN_CASES = {
    "2d": (lambda: BatchNorm(momentum=0.9), (6, 3)),
    "4d": (lambda: BatchNorm(momentum=0.8), (3, 2, 3, 2)),
    "4d-axis1": (lambda: BatchNorm(axis=1), (3, 2, 3, 2)),
    "2d-noaffine": (lambda: BatchNorm(center=False, scale=False), (5, 4)),
}
# (id, layer factory, input shape): LayerNorm and RMSNorm over the last axis (2-D, 3-D), over
# the last two and over a middle axis; LayerNorm without gamma or beta.
LN_CASES = {
    "2d": (LayerNorm, (4, 5)),
    "3d": (LayerNorm, (2, 3, 4)),
    "3d-axes12": (lambda: LayerNorm(axis=(1, 2), epsilon=1e-3), (2, 3, 4)),
    "3d-axis1": (lambda: LayerNorm(axis=1), (2, 5, 3)),
    "3d-nocenter": (lambda: LayerNorm(center=False), (2, 3, 4)),
    "2d-noscale": (lambda: LayerNorm(scale=False), (4, 5)),
}
RMS_CASES = {
    "2d": (RMSNorm, (4, 5)),
    "3d": (RMSNorm, (2, 3, 4)),
    "3d-axes12": (lambda: RMSNorm(axis=[-2, -1], epsilon=1e-3), (2, 3, 4)),
    "3d-axis1": (lambda: RMSNorm(axis=1), (2, 5, 3)),
}


# ----------------------------------------------------------------------------- helpers


def _close(actual, expected, *, rtol, atol=0.0, err_msg=""):
    np.testing.assert_allclose(
        wf.to_numpy(actual), wf.to_numpy(expected), rtol=rtol, atol=atol, err_msg=err_msg
    )


def _host(tree):
    return tree_map(lambda a: np.asarray(wf.to_numpy(a)), tree)


def _bn_case(case: str, dtype: str, seed: int = 0):
    """Layer, random params (not the trivial init), random running state, input, cotangent."""
    make, shape = BN_CASES[case]
    layer = make()
    rng = np.random.default_rng(seed)
    with wf.use_backend("numpy"):
        params, state, out_shape = layer.init(0, (None, *shape[1:]), dtype=dtype)
    assert out_shape == (None, *shape[1:])
    c = state["mean"].shape[0]
    params = {k: (rng.standard_normal(c) * 0.5 + (1 if k == "gamma" else 0)) for k in params}
    state = {"mean": rng.standard_normal(c) * 0.3, "var": rng.uniform(0.5, 2.0, c)}
    x = rng.standard_normal(shape) * 1.5 + 0.5
    dy = rng.standard_normal(shape)
    cast = lambda a: np.asarray(a, dtype=dtype)  # noqa: E731
    return layer, tree_map(cast, params), tree_map(cast, state), cast(x), cast(dy)


def _ln_case(case: str, dtype: str, seed: int = 1, cases=LN_CASES):
    """LayerNorm (or RMSNorm, from ``cases``) with random params of the features' shape."""
    make, shape = cases[case]
    layer = make()
    rng = np.random.default_rng(seed)
    with wf.use_backend("numpy"):
        params, state, out_shape = layer.init(0, (None, *shape[1:]), dtype=dtype)
    assert out_shape == (None, *shape[1:]) and state == {}
    params = {
        k: rng.standard_normal(v.shape) * 0.5 + (0 if k == "beta" else 1) for k, v in params.items()
    }
    x = rng.standard_normal(shape) * 2 + 1
    dy = rng.standard_normal(shape)
    cast = lambda a: np.asarray(a, dtype=dtype)  # noqa: E731
    return layer, tree_map(cast, params), {}, cast(x), cast(dy)


def _case(kind: str, case: str, dtype: str):
    if kind == "bn":
        return _bn_case(case, dtype)
    return _ln_case(case, dtype, cases=LN_CASES if kind == "ln" else RMS_CASES)


ALL_CASES = (
    [("bn", c, t) for c in BN_CASES for t in (True, False)]
    + [("ln", c, True) for c in LN_CASES]
    + [("rms", c, True) for c in RMS_CASES]
)
ALL_IDS = [f"{k}-{c}-{'train' if t else 'eval'}" for k, c, t in ALL_CASES]


# ----------------------------------------------------------------------------- init / shapes
def test_init_params_state_and_shapes(backend):
    params, state, shape = BatchNorm().init(0, (None, 5, 5, 3))
    assert shape == (None, 5, 5, 3)
    assert sorted(params) == ["beta", "gamma"] and sorted(state) == ["mean", "var"]
    assert_close(params["gamma"], np.ones(3)) and assert_close(params["beta"], np.zeros(3))
    assert_close(state["mean"], np.zeros(3)) and assert_close(state["var"], np.ones(3))
    assert wf.backends.array_namespace(state["var"]) is backend.xp
    params, state, _ = BatchNorm(center=False, scale=False, axis=1).init(0, (None, 4, 7))
    assert params == {} and state["mean"].shape == (4,)
    params, state, shape = LayerNorm().init(0, (None, 6))
    assert shape == (None, 6) and state == {} and params["gamma"].shape == (6,)
    params, _, shape = LayerNorm(axis=(1, 2), center=False).init(0, (None, 3, 4, 5))
    assert shape == (None, 3, 4, 5) and list(params) == ["gamma"]
    assert params["gamma"].shape == (3, 4)
    params, state, shape = RMSNorm().init(0, (None, 3, 6))
    assert shape == (None, 3, 6) and state == {} and list(params) == ["scale"]
    assert_close(params["scale"], np.ones(6))
    assert RMSNormalization is RMSNorm and RMSNorm().epsilon == 1e-6 and RMSNorm().axis == -1


# ----------------------------------------------------------------------------- finite differences
@pytest.mark.parametrize(("kind", "case", "train"), ALL_CASES, ids=ALL_IDS)
def test_backprop_matches_finite_differences(kind, case, train):
    layer, params, state, x, dy = _case(kind, case, "float64")
    with wf.use_backend("numpy"):

        def objective(p, v):
            return np.sum(layer.forward(p, state, v, train=train)[0] * dy)

        _, _, backprop = layer.forward(params, state, x, train=train)
        dx, grads = backprop(dy)
        assert sorted(grads) == sorted(params)
        assert_close(
            dx, numerical_grad(lambda v: objective(params, v), x), rtol=FD_RTOL, atol=FD_ATOL
        )
        for name in params:

            def f(v, name=name):
                return objective({**params, name: v}, x)

            fd = numerical_grad(f, params[name])
            _close(grads[name], fd, rtol=FD_RTOL, atol=FD_ATOL, err_msg=name)
        none, grads_again = backprop(dy, input_grad=False)
        assert none is None and sorted(grads_again) == sorted(grads)


# ----------------------------------------------------------------------------- jax.grad
@pytest.mark.parametrize(("kind", "case", "train"), ALL_CASES, ids=ALL_IDS)
def test_backprop_matches_jax_grad(jax, kind, case, train):
    layer, params, state, x, dy = _case(kind, case, "float32")
    with wf.use_backend("numpy"):
        y, new_state, backprop = layer.forward(params, state, x, train=train)
        dx, grads = backprop(dy)
    assert dx.dtype == np.float32

    with wf.use_backend("jax") as b:
        jparams, jstate = tree_map(b.asarray, params), tree_map(b.asarray, state)
        jx, jdy = b.asarray(x), b.asarray(dy)

        # Differentiates through the batch statistics; the new running state is auxiliary.
        def objective(p, v):
            jy, s, _ = layer.forward(p, jstate, v, train=train)
            return b.xp.sum(jy * jdy), (jy, s)

        # One compilation, not one per primitive.
        (_, (jy, jnew_state)), (jgrads, jdx) = jax.jit(
            jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)
        )(jparams, jx)
    assert jdx.dtype == np.float32
    assert_close(y, jy, rtol=JAX_RTOL, atol=JAX_ATOL)
    assert_close(dx, jdx, rtol=JAX_RTOL, atol=JAX_ATOL)
    assert sorted(jgrads) == sorted(grads)
    for name in grads:
        _close(grads[name], jgrads[name], rtol=JAX_RTOL, atol=JAX_ATOL, err_msg=name)
    for name in new_state:
        _close(new_state[name], jnew_state[name], rtol=JAX_RTOL, err_msg=name)


# ----------------------------------------------------------------------------- PyTorch oracle
def _to_torch_layout(a: np.ndarray, axis: int):
    """Move the channel axis to position 1, where torch's batch_norm expects it."""
    torch = pytest.importorskip("torch")
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, axis, 1)))


@pytest.mark.parametrize("case", list(BN_CASES))
def test_batch_norm_matches_torch(case):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    layer, params, state, x, dy = _bn_case(case, "float32")
    axis = layer.axis
    n = x.size // x.shape[axis]
    weight = torch.from_numpy(params["gamma"]) if layer.scale else None
    bias = torch.from_numpy(params["beta"]) if layer.center else None
    with wf.use_backend("numpy"):
        y_train, new_state, backprop = layer.forward(params, state, x, train=True)
        dx, grads = backprop(dy)
        y_eval, same_state, _ = layer.forward(params, state, x, train=False)
    assert same_state is state

    tx = _to_torch_layout(x, axis).requires_grad_(True)
    run_mean, run_var = (
        torch.from_numpy(state["mean"].copy()),
        torch.from_numpy(state["var"].copy()),
    )
    ty = F.batch_norm(
        tx,
        run_mean,
        run_var,
        weight,
        bias,
        training=True,
        momentum=1 - layer.momentum,
        eps=layer.epsilon,
    )
    ty.backward(_to_torch_layout(dy, axis))
    assert_close(y_train, np.moveaxis(ty.detach().numpy(), 1, axis), rtol=1e-5, atol=1e-5)
    assert_close(dx, np.moveaxis(tx.grad.numpy(), 1, axis), rtol=1e-5, atol=1e-5)
    # Same running mean; torch feeds the unbiased batch variance into its running var, Keras
    # (and wframe) the biased one: recover torch's and rescale by (n - 1) / n.
    m = layer.momentum
    assert_close(new_state["mean"], run_mean.numpy(), rtol=1e-5, atol=1e-6)
    unbiased = (run_var.numpy() - m * state["var"]) / (1 - m)
    assert_close(new_state["var"], m * state["var"] + (1 - m) * unbiased * (n - 1) / n, rtol=1e-5)

    ty_eval = F.batch_norm(
        _to_torch_layout(x, axis),
        torch.from_numpy(state["mean"]),
        torch.from_numpy(state["var"]),
        weight,
        bias,
        training=False,
        eps=layer.epsilon,
    )
    assert_close(y_eval, np.moveaxis(ty_eval.numpy(), 1, axis), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["2d", "3d", "3d-axes12"])
def test_layer_norm_matches_torch(backend, case):
    torch = pytest.importorskip("torch")
    layer, params, _, x, dy = _ln_case(case, "float32")
    dev = tree_map(backend.asarray, params)
    y, _, backprop = layer.forward(dev, {}, backend.asarray(x), train=False)
    dx, grads = backprop(backend.asarray(dy))
    tx = torch.from_numpy(x).requires_grad_(True)
    tg = torch.from_numpy(params["gamma"]).requires_grad_(True)
    tb = torch.from_numpy(params["beta"]).requires_grad_(True)
    features = params["gamma"].shape  # the trailing axes torch normalizes over
    ty = torch.nn.functional.layer_norm(tx, features, tg, tb, eps=layer.epsilon)
    ty.backward(torch.from_numpy(dy))
    assert_close(y, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    assert_close(dx, tx.grad.numpy(), rtol=1e-5, atol=1e-5)
    assert_close(grads["gamma"], tg.grad.numpy(), rtol=1e-5, atol=1e-5)
    assert_close(grads["beta"], tb.grad.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["2d", "3d", "3d-axes12"])
def test_rms_norm_matches_torch(backend, case):
    torch = pytest.importorskip("torch")
    layer, params, _, x, dy = _ln_case(case, "float32", cases=RMS_CASES)
    dev = tree_map(backend.asarray, params)
    y, _, backprop = layer.forward(dev, {}, backend.asarray(x), train=False)
    dx, grads = backprop(backend.asarray(dy))
    norm = torch.nn.RMSNorm(params["scale"].shape, eps=layer.epsilon)
    with torch.no_grad():
        norm.weight.copy_(torch.from_numpy(params["scale"]))
    tx = torch.from_numpy(x).requires_grad_(True)
    ty = norm(tx)
    ty.backward(torch.from_numpy(dy))
    assert_close(y, ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert_close(dx, tx.grad.numpy(), rtol=1e-5, atol=1e-6)
    assert_close(grads["scale"], norm.weight.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_rms_norm_in_half_precision_computes_in_float32(backend):
    layer, params, _, x, dy = _ln_case("3d", "float32", cases=RMS_CASES)
    ref, _, ref_back = layer.forward(params, {}, x)
    half = {k: backend.asarray(v, dtype="float16") for k, v in params.items()}
    xh = backend.asarray(x, dtype="float16")
    y, _, backprop = layer.forward(half, {}, xh)
    dx, grads = backprop(backend.asarray(dy, dtype="float16"))
    assert y.dtype == dx.dtype == grads["scale"].dtype == xh.dtype
    # float16 inputs and params (3 significant digits), float32 arithmetic.
    assert_close(wf.to_numpy(y).astype(np.float32), ref, rtol=3e-3, atol=3e-3)
    assert_close(wf.to_numpy(dx).astype(np.float32), ref_back(dy)[0], rtol=1e-2, atol=1e-2)


# ----------------------------------------------------------------------------- Sequential
def _data(n=24, features=4, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, features)) * 2 + 1).astype(np.float32)
    return x, rng.integers(0, classes, n)


def _bn_model(momentum=0.9):
    return wf.Sequential([BatchNorm(momentum=momentum), Dense(3)], seed=0)


def test_running_statistics_after_fit_match_closed_form(backend):
    momentum, batch_size, epochs = 0.9, 8, 2
    x, y = _data()
    model = _bn_model(momentum)
    model.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=False, verbose=0)
    # BatchNorm is the first layer, so its batch statistics are those of the raw batches:
    # after N steps mean_N = (1 - m) * sum_k m**(N - k) * mean_k (from 0), var from 1 likewise.
    batches = [x[i : i + batch_size].astype(np.float64) for i in range(0, len(x), batch_size)]
    mean, var = np.zeros(4), np.ones(4)
    for b in batches * epochs:
        mean = momentum * mean + (1 - momentum) * b.mean(axis=0)
        var = momentum * var + (1 - momentum) * b.var(axis=0)
    state = model.state["batch_norm_0"]
    assert_close(state["mean"], mean, rtol=1e-5, atol=1e-6)
    assert_close(state["var"], var, rtol=1e-5)

    # Inference uses the running statistics.
    p = _host(model.params)
    bn, dense = p["batch_norm_0"], p["dense_0"]
    xhat = (x - mean) / np.sqrt(var + 1e-3) * bn["gamma"] + bn["beta"]
    assert_close(model.predict(x), xhat @ dense["W"] + dense["b"], rtol=1e-5, atol=1e-5)


def test_state_through_fit_evaluate_predict(backend):
    x, y = _data(n=16)  # few distinct shapes: each one is a compile on jax
    model = _bn_model()
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert len(history.history["loss"]) == 2
    state = _host(model.state)
    assert not np.allclose(state["batch_norm_0"]["mean"], 0)

    # evaluate and predict run in inference mode: running statistics, state untouched.
    params = model.params
    pred, new_state, _ = model.apply(params, model.state, backend.asarray(x), train=False)
    expected = float(wf.to_numpy(model.loss(pred, backend.asarray(y, dtype="int32"))[0]))
    assert model.evaluate(x, y)["loss"] == pytest.approx(expected, rel=1e-5)
    assert model.evaluate(x, y, batch_size=8)["loss"] == pytest.approx(expected, rel=1e-5)
    full = model.predict(x)
    assert_close(full, pred, rtol=1e-6)
    for i in (0, 13):
        assert_close(model.predict(x[i : i + 1]), full[i : i + 1], rtol=1e-5, atol=1e-6)
    assert_close(model.predict(x, batch_size=8), full, rtol=1e-5, atol=1e-6)
    for name, a in flatten(model.state):
        np.testing.assert_array_equal(wf.to_numpy(a), dict(flatten(state))[name], err_msg=name)

    # The next fit continues from the carried state.
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert not np.allclose(_host(model.state)["batch_norm_0"]["var"], state["batch_norm_0"]["var"])


def test_fit_with_batch_norm_agrees_on_numpy_and_jax(jax):
    x, y = _data(n=40, features=5)
    runs = {}
    for name in ("numpy", "jax"):
        with wf.use_backend(name):
            model = wf.Sequential(
                [
                    Dense(8, use_bias=False),
                    BatchNorm(),
                    wf.layers.Activation("relu"),
                    LayerNorm(),
                    Dense(3),
                ],
                seed=1,
            )
            history = model.fit(x, y, epochs=2, batch_size=16, verbose=0).history
            runs[name] = (history, _host(model.params), _host(model.state))
    (h_np, p_np, s_np), (h_jax, p_jax, s_jax) = runs["numpy"], runs["jax"]
    for k in h_np:
        np.testing.assert_allclose(h_jax[k], h_np[k], rtol=1e-4, err_msg=k)
    for tree_np, tree_jax in ((p_np, p_jax), (s_np, s_jax)):
        ref = dict(flatten(tree_jax))
        for name, a in flatten(tree_np):
            np.testing.assert_allclose(ref[name], a, rtol=1e-4, atol=1e-6, err_msg=name)


# ----------------------------------------------------------------------------- array API
def test_runs_on_array_api_strict():
    xps = pytest.importorskip("array_api_strict")
    for kind, case, train in ALL_CASES:
        layer, params, state, x, dy = _case(kind, case, "float64")
        with wf.use_backend("numpy"):
            y, s, back = layer.forward(params, state, x, train=train)
            dx, grads = back(dy)
        sp, ss = tree_map(xps.asarray, params), tree_map(xps.asarray, state)
        y2, s2, back2 = layer.forward(sp, ss, xps.asarray(x), train=train)
        dx2, grads2 = back2(xps.asarray(dy))
        for a, b in [(y, y2), (dx, dx2), *((s[k], s2[k]) for k in s)]:
            assert isinstance(b, type(xps.asarray(0.0)))
            assert_close(np.asarray(b), a, rtol=1e-12, atol=1e-12)
        for k in grads:
            assert_close(np.asarray(grads2[k]), grads[k], rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- files
def _norm_model(seed):
    layers = [Dense(4), RMSNorm(), LayerNorm(axis=(1, 2), center=False), Dense(2)]
    return wf.Sequential(layers, seed=seed).build((None, 3, 5))


def test_norm_layers_round_trip_through_weight_and_model_files(backend, tmp_path):
    model = _norm_model(0)
    rng = np.random.default_rng(0)
    model.params = tree_map(
        lambda a: backend.asarray(rng.standard_normal(a.shape) * 0.5 + 1, dtype="float32"),
        model.params,
    )
    assert sorted(model.params["rms_norm_0"]) == ["scale"]
    x = rng.standard_normal((2, 3, 5)).astype(np.float32)
    expected = wf.to_numpy(model.predict(x))

    model.save_weights(tmp_path / "w.safetensors")
    other = _norm_model(1).load_weights(tmp_path / "w.safetensors")
    np.testing.assert_array_equal(wf.to_numpy(other.predict(x)), expected)

    save_model(model, tmp_path / "m.safetensors")
    loaded = load_model(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(wf.to_numpy(loaded.predict(x)), expected)
    assert [n for n, _ in flatten(loaded.params)] == [n for n, _ in flatten(model.params)]
    assert '"class": "RMSNorm"' in read_safetensors(tmp_path / "m.safetensors")[1]["config"]


def test_norm_configs_and_the_keras_name():
    for layer in (RMSNorm(axis=(1, 2), epsilon=1e-5), LayerNorm(axis=1, center=False)):
        config = layer_config(layer)
        assert config["class"] == type(layer).__name__
        assert layer_from_config(json.loads(json.dumps(config))) == layer
    keras_named = {"class": "RMSNormalization", "config": {"axis": [-1], "epsilon": 1e-4}}
    assert layer_from_config(keras_named) == RMSNorm(axis=(-1,), epsilon=1e-4)
    assert RMSNorm(axis=[1, 2]).axis == (1, 2)
    model = wf.Sequential([RMSNorm(), RMSNorm()]).build((None, 3))
    assert list(model.params) == ["rms_norm_0", "rms_norm_1"]


# ----------------------------------------------------------------------------- errors
def test_channel_mismatch_names_the_layer(backend):
    model = wf.Sequential([BatchNorm(), Dense(2)]).build((None, 4))
    with pytest.raises(
        ValueError, match=r"BatchNorm 'batch_norm_0' was built for 4 channels.*\(3, 5\)"
    ):
        model.predict(np.zeros((3, 5), np.float32))
    layer = BatchNorm(name="bn")
    params, state, _ = layer.init(0, (None, 4, 4, 3))
    x = backend.asarray(np.zeros((2, 4, 4, 2), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm 'bn' was built for 3 channels on axis -1"):
        layer.forward(params, state, x, train=True)
    with pytest.raises(ValueError, match=r"LayerNorm 'ln' expects inputs \(batch, \.\.\., 4\)"):
        ln = LayerNorm(name="ln")
        ln.forward(ln.init(0, (None, 4))[0], {}, backend.asarray(np.zeros((2, 3))), train=False)
    rms = RMSNorm(name="r")
    wrong = r"RMSNorm 'r' expects inputs \(batch, \.\.\., 4\), got .*\(2, 5, 3\)"
    with pytest.raises(ValueError, match=wrong):
        rms.forward(rms.init(0, (None, 5, 4))[0], {}, backend.asarray(np.zeros((2, 5, 3))))
    ln = LayerNorm(axis=(1, 2), name="ln")
    with pytest.raises(ValueError, match=r"sizes \(5, 4\) on axis=\(1, 2\), got .*\(2, 4, 4\)"):
        ln.forward(ln.init(0, (None, 5, 4))[0], {}, backend.asarray(np.zeros((2, 4, 4))))


def test_bad_shapes_and_arguments():
    with pytest.raises(ValueError, match=r"BatchNorm 'b'.*at least one more axis.*\(None,\)"):
        BatchNorm(name="b").init(0, (None,))
    with pytest.raises(ValueError, match=r"axis=0 must name a non-batch axis"):
        BatchNorm(axis=0).init(0, (None, 3))
    with pytest.raises(ValueError, match=r"axis=3 must name a non-batch axis of 2-D"):
        BatchNorm(axis=3).init(0, (None, 3))
    with pytest.raises(ValueError, match=r"BatchNorm 'b' needs a known size for axis 1"):
        BatchNorm(name="b", axis=1).init(0, (None, None, 3))
    with pytest.raises(ValueError, match=r"LayerNorm expects inputs \(batch, \.\.\., features\)"):
        LayerNorm().init(0, (None,))
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\], got 1.5"):
        BatchNorm(momentum=1.5)
    with pytest.raises(ValueError, match=r"epsilon must be positive, got 0"):
        BatchNorm(epsilon=0)
    with pytest.raises(ValueError, match=r"LayerNorm 'l': epsilon must be positive, got -1"):
        LayerNorm(epsilon=-1, name="l")
    with pytest.raises(ValueError, match=r"axis must be an int, got 1.0"):
        BatchNorm(axis=1.0)
    with pytest.raises(ValueError, match=r"RMSNorm 'r': epsilon must be positive, got 0"):
        RMSNorm(epsilon=0, name="r")
    for bad in (1.0, (), (1, "a"), True):
        with pytest.raises(ValueError, match=r"axis must be an int or a non-empty tuple of ints"):
            RMSNorm(axis=bad)
        with pytest.raises(ValueError, match=r"LayerNorm: axis must be an int or a non-empty"):
            LayerNorm(axis=bad)
    axis_error = r"RMSNorm expects inputs \(batch, \.\.\., features\) whose axis=.* names"
    for axis, shape in ((0, (None, 3)), (2, (None, 3)), ((1, -2), (None, 3, 4)), (-3, (None, 3))):
        with pytest.raises(ValueError, match=axis_error):
            RMSNorm(axis=axis).init(0, shape)
    with pytest.raises(ValueError, match=r"LayerNorm needs known sizes for axis=1, got .*None, 3"):
        LayerNorm(axis=1).init(0, (None, None, 3))
