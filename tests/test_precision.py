"""Mixed precision (wframe/precision.py): policies, compute dtypes, float32 master weights,
dynamic loss scaling, NumPy's hand-written backward against ``jax.grad``, convergence on the
digits against float32, and files that interchange with float32 models."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import wframe as wf
from wframe import precision
from wframe.backends import array_namespace
from wframe.layers import BatchNorm, Dense, Layer, LayerNorm
from wframe.precision import DynamicLossScale, Policy
from wframe.saving import checkpoint
from wframe.tree import flatten, tree_leaves

MIXED = ["mixed_bfloat16", "mixed_float16"]
COMPUTE = {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


def data(n=64, features=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)).astype("float32"), rng.integers(0, classes, n)


def host(tree):
    return {name: np.array(wf.to_numpy(a)) for name, a in flatten(tree)}


SEEN: list[tuple[str, str]] = []


@dataclass(frozen=True)
class Probe(Layer):
    """The identity, recording the dtype its forward gets and its backprop is given."""

    def init(self, key, in_shape, *, dtype="float32"):
        return {}, {}, tuple(in_shape)

    def forward(self, params, state, x, *, train=False, key=None):
        SEEN.append(("forward", str(x.dtype)))

        def backprop(dy, input_grad=True):
            SEEN.append(("backward", str(dy.dtype)))
            return dy, {}

        return x, state, backprop


# ----------------------------------------------------------------------------- policies


def test_policy_names():
    bf = precision.get("mixed_bfloat16")
    assert (bf.param_dtype, bf.compute_dtype, bf.loss_scale, bf.mixed) == (
        "float32",
        "bfloat16",
        None,
        True,
    )
    fp = precision.get("Mixed_Float16")
    assert (fp.name, fp.param_dtype, fp.compute_dtype) == ("mixed_float16", "float32", "float16")
    # Keras 3 LossScaleOptimizer's defaults; jmp's floor.
    assert fp.loss_scale == DynamicLossScale(initial=2.0**15, period=2000, factor=2.0, minimum=1)
    for name in ("float32", "float64"):
        plain = precision.get(name)
        assert (plain.param_dtype, plain.compute_dtype, plain.mixed) == (name, name, False)
    assert precision.get(np.float64).name == "float64"
    custom = Policy("mixed_float16", loss_scale=DynamicLossScale(period=3))
    assert precision.get(custom) is custom


def test_policy_errors():
    with pytest.raises(ValueError, match=r"float16 is not supported.*dtype='mixed_float16'"):
        precision.get("float16")
    with pytest.raises(ValueError, match=r"bfloat16 is not supported.*dtype='mixed_bfloat16'"):
        wf.Sequential([Dense(1)], dtype="bfloat16")
    names = r"\('float32', 'float64', 'mixed_float16', 'mixed_bfloat16'\)"
    with pytest.raises(ValueError, match=rf"dtype must be one of {names}.*'mixed_float64'"):
        wf.Sequential([Dense(1)], dtype="mixed_float64")
    with pytest.raises(ValueError, match="Policy: name must be one of"):
        Policy("half")
    with pytest.raises(ValueError, match="loss_scale applies to 'mixed_float16' only"):
        Policy("mixed_bfloat16", loss_scale=DynamicLossScale())
    with pytest.raises(TypeError, match="loss_scale must be a wf.precision.DynamicLossScale"):
        Policy("mixed_float16", loss_scale=1024.0)
    with pytest.raises(ValueError, match="period must be an int >= 1, got 0"):
        DynamicLossScale(period=0)
    with pytest.raises(ValueError, match="factor must be > 1"):
        DynamicLossScale(factor=1.0)
    with pytest.raises(ValueError, match=r"initial \(0.5\) must be >= minimum \(1.0\)"):
        DynamicLossScale(initial=0.5)
    with pytest.raises(ValueError, match="initial must be a positive finite number"):
        DynamicLossScale(initial=float("inf"))


def test_backend_without_bfloat16_is_refused():
    xp = pytest.importorskip("array_api_strict")
    fake = type("Fake", (), {"xp": xp, "name": "strict"})()
    with pytest.raises(ValueError, match="backend 'strict' cannot hold.*jax runs both"):
        precision.check_backend(precision.get("mixed_bfloat16"), fake)
    precision.check_backend(precision.get("float32"), fake)  # nothing to check


# ----------------------------------------------------------------------------- forward, dtypes


@pytest.mark.parametrize("policy", MIXED)
def test_layers_compute_in_the_compute_dtype(backend, policy):
    model = wf.Sequential(
        [
            Dense(8, activation="relu"),
            Probe(),
            BatchNorm(),
            Probe(),
            LayerNorm(),
            Probe(),
            Dense(3),
        ],
        dtype=policy,
    )
    x, y = data()
    model.build((None, 6))
    assert (model.dtype, model.compute_dtype, model.policy.name) == (
        "float32",
        COMPUTE[policy],
        policy,
    )
    assert {str(a.dtype) for a in tree_leaves(model.params)} == {"float32"}
    SEEN.clear()
    out = model.predict(x)
    # Probes after Dense, BatchNorm and LayerNorm: the norms return the compute dtype too.
    assert SEEN == [("forward", COMPUTE[policy])] * 3
    assert str(out.dtype) == "float32"  # the output is cast back before softmax and loss
    SEEN.clear()
    loss, grads = model.value_and_grad(x, y)
    assert str(loss.dtype) == "float32"
    assert {str(g.dtype) for g in tree_leaves(grads)} == {"float32"}
    if not backend.has_autodiff:  # the hand-written backward runs in the compute dtype
        assert [s for s in SEEN if s[0] == "backward"] == [("backward", COMPUTE[policy])] * 3


@pytest.mark.parametrize("policy", MIXED)
def test_params_state_and_optimizer_state_stay_float32(backend, policy):
    model = wf.Sequential([Dense(8, activation="relu"), BatchNorm(), Dense(3)], dtype=policy)
    x, y = data()
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0, clipnorm=1.0)
    for tree in (model.params, model.state, model.opt_state):
        floats = {str(a.dtype) for a in tree_leaves(tree) if "float" in str(a.dtype)}
        assert floats == {"float32"}
    assert not np.allclose(wf.to_numpy(model.state["batch_norm_0"]["mean"]), 0)
    assert ("loss_scale" in history.history) == (policy == "mixed_float16")
    assert np.isfinite(history.history["loss"]).all()
    assert (model.loss_scale is None) == (policy == "mixed_bfloat16")


# ----------------------------------------------------------------------------- gradients


def _grads(backend_name, policy, x, y):
    with wf.use_backend(backend_name):
        model = wf.Sequential(
            [
                Dense(16, activation="relu", use_bias=False),
                BatchNorm(),
                Dense(12, activation="tanh"),
                LayerNorm(),
                Dense(4),
            ],
            seed=3,
            dtype=policy,
        )
        loss, grads = model.value_and_grad(x, y)
        return float(loss), host(grads)


# Both sides run the same mixed forward (bf16/fp16 matmuls accumulated in float32 and rounded,
# statistics of the norms in float32) and differ only in where the half-precision roundings
# fall (XLA fuses and reorders; NumPy rounds after every op). One rounding is 2**-8 relative in
# bfloat16 (8-bit mantissa) and 2**-11 in float16; about six lie on each gradient's path, so the
# two may differ by a few times that: 3e-2 and 5e-3 of each gradient's norm. The float32 model's
# gradient is the common target, within the same bounds.
GRAD_RTOL = {"mixed_bfloat16": 3e-2, "mixed_float16": 5e-3}


@pytest.mark.parametrize("policy", MIXED)
def test_numpy_backprop_matches_jax_grad(jax, policy):
    x, y = data(n=32, features=10, classes=4, seed=1)
    np_loss, np_grads = _grads("numpy", policy, x, y)
    jax_loss, jax_grads = _grads("jax", policy, x, y)
    ref_loss, ref_grads = _grads("numpy", "float32", x, y)
    rtol = GRAD_RTOL[policy]
    assert np_loss == pytest.approx(jax_loss, rel=rtol)
    assert np_loss == pytest.approx(ref_loss, rel=rtol)
    for name, ref in ref_grads.items():
        scale = np.linalg.norm(ref)
        assert np_grads[name].dtype == jax_grads[name].dtype == np.float32
        assert np.linalg.norm(np_grads[name] - jax_grads[name]) <= rtol * scale, name
        assert np.linalg.norm(np_grads[name] - ref) <= rtol * scale, name


# ----------------------------------------------------------------------------- loss scaling


def _fp16_model(loss_scale, seed=0):
    return wf.Sequential(
        [Dense(8, activation="relu"), Dense(3)],
        seed=seed,
        dtype=Policy("mixed_float16", loss_scale=loss_scale),
    )


def test_overflowing_step_is_skipped_and_halves_the_scale(backend):
    # 2**40 times a loss gradient of ~1/n overflows float16's 65504 in the backward pass.
    model = _fp16_model(DynamicLossScale(initial=2.0**40))
    x, y = data(n=16)
    model.build((None, 6))
    opt = wf.optimizers.adam(1e-2)
    step = wf.make_train_step(model, "softmax_cross_entropy", opt)
    ts = wf.TrainState(backend.copy(model.params), model.state, opt.init(model.params))
    before, opt_before = host(ts.params), host(ts.opt_state)
    ts, logs = step(ts, backend.asarray(x), backend.asarray(y.astype(np.int32)))
    assert np.isfinite(float(logs["loss"]))
    assert float(logs["loss_scale"]) == float(ts.loss_scale.scale) == 2.0**39
    assert int(ts.loss_scale.counter) == 0
    after, opt_after = host(ts.params), host(ts.opt_state)
    assert all(np.array_equal(before[k], after[k]) for k in before)  # bit for bit
    assert all(np.array_equal(opt_before[k], opt_after[k]) for k in opt_before)


def test_fit_skips_overflowing_steps_and_trains_on(backend):
    model = _fp16_model(DynamicLossScale(initial=2.0**24))
    x, y = data(n=96)
    history = model.fit(x, y, epochs=4, batch_size=16, verbose=0)  # no warning: not a bad step
    scale = float(model.loss_scale.scale)
    # Halved on each of the first steps until the scaled gradients fit in float16.
    assert 2.0**4 < scale < 2.0**24
    assert history.history["loss_scale"][-1] == scale
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_scale_doubles_after_period_finite_steps(backend):
    model = _fp16_model(DynamicLossScale(initial=4.0, period=3))
    x, y = data(n=96)
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0)  # 6 finite steps per epoch
    assert history.history["loss_scale"] == [16.0, 64.0]
    assert (float(model.loss_scale.scale), int(model.loss_scale.counter)) == (64.0, 0)
    scale = DynamicLossScale(initial=4.0, period=3)
    state = scale.init(backend)
    for finite, expected in [
        (True, (4, 1)),
        (False, (2, 0)),
        (True, (2, 1)),
        (True, (2, 2)),
        (True, (4, 0)),
        (False, (2, 0)),
        (False, (1, 0)),
        (False, (1, 0)),
    ]:
        state = scale.adjust(state, backend.asarray(finite))
        assert (float(state.scale), int(state.counter)) == expected


@dataclass(frozen=True)
class Spike(Layer):
    """``y = x * w`` whose hand-written backward claims an infinite gradient for ``w``."""

    def init(self, key, in_shape, *, dtype="float32"):
        return {"w": wf.initializers.get("ones")(key, (1,), dtype)}, {}, tuple(in_shape)

    def forward(self, params, state, x, *, train=False, key=None):
        xp, w = array_namespace(x), params["w"]
        return x * w, state, lambda dy, input_grad=True: (dy * w, {"w": xp.full_like(w, np.inf)})


def test_non_finite_gradients_at_the_minimum_scale_stop_fit():
    # Not an overflow of the scaling (NumPy: the backward is the layer's own, which lies).
    with wf.use_backend("numpy"):
        model = wf.Sequential(
            [Dense(4), Spike(), Dense(3)],
            dtype=Policy("mixed_float16", loss_scale=DynamicLossScale(4.0)),
        )
        x, y = data(n=64)
        with pytest.warns(RuntimeWarning, match="NaN or inf at step 3"):
            model.fit(x, y, epochs=1, batch_size=16, verbose=0)
        assert float(model.loss_scale.scale) == 1.0  # halved twice (steps 1, 2), then stopped


# ----------------------------------------------------------------------------- convergence


@pytest.fixture(scope="module")
def digits():
    datasets = pytest.importorskip("sklearn.datasets")
    x, y = datasets.load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = (x[order] / 16).astype("float32"), y[order]
    return x[:1280], y[:1280], x[1280:], y[1280:]


def test_digits_converge_like_float32(backend, digits):
    x, y, x_test, y_test = digits
    accuracy = {}
    for policy in ("float32", *MIXED):
        model = wf.Sequential([Dense(32, activation="relu"), Dense(10)], seed=0, dtype=policy)
        # 20 full batches per epoch, run as one compiled call on JAX.
        model.fit(
            x,
            y,
            epochs=12,
            batch_size=64,
            optimizer=wf.optimizers.adam(1e-2),
            verbose=0,
            steps_per_execution="epoch",
        )
        accuracy[policy] = model.evaluate(x_test, y_test)["accuracy"]
    assert accuracy["float32"] > 0.93, accuracy
    for policy in MIXED:
        assert abs(accuracy[policy] - accuracy["float32"]) <= 0.01, accuracy


# ----------------------------------------------------------------------------- files


def test_mixed_weights_load_into_a_float32_model(backend, tmp_path):
    x, y = data()
    mixed = wf.Sequential(
        [Dense(8, activation="relu"), BatchNorm(), Dense(3)], dtype="mixed_bfloat16"
    )
    mixed.fit(x, y, epochs=1, batch_size=16, verbose=0)
    mixed.save_weights(tmp_path / "w.safetensors")
    plain = wf.Sequential([Dense(8, activation="relu"), BatchNorm(), Dense(3)])
    plain.build((None, 6)).load_weights(tmp_path / "w.safetensors")
    assert host(plain.params).keys() == host(mixed.params).keys()
    for tree_a, tree_b in ((plain.params, mixed.params), (plain.state, mixed.state)):
        a, b = host(tree_a), host(tree_b)
        assert all(a[k].dtype == np.float32 and np.array_equal(a[k], b[k]) for k in a)
    # The float32 model computes what the bfloat16 one approximates.
    np.testing.assert_allclose(
        wf.to_numpy(plain.predict(x)), wf.to_numpy(mixed.predict(x)), rtol=0.05, atol=0.05
    )
    # The whole-model file keeps the policy.
    wf.save_model(mixed, str(tmp_path / "m.safetensors"))
    again = wf.load_model(str(tmp_path / "m.safetensors"))
    assert (again.policy.name, again.dtype) == ("mixed_bfloat16", "float32")
    np.testing.assert_array_equal(wf.to_numpy(again.predict(x)), wf.to_numpy(mixed.predict(x)))


def test_checkpoint_keeps_the_loss_scale(backend, tmp_path):
    x, y = data()
    model = _fp16_model(DynamicLossScale(initial=4.0, period=3))
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)  # 4 steps: scale 8, counter 1
    checkpoint.save(model, tmp_path / "c.safetensors")
    again = _fp16_model(DynamicLossScale(initial=4.0, period=3))
    again.load_checkpoint(tmp_path / "c.safetensors")
    assert (float(again.loss_scale.scale), int(again.loss_scale.counter)) == (8.0, 1)
    # A float32 model resumes from it without the loss scale.
    plain = wf.Sequential([Dense(8, activation="relu"), Dense(3)])
    plain.load_checkpoint(tmp_path / "c.safetensors")
    assert plain.loss_scale is None
    np.testing.assert_array_equal(
        wf.to_numpy(plain.params["dense_1"]["W"]), wf.to_numpy(model.params["dense_1"]["W"])
    )
