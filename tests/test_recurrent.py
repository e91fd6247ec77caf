"""Recurrent layers: SimpleRNN, LSTM, GRU (DESIGN.md §3, §9).

* Backprop through time against central finite differences (float64, NumPy) and against
  ``jax.grad`` of the same forward (float32), for every layer, with and without
  ``return_sequences`` and ``initial_state``.
* Outputs against PyTorch's ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` given the same weights in
  PyTorch's layouts and gate orders, on every backend.
* Long sequences stay finite, weights are shared over time, JAX traces the step once under
  ``jit``, and an LSTM trains inside ``Sequential.fit`` on every backend.

tests/test_recurrent_cells.py checks the two forms of the cells against each other.
"""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe.layers import GRU, LSTM, Dense, SimpleRNN
from wframe.testing import assert_close, numerical_grad

LAYERS = {
    "simple_rnn": lambda **kw: SimpleRNN(4, **kw),
    "simple_rnn_relu": lambda **kw: SimpleRNN(4, "relu", **kw),
    "lstm": lambda **kw: LSTM(4, **kw),
    "gru": lambda **kw: GRU(4, **kw),
}
BATCH, STEPS, FEATURES, UNITS = 2, 4, 3, 4

# As tests/test_gradients.py: central differences in float64, and float32 against jax.grad
# with an absolute floor of a few float32 ulps of the O(1) terms being summed.
FD_RTOL, FD_ATOL = 1e-6, 1e-9
JAX_RTOL, JAX_ATOL = 1e-5, 1e-6
TORCH_RTOL, TORCH_ATOL = 1e-5, 1e-6


# ----------------------------------------------------------------------------- helpers
def _host_params(layer, dtype, seed=0):
    """The layer's params on the host with every bias random (so no term vanishes)."""
    with wf.use_backend("numpy"):
        params, _, _ = layer.init(0, (None, STEPS, FEATURES), dtype=dtype)
    rng = np.random.default_rng(seed)
    params = {k: np.asarray(v) for k, v in params.items()}
    for k in params:
        if k.startswith("b"):
            params[k] = (rng.standard_normal(params[k].shape) * 0.5).astype(dtype)
    return params


def _case(name, return_sequences, with_state, dtype, seed=0):
    layer = LAYERS[name](return_sequences=return_sequences)
    params = _host_params(layer, dtype, seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((BATCH, STEPS, FEATURES)).astype(dtype)
    out = (BATCH, STEPS, UNITS) if return_sequences else (BATCH, UNITS)
    dy = rng.standard_normal(out).astype(dtype)
    state = None
    if with_state:
        h0, c0 = (rng.standard_normal((BATCH, UNITS)).astype(dtype) * 0.5 for _ in range(2))
        state = (h0, c0) if isinstance(layer, LSTM) else h0
    return layer, params, x, dy, state


CASES = [
    pytest.param(name, seq, st, id=f"{name}-{'seq' if seq else 'last'}{'-h0' if st else ''}")
    for name in LAYERS
    for seq, st in ((False, False), (True, False), (True, True))
]


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("name,return_sequences,with_state", CASES)
def test_backprop_through_time_matches_finite_differences(name, return_sequences, with_state):
    layer, params, x, dy, state = _case(name, return_sequences, with_state, "float64")
    if name == "simple_rnn_relu":
        # Precondition: every pre-activation stays clear of relu's kink for the FD step.
        h = np.zeros((BATCH, UNITS)) if state is None else state
        for t in range(STEPS):
            z = x[:, t] @ params["W_x"] + params["b"] + h @ params["W_h"]
            assert np.abs(z).min() > 1e-3
            h = np.maximum(z, 0)

    def objective(p, v):
        return np.sum(layer.forward(p, {}, v, train=True, initial_state=state)[0] * dy)

    with wf.use_backend("numpy"):
        _, _, backprop = layer.forward(params, {}, x, train=True, initial_state=state)
        dx, grads = backprop(dy)
        assert sorted(grads) == sorted(params)
        for k in params:

            def f_entry(v, k=k):
                return objective({**params, k: v}, x)

            assert_close(grads[k], numerical_grad(f_entry, params[k]), rtol=FD_RTOL, atol=FD_ATOL)
        assert_close(
            dx, numerical_grad(lambda v: objective(params, v), x), rtol=FD_RTOL, atol=FD_ATOL
        )

        dx_none, again = backprop(dy, input_grad=False)
    assert dx_none is None
    for k in params:
        assert_close(again[k], grads[k], rtol=0)


@pytest.mark.parametrize("name,return_sequences,with_state", CASES)
def test_backprop_through_time_matches_jax_grad(jax, name, return_sequences, with_state):
    layer, params, x, dy, state = _case(name, return_sequences, with_state, "float32")
    with wf.use_backend("numpy"):
        y, _, backprop = layer.forward(params, {}, x, train=True, initial_state=state)
        dx, grads = backprop(dy)
    assert dx.dtype == np.float32 and all(g.dtype == np.float32 for g in grads.values())

    with wf.use_backend("jax") as b:
        jparams = {k: b.asarray(v) for k, v in params.items()}
        jstate = jax.tree_util.tree_map(b.asarray, state)
        jx, jdy = b.asarray(x), b.asarray(dy)

        def objective(p, v):
            out = layer.forward(p, {}, v, train=True, initial_state=jstate)[0]
            return b.xp.sum(out * jdy)

        def forward_and_grads(p, v):  # one compilation
            y = layer.forward(p, {}, v, initial_state=jstate)[0]
            return y, jax.grad(objective, argnums=(0, 1))(p, v)

        jy, (jgrads, jdx) = jax.jit(forward_and_grads)(jparams, jx)
    assert_close(y, jy, rtol=JAX_RTOL, atol=JAX_ATOL)
    assert sorted(jgrads) == sorted(grads)
    for k in params:
        assert_close(grads[k], jgrads[k], rtol=JAX_RTOL, atol=JAX_ATOL)
    assert_close(dx, jdx, rtol=JAX_RTOL, atol=JAX_ATOL)


def test_backprop_works_on_autodiff_backend_too(jax):
    # JAX never calls backprop (it differentiates forward), but the closure still works: it
    # recomputes the intermediates the autodiff forward did not keep.
    layer, params, x, dy, _ = _case("lstm", True, False, "float32")
    with wf.use_backend("numpy"):
        dx, grads = layer.forward(params, {}, x)[2](dy)
    with wf.use_backend("jax") as b:
        jparams = {k: b.asarray(v) for k, v in params.items()}
        jdx, jgrads = layer.forward(jparams, {}, b.asarray(x))[2](b.asarray(dy))
    assert_close(jdx, dx, rtol=JAX_RTOL, atol=JAX_ATOL)
    for k in params:
        assert_close(jgrads[k], grads[k], rtol=JAX_RTOL, atol=JAX_ATOL)


def test_stacked_recurrent_model_gradients_agree_across_backends(jax):
    def model(backend):
        with wf.use_backend(backend):
            layers = [LSTM(6, return_sequences=True), GRU(5), Dense(3)]
            return wf.Sequential(layers, seed=1).build((None, 7, 4))

    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 7, 4)).astype(np.float32)
    y = rng.integers(0, 3, 5).astype(np.int32)
    np_model, jax_model = model("numpy"), model("jax")
    with wf.use_backend("numpy"):
        value, grads = np_model.value_and_grad(x, y)
    with wf.use_backend("jax"):
        jvalue, jgrads = jax_model.value_and_grad(x, y)
    assert_close(value, jvalue, rtol=JAX_RTOL)
    for layer in grads:
        for k in grads[layer]:
            assert_close(grads[layer][k], jgrads[layer][k], rtol=JAX_RTOL, atol=JAX_ATOL)


# ----------------------------------------------------------------------------- PyTorch oracle
def _torch_module(torch, layer, params):
    """A PyTorch recurrent module holding ``params`` in PyTorch's layout and gate order."""
    u = layer.units

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a))

    if isinstance(layer, GRU):

        def order(a):  # Keras z, r, h -> PyTorch r, z, n
            return np.concatenate([a[..., u : 2 * u], a[..., :u], a[..., 2 * u :]], axis=-1)

        module = torch.nn.GRU(FEATURES, u, batch_first=True)
        weights = (order(params["W_x"]).T, order(params["W_h"]).T)
        biases = (order(params["b"]), order(params["b_h"]))
    else:
        if isinstance(layer, LSTM):  # i, f, c, o is PyTorch's i, f, g, o
            module = torch.nn.LSTM(FEATURES, u, batch_first=True)
        else:
            module = torch.nn.RNN(FEATURES, u, nonlinearity=layer.activation, batch_first=True)
        weights = (params["W_x"].T, params["W_h"].T)
        biases = (params["b"], np.zeros_like(params["b"]))
    with torch.no_grad():
        module.weight_ih_l0.copy_(t(weights[0]))
        module.weight_hh_l0.copy_(t(weights[1]))
        module.bias_ih_l0.copy_(t(biases[0]))
        module.bias_hh_l0.copy_(t(biases[1]))
    return module


@pytest.mark.parametrize("name,return_sequences,with_state", CASES)
def test_outputs_match_pytorch(backend, name, return_sequences, with_state):
    torch = pytest.importorskip("torch")
    layer, params, x, _, state = _case(name, return_sequences, with_state, "float32")
    module = _torch_module(torch, layer, params)
    with torch.no_grad():
        if state is None:
            out, h_n = module(torch.from_numpy(x))
        elif isinstance(layer, LSTM):
            h0, c0 = (torch.from_numpy(s)[None] for s in state)
            out, h_n = module(torch.from_numpy(x), (h0, c0))
        else:
            out, h_n = module(torch.from_numpy(x), torch.from_numpy(state)[None])
    h_n = h_n[0] if isinstance(layer, LSTM) else h_n
    expected = out.numpy() if return_sequences else h_n[0].numpy()

    dev = {k: backend.asarray(v) for k, v in params.items()}
    dev_state = state
    if state is not None:
        is_pair = isinstance(state, tuple)
        dev_state = tuple(map(backend.asarray, state)) if is_pair else backend.asarray(state)
    y, _, _ = layer.forward(dev, {}, backend.asarray(x), initial_state=dev_state)
    assert y.shape == expected.shape
    assert_close(y, expected, rtol=TORCH_RTOL, atol=TORCH_ATOL)


# ----------------------------------------------------------------------------- properties
@pytest.mark.parametrize("name", ["simple_rnn", "lstm", "gru"])
def test_long_sequences_stay_finite(backend, name):
    # T=200 with inputs of size ~30: saturated gates; exp must never overflow (warnings are
    # errors here) and BPTT must not produce NaN.
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 200, 3)) * 30).astype(np.float32)
    y = rng.integers(0, 2, 4).astype(np.int32)
    model = wf.Sequential([LAYERS[name](return_sequences=False), Dense(2)], seed=0)
    value, grads = model.value_and_grad(x, y)
    pred = model.predict(x)
    assert np.isfinite(wf.to_numpy(value))
    assert np.isfinite(wf.to_numpy(pred)).all()
    for layer in grads.values():
        for g in layer.values():
            assert np.isfinite(wf.to_numpy(g)).all()


@pytest.mark.parametrize("name", ["simple_rnn", "lstm", "gru"])
def test_weights_are_shared_over_time(backend, name):
    layer = LAYERS[name]()
    counts = []
    for steps in (5, 50):
        params, _, _ = layer.init(0, (None, steps, FEATURES))
        counts.append(sum(int(np.prod(a.shape)) for a in params.values()))
    gates = {"simple_rnn": 1, "lstm": 4, "gru": 3}[name]
    biases = 2 if name == "gru" else 1
    assert counts[0] == counts[1] == gates * UNITS * (FEATURES + UNITS + biases)
    # The same params run on sequences of any length.
    for steps in (1, 9):
        x = backend.asarray(np.ones((2, steps, FEATURES), dtype=np.float32))
        assert layer.forward(params, {}, x)[0].shape == (2, UNITS)


def test_same_seed_gives_identical_weights_on_every_backend(backend):
    for layer in (SimpleRNN(3), LSTM(3), GRU(3)):
        with wf.use_backend("numpy"):
            ref, _, _ = layer.init(7, (None, 5, 2))
        params, _, _ = layer.init(7, (None, 5, 2))
        for k in ref:
            np.testing.assert_array_equal(wf.to_numpy(params[k]), ref[k])


def test_initialization_follows_keras():
    p, _, _ = LSTM(3).init(0, (None, 5, 2), dtype="float64")
    assert_close(p["b"], np.r_[np.zeros(3), np.ones(3), np.zeros(6)], rtol=0)
    p, _, _ = LSTM(3, unit_forget_bias=False).init(0, (None, 5, 2), dtype="float64")
    assert_close(p["b"], np.zeros(12), rtol=0)
    p, _, _ = SimpleRNN(3).init(0, (None, 5, 2), dtype="float64")
    assert_close(p["W_h"] @ p["W_h"].T, np.eye(3), atol=1e-12)  # orthogonal
    p, _, _ = GRU(3).init(0, (None, 5, 2), dtype="float64")
    assert p["b_h"].shape == p["b"].shape == (9,)


@pytest.mark.parametrize("cls", [SimpleRNN, LSTM, GRU])
def test_jit_traces_the_step_once(jax, cls, monkeypatch):
    calls = []
    step = cls._step

    def counting_step(self, *args, **kwargs):
        calls.append(1)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(cls, "_step", counting_step)
    layer = cls(4, return_sequences=True)
    x = np.ones((2, 50, FEATURES), dtype=np.float32)
    with wf.use_backend("numpy"):
        params, _, _ = layer.init(0, (None, 50, FEATURES))
        expected = layer.forward(params, {}, x)[0]  # NumPy unrolls: no step to count
    assert calls == []

    with wf.use_backend("jax") as b:
        jparams = {k: b.asarray(v) for k, v in params.items()}
        fn = jax.jit(lambda p, v: layer.forward(p, {}, v)[0])  # vjp=True: the scan too
        y = fn(jparams, b.asarray(x))
        fn(jparams, b.asarray(x) + 1)  # cached: no retrace
    assert_close(y, expected, rtol=JAX_RTOL, atol=JAX_ATOL)
    assert 1 <= len(calls) <= 2  # lax.scan traces the body once, not 50 times


def test_lstm_trains_in_fit(backend):
    # Is the sum of a noisy sequence positive? The last h must integrate over time.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 8, 2)).astype(np.float32)
    y = (x.sum(axis=(1, 2)) > 0).astype(np.int32)
    model = wf.Sequential([LSTM(8), Dense(2)], seed=0)
    opt = wf.optimizers.adam(1e-2)
    history = model.fit(x, y, epochs=10, batch_size=32, optimizer=opt, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("cls", [SimpleRNN, LSTM, GRU])
def test_bad_inputs_name_the_layer_and_shapes(cls):
    layer = cls(4, name="rec")
    params, _, _ = layer.init(0, (None, 5, 3))
    label = f"{cls.__name__} 'rec'"
    with pytest.raises(ValueError, match=rf"{label} expects 3-D inputs .*shape \(2, 3\)"):
        layer.forward(params, {}, np.ones((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=rf"{label} expects inputs with 3 features.*\(2, 5, 7\)"):
        layer.forward(params, {}, np.ones((2, 5, 7), dtype=np.float32))
    with pytest.raises(ValueError, match=rf"{label} needs at least one time step"):
        layer.forward(params, {}, np.ones((2, 0, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=rf"{label} expects 3-D inputs .*\(None, 3\)"):
        layer.init(0, (None, 3))
    with pytest.raises(ValueError, match=rf"{label}: initial_state must be .*\(2, 4\)"):
        layer.forward(
            params, {}, np.ones((2, 5, 3), dtype=np.float32), initial_state=np.zeros((2, 5))
        )
    with pytest.raises(ValueError, match=rf"{cls.__name__}: units must be a positive int"):
        cls(0)


def test_lstm_initial_state_must_be_a_pair():
    layer = LSTM(4)
    params, _, _ = layer.init(0, (None, 5, 3))
    with pytest.raises(ValueError, match=r"tuple \(h0, c0\)"):
        layer.forward(params, {}, np.ones((2, 5, 3)), initial_state=np.zeros((2, 4)))


def test_model_with_2d_inputs_fails_at_build():
    model = wf.Sequential([LSTM(4)])
    with pytest.raises(ValueError, match=r"LSTM 'lstm_0' expects 3-D inputs .*\(None, 8\)"):
        model.build((None, 8))


def test_dense_after_a_sequence_acts_on_the_last_axis():
    # A return_sequences output fed straight into Dense: as Keras' Dense and nn.Linear, it maps
    # each time step; a wrong last axis names the layer and the expected size.
    model = wf.Sequential([LSTM(4, return_sequences=True), Dense(2)])
    assert model.build((None, 5, 3)).output_shape == (None, 5, 2)
    assert model.predict(np.ones((2, 5, 3))).shape == (2, 5, 2)
    dense = Dense(2, name="head")
    p, _, _ = dense.init(0, (None, 4))
    with pytest.raises(
        ValueError, match=r"Dense 'head' expects inputs of shape \(batch, \.\.\., 4\)"
    ):
        dense.forward(p, {}, np.ones((2, 5, 3), dtype=np.float32))
