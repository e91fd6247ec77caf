"""MultiHeadAttention (wframe/layers/attention.py).

* Outputs and gradients against ``torch.nn.MultiheadAttention`` (self-attention, weights mapped
  from Keras' layout; no mask, causal, key padding, both) and against
  ``torch.nn.functional.scaled_dot_product_attention`` (cross-attention, key_dim != value_dim,
  Tq != Tk, output_shape), on every backend: hand-written backprop on NumPy/CuPy, ``jax.grad``
  on JAX.
* Hand-written backprop against central finite differences (float64) and ``jax.grad``
  (float32), with masks, a fully masked row and dropout with a fixed key.
* Dropout masks are the counter-based ones of wframe.random, identical on NumPy and JAX;
  the Keras call convention; a Sequential holding the layer trains and survives a file.
"""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe.layers import Dense, Flatten, MultiHeadAttention
from wframe.random import array_key, random_bits
from wframe.testing import assert_close, numerical_grad
from wframe.tree import tree_leaves, tree_map

# Central differences' round-off (~ulp(objective) / eps) is the same for every entry of an array:
# entries far below the array's largest compare with an absolute floor scaled to that largest.
# (The key bias's gradient is exactly 0: a softmax ignores a shift shared by a whole row.)
FD_RTOL, FD_ATOL = 1e-6, 1e-9
JAX_RTOL, JAX_ATOL = 1e-5, 1e-6
TORCH_RTOL, TORCH_ATOL = 1e-5, 1e-6
B, T, E, H = 2, 3, 4, 2  # batch, time, embedding, heads (head size E // H for torch's layout)


# ----------------------------------------------------------------------------- helpers
def _params(layer, in_shape, dtype, seed=0):
    """Host params of ``layer`` with random biases (so no term vanishes)."""
    with wf.use_backend("numpy"):
        params, _, _ = layer.init(seed, in_shape, dtype=dtype)
    rng = np.random.default_rng(seed + 10)
    out = {}
    for name, p in params.items():
        out[name] = {"W": np.asarray(p["W"])}
        if "b" in p:
            out[name]["b"] = (rng.standard_normal(p["b"].shape) * 0.5).astype(dtype)
    return out


def _padding_mask(tq, tk, valid):
    """(len(valid), tq, tk) 0/1 mask: example i attends its first ``valid[i]`` keys."""
    keys = np.arange(tk)[None, None, :] < np.asarray(valid)[:, None, None]
    return np.broadcast_to(keys, (len(valid), tq, tk)).astype(np.float32)


def _case(name, dtype):
    """``(layer, params, inputs, mask, dy, options)``; ``inputs`` one array or (q, v, k)."""
    rng = np.random.default_rng(1)

    def normal(*shape):
        return rng.standard_normal(shape).astype(dtype)

    opts = {}
    if name in ("self", "self-causal", "dropout"):
        layer = MultiHeadAttention(H, E // H, dropout=0.5 if name == "dropout" else 0.0)
        inputs, mask, shape = normal(B, T, E), None, (None, T, E)
        opts["use_causal_mask"] = name != "self"
        if name == "dropout":
            opts.update(train=True, key=np.array([7, 3], dtype=np.uint32))
    else:  # cross-attention: Tq=3, Tk=4, features 4/3/2, key_dim 3, value_dim 2, output 5
        layer = MultiHeadAttention(H, 3, value_dim=2, output_shape=5)
        inputs = (normal(B, 3, 4), normal(B, 4, 3), normal(B, 4, 2))
        mask = _padding_mask(3, 4, [4, 2])
        mask[1, 2] = 0  # a query row with no key left: all-zero weights (Keras)
        shape = ((None, 3, 4), (None, 4, 3), (None, 4, 2), (None, 3, 4))
        opts["use_causal_mask"] = name == "cross-causal"
    params = _params(layer, shape, dtype)
    q = inputs[0] if isinstance(inputs, tuple) else inputs
    dy = normal(q.shape[0], q.shape[1], layer.output_shape or q.shape[2])
    return layer, params, inputs, mask, dy, opts


CASES = ["self", "self-causal", "cross", "cross-causal", "dropout"]


def _run(layer, params, inputs, mask, dy, opts):
    """``(y, dx, grads)`` on the active backend as host arrays: the hand-written backprop on
    NumPy/CuPy, ``jax.grad`` of the forward on JAX. ``dx`` is one array or (dq, dv, dk)."""
    b = wf.get_backend()
    dev = tree_map(b.asarray, params)
    xs = tree_map(b.asarray, inputs)
    dev_mask = None if mask is None else b.asarray(mask)
    ddy = b.asarray(dy)
    opts = dict(opts)
    if "key" in opts:
        opts["key"] = b.asarray(opts["key"])

    def call(xs):
        return xs if dev_mask is None else (*xs, dev_mask)

    if b.name == "jax":
        jax = pytest.importorskip("jax")

        def objective(p, xs):
            y = layer.forward(p, {}, call(xs), vjp=False, **opts)[0]
            return b.xp.sum(y * ddy), y

        grad = jax.jit(jax.value_and_grad(objective, argnums=(0, 1), has_aux=True))
        (_, y), (grads, dx) = grad(dev, xs)  # one compilation, not one per primitive
    else:
        y, _, backprop = layer.forward(dev, {}, call(xs), **opts)
        dx, grads = backprop(ddy)
        if dev_mask is not None:
            assert dx[3] is None
            dx = dx[:3]
    host = lambda a: np.asarray(wf.to_numpy(a))  # noqa: E731
    return host(y), tree_map(host, dx), tree_map(host, grads)


def _compare(actual, expected, rtol, atol):
    y, dx, grads = actual
    ey, edx, egrads = expected
    assert_close(y, ey, rtol=rtol, atol=atol)
    for a, e in zip(tree_leaves(dx), tree_leaves(edx), strict=True):
        assert_close(a, e, rtol=rtol, atol=atol)
    assert sorted(grads) == sorted(egrads)
    for name in egrads:
        assert sorted(grads[name]) == sorted(egrads[name]), name
        for k in egrads[name]:
            np.testing.assert_allclose(
                grads[name][k], egrads[name][k], rtol=rtol, atol=atol, err_msg=f"{name}/{k}"
            )


# ----------------------------------------------------------------------------- PyTorch oracles
def _torch_mha(torch, params):
    """``nn.MultiheadAttention(E, H)`` holding ``params``: in_proj rows [q; k; v], each the
    Keras kernel (E, H, E // H) flattened to (E, E) and transposed; out_proj likewise."""
    mha = torch.nn.MultiheadAttention(E, H, batch_first=True)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    proj = ("query", "key", "value")
    with torch.no_grad():
        mha.in_proj_weight.copy_(t(np.concatenate([params[n]["W"].reshape(E, E).T for n in proj])))
        mha.in_proj_bias.copy_(t(np.concatenate([params[n]["b"].reshape(-1) for n in proj])))
        mha.out_proj.weight.copy_(t(params["output"]["W"].reshape(E, E).T))
        mha.out_proj.bias.copy_(t(params["output"]["b"]))
    return mha


def _torch_mha_grads(mha):
    """PyTorch's parameter gradients in Keras' layout."""
    w, b = mha.in_proj_weight.grad.numpy(), mha.in_proj_bias.grad.numpy()
    grads = {
        n: {"W": w[i * E : (i + 1) * E].T.reshape(E, H, E // H), "b": b[i * E : (i + 1) * E]}
        for i, n in enumerate(("query", "key", "value"))
    }
    for g in grads.values():
        g["b"] = g["b"].reshape(H, E // H)
    grads["output"] = {
        "W": mha.out_proj.weight.grad.numpy().T.reshape(H, E // H, E),
        "b": mha.out_proj.bias.grad.numpy(),
    }
    return grads


TORCH_MHA_CASES = ["plain", "causal", "padding", "causal-padding"]


@pytest.mark.parametrize("case", TORCH_MHA_CASES)
def test_self_attention_matches_torch_multihead_attention(backend, case):
    torch = pytest.importorskip("torch")
    layer = MultiHeadAttention(H, E // H)
    params = _params(layer, (None, T, E), "float32")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((B, T, E)).astype(np.float32)
    dy = rng.standard_normal((B, T, E)).astype(np.float32)
    causal, padded = "causal" in case, "padding" in case
    mask = _padding_mask(T, T, [T, T - 1]) if padded else None  # example 1: last key padded

    mha = _torch_mha(torch, params)
    tx = torch.from_numpy(x).requires_grad_(True)
    kw = {"need_weights": False}
    if causal:
        kw.update(attn_mask=torch.ones(T, T, dtype=torch.bool).triu(1), is_causal=True)
    if padded:
        kw["key_padding_mask"] = torch.from_numpy(mask[:, 0, :] == 0)
    ty, _ = mha(tx, tx, tx, **kw)
    ty.backward(torch.from_numpy(dy))
    expected = (ty.detach().numpy(), tx.grad.numpy(), _torch_mha_grads(mha))

    inputs = (x, x, x) if padded else x
    y, dx, grads = _run(layer, params, inputs, mask, dy, {"use_causal_mask": causal})
    if padded:  # the tuple call gives the three gradients separately; torch adds them
        dx = dx[0] + dx[1] + dx[2]
    _compare((y, dx, grads), expected, TORCH_RTOL, TORCH_ATOL)


@pytest.mark.parametrize("case", ["cross", "cross-causal"])
def test_cross_attention_matches_torch_sdpa(backend, case):
    torch = pytest.importorskip("torch")
    layer, params, (q, v, k), mask, dy, opts = _case(case, "float32")
    mask = mask.copy()
    mask[1, 2] = 1  # torch gives NaN for a fully masked row: tested separately below
    tp = tree_map(lambda a: torch.from_numpy(a).requires_grad_(True), params)
    tq, tv, tk = (torch.from_numpy(a).requires_grad_(True) for a in (q, v, k))

    def project(x, p):  # (B, T, d) @ (d, H, k) + (H, k) -> (B, H, T, k)
        return (torch.einsum("btd,dhk->bthk", x, p["W"]) + p["b"]).permute(0, 2, 1, 3)

    allowed = torch.from_numpy(mask != 0)[:, None]
    if opts["use_causal_mask"]:
        allowed = allowed & torch.ones(3, 4, dtype=torch.bool).tril()
    heads = torch.nn.functional.scaled_dot_product_attention(
        project(tq, tp["query"]), project(tk, tp["key"]), project(tv, tp["value"]), allowed
    )  # scale 1 / sqrt(key_dim): SDPA's default for query heads of size key_dim
    ty = torch.einsum("bhtv,hvo->bto", heads, tp["output"]["W"]) + tp["output"]["b"]
    ty.backward(torch.from_numpy(dy))
    host_grads = tree_map(lambda a: a.grad.numpy(), tp)
    expected = (ty.detach().numpy(), (tq.grad.numpy(), tv.grad.numpy(), tk.grad.numpy()))

    y, dx, grads = _run(layer, params, (q, v, k), mask, dy, opts)
    _compare((y, dx, grads), (*expected, host_grads), TORCH_RTOL, TORCH_ATOL)


def test_fully_masked_row_gets_zero_weights(backend):
    # Keras: masked weights are set to 0 after the softmax, so a query with no key left
    # outputs the output bias, and no gradient flows through its row (PyTorch gives NaN).
    layer, params, inputs, mask, dy, opts = _case("cross", "float32")
    y, dx, grads = _run(layer, params, inputs, mask, dy, opts)
    assert_close(y[1, 2], params["output"]["b"], rtol=1e-6)
    assert all(np.isfinite(g).all() for g in tree_leaves(grads))
    assert_close(dx[0][1, 2], np.zeros(4), atol=0)


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("name", CASES)
def test_backprop_matches_finite_differences(name):
    layer, params, inputs, mask, dy, opts = _case(name, "float64")
    single = not isinstance(inputs, tuple)
    xs = [inputs] if single else list(inputs)
    with wf.use_backend("numpy"):

        def objective(p, xs):
            x = xs[0] if single else (*xs, *([] if mask is None else [mask]))
            return np.sum(layer.forward(p, {}, x, **opts)[0] * dy)

        _, dx, grads = _run(layer, params, inputs, mask, dy, opts)
    for i, d in enumerate(tree_leaves(dx)):

        def f(v, i=i):
            return objective(params, [*xs[:i], v, *xs[i + 1 :]])

        _fd_close(d, numerical_grad(f, xs[i]), f"input {i}")
    for name_, p in params.items():
        for k in p:

            def g(v, name_=name_, k=k):
                return objective({**params, name_: {**params[name_], k: v}}, xs)

            _fd_close(grads[name_][k], numerical_grad(g, p[k]), f"{name_}/{k}")


def _fd_close(actual, fd, what):
    atol = max(FD_ATOL, FD_RTOL * float(np.abs(fd).max()))
    np.testing.assert_allclose(actual, fd, rtol=FD_RTOL, atol=atol, err_msg=what)


# (The torch oracles already compare jax.grad on the other cases, on every backend.)
@pytest.mark.parametrize("name", ["cross-causal", "dropout"])
def test_backprop_matches_jax_grad(jax, name):
    case = _case(name, "float32")
    with wf.use_backend("numpy"):
        mine = _run(*case)
    with wf.use_backend("jax"):
        theirs = _run(*case)
    _compare(mine, theirs, JAX_RTOL, JAX_ATOL)


def test_selective_grads_and_input_grad():
    layer, params, inputs, mask, dy, opts = _case("cross-causal", "float32")
    x = (*inputs, mask)
    _, _, backprop = layer.forward(params, {}, x, **opts)
    dx, grads = backprop(dy)
    need = {"key": {"W": None}, "output": {"b": None}}
    dx2, some = backprop(dy, input_grad=False, need=need)
    assert dx2 is None and {k: sorted(v) for k, v in some.items()} == {
        "key": ["W"],
        "output": ["b"],
    }
    assert_close(some["key"]["W"], grads["key"]["W"])
    assert_close(some["output"]["b"], grads["output"]["b"])
    dx3, none = backprop(dy, need={})
    assert none == {}
    for a, e in zip(dx3[:3], dx[:3], strict=True):
        assert_close(a, e)
    assert backprop(dy, input_grad=False, need={}) == (None, {})


def test_single_array_is_self_attention():
    # One array x is mha(x, x): the same output, and the sum of the three input gradients.
    layer, params, x, _, dy, opts = _case("self-causal", "float64")
    y1, _, back1 = layer.forward(params, {}, x, **opts)
    y3, _, back3 = layer.forward(params, {}, (x, x, x), **opts)
    assert_close(y1, y3, rtol=0)
    dq, dv, dk = back3(dy)[0]
    assert_close(back1(dy)[0], dq + dv + dk, rtol=1e-12)


# ----------------------------------------------------------------------------- dropout
def test_dropout_mask_is_the_counter_based_one_on_numpy_and_jax(jax):
    layer, params, x, _, dy, opts = _case("dropout", "float32")
    base = MultiHeadAttention(H, E // H)
    with wf.use_backend("numpy"):
        key = array_key(5, 2)
        y, _, _ = layer.forward(params, {}, x, train=True, key=key, use_causal_mask=True)
        # The same output from the no-dropout layer's weights P times the expected mask:
        # keep where random_bits(key, (B, H, Tq, Tk)) >= rate * 2**32, scaled by 1 / (1 - rate).
        keep = random_bits(key, (B, H, T, T)) >= np.uint32(2**31)
        assert 0 < keep.mean() < 1
        y_eval = layer.forward(params, {}, x, train=False, use_causal_mask=True)[0]
        assert_close(y_eval, base.forward(params, {}, x, use_causal_mask=True)[0], rtol=0)
        assert not np.allclose(y, y_eval)
    expected = _manual_attention(params, x, keep * 2.0)
    assert_close(y, expected, rtol=1e-5, atol=1e-6)
    with wf.use_backend("jax") as b:
        jy, _, _ = layer.forward(
            tree_map(b.asarray, params),
            {},
            b.asarray(x),
            train=True,
            key=array_key(5, 2, b),
            use_causal_mask=True,
        )
    assert_close(jy, y, rtol=1e-6, atol=1e-7)


def _manual_attention(params, x, drop):
    """Causal self-attention in plain NumPy (float64) with ``drop`` multiplying the weights."""

    def proj(n):
        return np.einsum("btd,dhk->bhtk", x, params[n]["W"]) + params[n]["b"][:, None, :]

    q, k, v = proj("query") / np.sqrt(E // H), proj("key"), proj("value")
    s = np.where(np.tril(np.ones((T, T), bool)), q @ np.swapaxes(k, -1, -2), -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True) * drop
    return np.einsum("bhtv,hvo->bto", w @ v, params["output"]["W"]) + params["output"]["b"]


def test_dropout_needs_a_key_only_when_it_has_a_rate():
    assert MultiHeadAttention(2, 2, dropout=0.1).uses_key
    assert not MultiHeadAttention(2, 2).uses_key
    layer, params, x, _, _, _ = _case("dropout", "float32")
    with pytest.raises(ValueError, match=r"MultiHeadAttention draws a dropout mask .*key"):
        layer.forward(params, {}, x, train=True)


# ----------------------------------------------------------------------------- models, files
def test_sequential_trains_and_round_trips_a_file(backend, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 4, 6)).astype(np.float32)
    y = (x[:, :, 0].sum(axis=1) > 0).astype(np.int32)
    layers = [MultiHeadAttention(2, 3, dropout=0.1, name="mha"), Flatten(), Dense(2)]
    model = wf.Sequential(layers, seed=0)
    model.fit(x, y, epochs=1, batch_size=8, optimizer=wf.optimizers.adam(1e-2), verbose=0)
    assert sorted(model.params["mha"]) == ["key", "output", "query", "value"]
    assert model.params["mha"]["output"]["W"].shape == (2, 3, 6)
    wf.save_model(model, tmp_path / "m.safetensors")
    loaded = wf.load_model(tmp_path / "m.safetensors")
    assert loaded.layers[0] == model.layers[0]
    np.testing.assert_array_equal(wf.to_numpy(loaded.predict(x)), wf.to_numpy(model.predict(x)))


def test_functional_model_with_key_as_value_and_a_mask(jax):
    # mha(q, kv, attention_mask=m, use_causal_mask=True) in a graph: kv feeds both key and
    # value, so the LayerNorm before it gets dvalue + dkey (summed by the graph); the NumPy
    # graph's backprops against jax.grad of the same model.
    rng = np.random.default_rng(3)
    xq, xkv = rng.standard_normal((4, 3, 4)), rng.standard_normal((4, 5, 4))
    xm = np.ones((4, 3, 5))
    xm[0, :, 3:] = 0
    labels = np.array([0, 1, 0, 1], dtype=np.int32)

    def value_and_grad(name):
        with wf.use_backend(name):
            q, kv, m = wf.Input((3, 4)), wf.Input((5, 4)), wf.Input((3, 5))
            mha = MultiHeadAttention(2, 3, value_dim=2, name="mha")
            y = mha(q, wf.layers.LayerNorm(name="norm")(kv), attention_mask=m, use_causal_mask=True)
            model = wf.Model([q, kv, m], Dense(2)(Flatten()(y)), seed=0)
            return model.value_and_grad([xq, xkv, xm], labels)

    value, grads = value_and_grad("numpy")
    jvalue, jgrads = value_and_grad("jax")
    assert_close(value, jvalue, rtol=JAX_RTOL)
    assert sorted(grads) == sorted(jgrads) and sorted(grads["mha"]) == [
        "key",
        "output",
        "query",
        "value",
    ]
    for a, e in zip(tree_leaves(grads), tree_leaves(jgrads), strict=True):
        assert_close(a, e, rtol=JAX_RTOL, atol=JAX_ATOL)


# ----------------------------------------------------------------------------- the call, errors
def test_call_args_follow_keras():
    mha = MultiHeadAttention(2, 3)
    q, v, k, m = object(), object(), object(), object()
    assert mha.call_args(q, v) == ((q, v, v), {"use_causal_mask": False})
    assert mha.call_args(q, v, k, attention_mask=m, use_causal_mask=True) == (
        (q, v, k, m),
        {"use_causal_mask": True},
    )
    with pytest.raises(TypeError, match=r"MultiHeadAttention is called as mha\(query, value"):
        mha.call_args(q)
    with pytest.raises(TypeError, match=r"return_attention_scores"):
        mha.call_args(q, v, return_attention_scores=True)
    with pytest.raises(TypeError, match=r"1 extra positional"):  # Keras' 4th is query_mask
        mha.call_args(q, v, k, m)


def test_init_shapes_follow_keras():
    layer = MultiHeadAttention(3, 5, value_dim=2, output_shape=(7,), use_bias=False)
    params, state, out = layer.init(0, ((None, 4, 6), (None, 9, 8), (None, 9, 10)))
    shapes = {n: {k: a.shape for k, a in p.items()} for n, p in params.items()}
    assert shapes == {
        "query": {"W": (6, 3, 5)},
        "key": {"W": (10, 3, 5)},
        "value": {"W": (8, 3, 2)},
        "output": {"W": (3, 2, 7)},
    }
    assert state == {} and out == (None, 4, 7) and layer.value_dim == 2
    params, _, out = MultiHeadAttention(2, 4).init(0, (None, 5, 6))
    assert out == (None, 5, 6) and params["query"]["b"].shape == (2, 4)
    # Keras' fans for the (d, heads, key_dim) kernel: fan_in = d * heads, fan_out = d * key_dim.
    limit = np.sqrt(6 / (6 * 2 + 6 * 4))
    assert np.abs(params["query"]["W"]).max() <= limit
    assert np.abs(params["query"]["W"]).max() > 0.8 * limit


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_heads": 0, "key_dim": 2}, "num_heads must be a positive int"),
        ({"num_heads": 2, "key_dim": 2.5}, "key_dim must be a positive int"),
        ({"num_heads": 2, "key_dim": 2, "dropout": 1.0}, r"dropout must be a number in \[0, 1\)"),
        ({"num_heads": 2, "key_dim": 2, "output_shape": (2, 3)}, "output_shape must be an int"),
        ({"num_heads": 2, "key_dim": 2, "kernel_init": "nope"}, "nope"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiHeadAttention(**kwargs)


def test_bad_inputs_name_the_layer_and_shapes():
    layer = MultiHeadAttention(2, 2, name="att")
    with pytest.raises(ValueError, match=r"MultiHeadAttention 'att' expects 3-D inputs"):
        layer.init(0, (None, 4))
    with pytest.raises(ValueError, match=r"same time axis"):
        layer.init(0, ((None, 3, 4), (None, 5, 4), (None, 6, 4)))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(batch, 3, 5\)"):
        layer.init(0, ((None, 3, 4), (None, 5, 4), (None, 5, 4), (None, 5, 3)))
    params, _, _ = layer.init(0, (None, 3, 4))
    x = np.ones((2, 3, 4), dtype=np.float32)
    with pytest.raises(
        ValueError, match=r"'att' expects query of shape \(2, time, 4\), got .*\(2, 3, 5\)"
    ):
        layer.forward(params, {}, np.ones((2, 3, 5), dtype=np.float32))
    with pytest.raises(ValueError, match=r"'att' expects value of shape \(2, time, 4\)"):
        layer.forward(params, {}, (x, np.ones((3, 3, 4), dtype=np.float32), x))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(2, 3, 3\)"):
        layer.forward(params, {}, (x, x, x, np.ones((2, 3, 4))))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(2, 3, 3\)"):
        layer.forward(params, {}, (x, x, x, np.ones((3, 3, 3))))
    with pytest.raises(ValueError, match=r"a tuple of 2 arrays"):
        layer.forward(params, {}, (x, x))


@pytest.mark.parametrize("name", ["cross-causal", "dropout"])
def test_generic_code_is_standard_array_api(name):
    # The forward and backprop on array_api_strict arrays (which refuse anything outside the
    # standard) give NumPy's numbers.
    xps = pytest.importorskip("array_api_strict")
    case = _case(name, "float64")
    layer, params, inputs, mask, dy, opts = case
    strict = lambda a: xps.asarray(np.asarray(a))  # noqa: E731
    x = tree_map(strict, inputs if mask is None else (*inputs, mask))
    sopts = {**opts, **({"key": strict(opts["key"])} if "key" in opts else {})}
    y, _, backprop = layer.forward(tree_map(strict, params), {}, x, **sopts)
    dx, grads = backprop(strict(dy))
    with wf.use_backend("numpy"):
        ey, edx, egrads = _run(*case)
    assert isinstance(y, type(xps.asarray(0.0)))
    dx = dx if mask is None else dx[:3]
    host = lambda a: np.asarray(a)  # noqa: E731
    _compare((host(y), tree_map(host, dx), tree_map(host, grads)), (ey, edx, egrads), 1e-12, 1e-15)


def test_float16_stays_finite(backend):
    # The masked fill is -3e4 in float16 (Keras), which float16 holds; -1e9 would be -inf.
    layer, params, inputs, mask, dy, opts = _case("cross-causal", "float32")
    expected = _run(layer, params, inputs, mask, dy, opts)[0]
    half = wf.precision.dtype_in(backend.xp, "float16")
    cast = lambda a: backend.xp.astype(backend.asarray(a), half)  # noqa: E731
    x = tuple(cast(a) for a in (*inputs, mask))
    y, _, backprop = layer.forward(tree_map(cast, params), {}, x, **opts)
    assert y.dtype == half
    y = np.asarray(wf.to_numpy(y), dtype=np.float32)
    np.testing.assert_allclose(y, expected, rtol=0, atol=5e-3)
    if backend.name != "jax":
        dq = np.asarray(wf.to_numpy(backprop(cast(dy))[0][0]), dtype=np.float32)
        assert np.isfinite(dq).all()
