"""Bidirectional and stacked recurrent layers (DESIGN.md §3, §9).

* The hand-written backward (the children's BPTT composed with the flips and the merge)
  against central finite differences (float64) and ``jax.grad`` (float32), every merge mode.
* The backward half is the wrapped layer run on the reversed sequence (reversed back with
  ``return_sequences``); outputs match PyTorch's bidirectional ``nn.GRU``/``nn.LSTM``
  (``output`` with ``return_sequences``, ``h_n`` without) on every backend.
* Stacks (recurrent then recurrent, Bidirectional then Bidirectional) train in
  ``wf.Sequential`` on every backend, agree between NumPy and JAX, and save and load.
"""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe.layers import GRU, LSTM, Bidirectional, Dense, SimpleRNN
from wframe.testing import assert_close, numerical_grad

BATCH, STEPS, FEATURES, UNITS = 2, 4, 3, 3
FD_RTOL, FD_ATOL = 1e-6, 1e-9
JAX_RTOL, JAX_ATOL = 1e-5, 1e-6
TORCH_RTOL, TORCH_ATOL = 1e-5, 1e-6
WRAPPED = {
    "gru": lambda seq: GRU(UNITS, return_sequences=seq),
    "lstm": lambda seq: LSTM(UNITS, return_sequences=seq),
    "simple_rnn": lambda seq: SimpleRNN(UNITS, return_sequences=seq),
}


def _host_params(layer, dtype, seed=0):
    """Host params with every bias random (so no term vanishes)."""
    with wf.use_backend("numpy"):
        params, _, out = layer.init(seed, (None, STEPS, FEATURES), dtype=dtype)
    rng = np.random.default_rng(seed)
    params = {
        d: {
            k: (rng.standard_normal(v.shape) * 0.5).astype(dtype) if k[0] == "b" else v
            for k, v in sub.items()
        }
        for d, sub in params.items()
    }
    return params, out


def _case(kind, seq, merge_mode, dtype, seed=0):
    layer = Bidirectional(WRAPPED[kind](seq), merge_mode=merge_mode)
    params, out = _host_params(layer, dtype, seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((BATCH, STEPS, FEATURES)).astype(dtype)
    shapes = out if merge_mode is None else (out,)
    dy = tuple(rng.standard_normal((BATCH, *s[1:])).astype(dtype) for s in shapes)
    return layer, params, x, dy if merge_mode is None else dy[0]


def _dot(y, dy):
    pairs = zip(y, dy, strict=True) if isinstance(y, tuple) else [(y, dy)]
    return sum(np.sum(a * b) for a, b in pairs)


CASES = [
    pytest.param("gru", True, "concat", id="gru-seq-concat"),
    pytest.param("gru", False, "concat", id="gru-last-concat"),
    pytest.param("lstm", True, "sum", id="lstm-seq-sum"),
    pytest.param("lstm", False, "mul", id="lstm-last-mul"),
    pytest.param("simple_rnn", True, "ave", id="rnn-seq-ave"),
    pytest.param("gru", True, None, id="gru-seq-none"),
]


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("kind,seq,merge_mode", CASES)
def test_backprop_matches_finite_differences(kind, seq, merge_mode):
    layer, params, x, dy = _case(kind, seq, merge_mode, "float64")

    def objective(p, v):
        return _dot(layer.forward(p, {}, v, train=True, vjp=False)[0], dy)

    with wf.use_backend("numpy"):
        dx, grads = layer.forward(params, {}, x, train=True)[2](dy)
        for d in params:
            for k in params[d]:

                def f(v, d=d, k=k):
                    return objective({**params, d: {**params[d], k: v}}, x)

                num = numerical_grad(f, params[d][k])
                assert_close(grads[d][k], num, rtol=FD_RTOL, atol=FD_ATOL)
        num = numerical_grad(lambda v: objective(params, v), x)
    assert_close(dx, num, rtol=FD_RTOL, atol=FD_ATOL)


@pytest.mark.parametrize("kind,seq,merge_mode", [CASES[0]])
def test_backprop_matches_jax_grad(jax, kind, seq, merge_mode):
    layer, params, x, dy = _case(kind, seq, merge_mode, "float32")
    with wf.use_backend("numpy"):
        y, _, backprop = layer.forward(params, {}, x, train=True)
        dx, grads = backprop(dy)
    with wf.use_backend("jax") as b:
        jparams = jax.tree_util.tree_map(b.asarray, params)
        jx, jdy = b.asarray(x), b.asarray(dy)

        def objective(p, v):
            return b.xp.sum(layer.forward(p, {}, v, train=True, vjp=False)[0] * jdy)

        def forward_and_grads(p, v):  # one compilation
            y = layer.forward(p, {}, v, vjp=False)[0]
            return y, jax.grad(objective, argnums=(0, 1))(p, v)

        jy, (jgrads, jdx) = jax.jit(forward_and_grads)(jparams, jx)
    assert_close(y, jy, rtol=JAX_RTOL, atol=JAX_ATOL)
    assert_close(dx, jdx, rtol=JAX_RTOL, atol=JAX_ATOL)
    for d in params:
        for k in params[d]:
            assert_close(grads[d][k], jgrads[d][k], rtol=JAX_RTOL, atol=JAX_ATOL)


def test_need_asks_only_for_the_wanted_gradients():
    layer, params, x, dy = _case("gru", True, "concat", "float64")
    with wf.use_backend("numpy"):
        back = layer.forward(params, {}, x)[2]
        dx, grads = back(dy)
        dx2, only = back(dy, input_grad=False, need={"backward": {"W_h": True}})
        dx3, none = back(dy, need={})
    assert dx2 is None and list(only) == ["backward"] and list(only["backward"]) == ["W_h"]
    assert_close(only["backward"]["W_h"], grads["backward"]["W_h"], rtol=0)
    assert none == {}
    assert_close(dx3, dx, rtol=0)


# ----------------------------------------------------------------------------- semantics
@pytest.mark.parametrize("seq", [True, False], ids=["seq", "last"])
def test_backward_half_is_the_layer_on_the_reversed_sequence(seq):
    layer, params, x, _ = _case("lstm", seq, None, "float32")
    inner = LSTM(UNITS, return_sequences=seq)
    with wf.use_backend("numpy"):
        yf, yb = layer.forward(params, {}, x)[0]
        ref_f = inner.forward(params["forward"], {}, x)[0]
        ref_b = inner.forward(params["backward"], {}, x[:, ::-1])[0]
    assert_close(yf, ref_f, rtol=0)
    assert_close(yb, ref_b[:, ::-1] if seq else ref_b, rtol=0)


def test_initial_state_is_split_in_halves():
    layer, params, x, _ = _case("lstm", True, "concat", "float32")
    rng = np.random.default_rng(5)
    h = [rng.standard_normal((BATCH, UNITS)).astype("float32") for _ in range(4)]
    inner = LSTM(UNITS, return_sequences=True)
    with wf.use_backend("numpy"):
        y = layer.forward(params, {}, x, initial_state=h)[0]
        ref_b = inner.forward(params["backward"], {}, x[:, ::-1], initial_state=tuple(h[2:]))[0]
        with pytest.raises(ValueError, match="even number"):
            layer.forward(params, {}, x, initial_state=h[:3])
    assert_close(y[..., UNITS:], ref_b[:, ::-1], rtol=0)


def test_bad_arguments_fail_at_construction():
    with pytest.raises(ValueError, match="merge_mode must be one of"):
        Bidirectional(GRU(2), merge_mode="max")
    with pytest.raises(ValueError, match="layer must be a recurrent"):
        Bidirectional(Dense(2))
    with pytest.raises(ValueError, match="backward_layer has return_sequences=True"):
        Bidirectional(GRU(2), backward_layer=GRU(2, return_sequences=True))
    with pytest.raises(ValueError, match="same shape"):
        Bidirectional(GRU(2), merge_mode="sum", backward_layer=GRU(3)).init(0, (None, 4, 3))
    layer = Bidirectional(LSTM(2), backward_layer=GRU(3))  # concat: any units, any kind
    with wf.use_backend("numpy"):
        params, _, out = layer.init(0, (None, 4, 3))
    assert out == (None, 5) and "b_h" in params["backward"]
    assert [c.name for _, c in layer.children()] == ["forward_lstm", "backward_gru"]


# ----------------------------------------------------------------------------- PyTorch oracle
def _to_torch(torch, module, params, suffix, gru):
    u = params["W_h"].shape[0]

    def order(a):  # Keras' GRU z, r, h -> PyTorch r, z, n; LSTM i, f, c, o is i, f, g, o
        return np.concatenate([a[..., u : 2 * u], a[..., :u], a[..., 2 * u :]], -1) if gru else a

    b_h = params.get("b_h", np.zeros_like(params["b"]))
    with torch.no_grad():
        for name, a in (("weight_ih", params["W_x"].T), ("weight_hh", params["W_h"].T)):
            getattr(module, f"{name}{suffix}").copy_(torch.from_numpy(order(a.T).T.copy()))
        getattr(module, f"bias_ih{suffix}").copy_(torch.from_numpy(order(params["b"]).copy()))
        getattr(module, f"bias_hh{suffix}").copy_(torch.from_numpy(order(b_h).copy()))


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("seq", [True, False], ids=["seq", "last"])
def test_outputs_match_pytorch_bidirectional(backend, kind, seq):
    torch = pytest.importorskip("torch")
    layer, params, x, _ = _case(kind, seq, "concat", "float32")
    cls = torch.nn.GRU if kind == "gru" else torch.nn.LSTM
    module = cls(FEATURES, UNITS, batch_first=True, bidirectional=True)
    for d, suffix in (("forward", "_l0"), ("backward", "_l0_reverse")):
        _to_torch(torch, module, params[d], suffix, kind == "gru")
    with torch.no_grad():
        out, h_n = module(torch.from_numpy(x))
    h_n = h_n[0] if kind == "lstm" else h_n
    # Without return_sequences the backward half is torch's final reverse state h_n[1]
    # (= output[:, 0, H:]), not output[:, -1, H:].
    want = out.numpy() if seq else torch.cat([h_n[0], h_n[1]], -1).numpy()
    y = layer.forward(wf.tree.tree_map(backend.asarray, params), {}, backend.asarray(x))[0]
    assert_close(y, want, rtol=TORCH_RTOL, atol=TORCH_ATOL)


# ----------------------------------------------------------------------------- stacks
def _stack(backend_name, gated=True):
    """Bidirectional(LSTM or SimpleRNN, return_sequences) -> Bidirectional(GRU or SimpleRNN)."""
    first = LSTM(4, return_sequences=True) if gated else SimpleRNN(4, return_sequences=True)
    second = GRU(3) if gated else SimpleRNN(3)
    layers = [Bidirectional(first), Bidirectional(second, merge_mode="ave"), Dense(2)]
    with wf.use_backend(backend_name):
        return wf.Sequential(layers, seed=1).build((None, 5, 3))


def _xy():
    rng = np.random.default_rng(0)
    return rng.standard_normal((6, 5, 3)).astype("float32"), rng.integers(0, 2, 6)


def test_bidirectional_stack_agrees_between_numpy_and_jax(jax):
    # (A plain recurrent stack: tests/test_recurrent.py.)
    x, y = _xy()
    np_model, jax_model = _stack("numpy"), _stack("jax")
    with wf.use_backend("numpy"):
        value, grads = np_model.value_and_grad(x, y)
    with wf.use_backend("jax"):
        jvalue, jgrads = jax_model.value_and_grad(x, y)
    assert_close(value, jvalue, rtol=JAX_RTOL)
    flat, jflat = dict(wf.tree.flatten(grads)), dict(wf.tree.flatten(jgrads))
    assert sorted(flat) == sorted(jflat) and len(flat) == 2 * (3 + 4) + 2
    for k in flat:
        assert_close(flat[k], jflat[k], rtol=JAX_RTOL, atol=JAX_ATOL)


def test_bidirectional_stack_trains_and_reloads(backend, tmp_path):
    x, y = _xy()
    model = _stack(backend.name, gated=False)  # (cheaper to compile; gated: above)
    assert model.output_shape == (None, 2)
    history = model.fit(x, y, epochs=4, batch_size=6, optimizer=wf.optimizers.adam(0.05), verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    wf.save_model(model, tmp_path / "bi.safetensors")
    again = wf.load_model(tmp_path / "bi.safetensors")
    assert again.layers[0] == model.layers[0]
    assert_close(again.predict(x), model.predict(x), rtol=1e-6)
