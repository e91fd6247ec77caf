"""Attributions (wframe.explain): closed forms on a linear model, completeness, backends agree,
captum and shap as oracles, chunking changes nothing, bad input, and the example."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import wframe as wf
from wframe import explain
from wframe.testing import numerical_grad
from wframe.tree import tree_map

METHODS = ("riemann_trapezoid", "gausslegendre")
EXAMPLES = Path(__file__).parent.parent / "examples"


def host(a):
    return np.asarray(wf.to_numpy(a), dtype=np.float64)


def linear(features=5):
    model = wf.Sequential([wf.layers.Dense(3)], seed=3)
    return model.build((None, features))


def mlp(activation="tanh", seed=0):
    model = wf.Sequential(
        [
            wf.layers.Dense(16, activation=activation),
            wf.layers.Dense(8, activation=activation),
            wf.layers.Dense(3),
        ],
        seed=seed,
    )
    return model.build((None, 6))


def conv():
    layers = wf.layers
    model = wf.Sequential(
        [layers.Conv2D(3, 3, padding="same", activation="tanh"), layers.Flatten(), layers.Dense(4)],
        seed=1,
    )
    return model.build((None, 6, 5, 2))


def data(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def digits_net():
    """The MLP of examples/train_digits.py."""
    dense = wf.layers.Dense
    return wf.Sequential(
        [
            dense(128, activation="relu", kernel_init="he_normal"),
            dense(64, activation="relu", kernel_init="he_normal"),
            dense(10),
        ],
    )


@pytest.fixture(scope="module")
def digits_mlp():
    """The train_digits MLP trained briefly on numpy; its host params and test digits."""
    sklearn = pytest.importorskip("sklearn.datasets")
    x, y = sklearn.load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    with wf.use_backend("numpy"):
        model = digits_net()
        model.fit(x[:1400], y[:1400], epochs=2, optimizer=wf.optimizers.adam(1e-3), verbose=0)
    return model, x[1400:1500]


# ----------------------------------------------------------------- closed forms
def test_linear_model_closed_forms(backend):
    model = linear()
    W = host(model.params["dense_0"]["W"])
    x, base = data((4, 5)), data((5,), seed=1)
    t = np.array([0, 2, 1, 2])
    expected = W[:, t].T * (x - base)  # w[:, target] * (x - baseline)
    for method in METHODS:
        attr, delta = explain.integrated_gradients(model, x, base, t, method=method)
        np.testing.assert_allclose(host(attr), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(host(delta), 0, atol=1e-5)
    np.testing.assert_allclose(
        host(explain.gradient_x_input(model, x, t)), W[:, t].T * x, rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(host(explain.smoothgrad(model, x, t)), W[:, t].T, rtol=1e-5)
    exact = explain.shapley_sampling(model, x, base, t)  # 5 features: exact enumeration
    sampled = explain.shapley_sampling(model, x, base, t, exact=False, n_permutations=3)
    for phi in (exact, sampled):
        np.testing.assert_allclose(host(phi), expected, rtol=1e-5, atol=1e-5)
    # k background rows: the values explain f(x) - mean f(background).
    bg = data((7, 5), seed=2)
    phi = explain.shapley_sampling(model, x, bg, 1)
    np.testing.assert_allclose(host(phi), W[:, 1] * (x - bg.mean(axis=0)), rtol=1e-5, atol=1e-5)
    assert all(type(a) is type(model.params["dense_0"]["W"]) for a in (attr, phi, exact))


def test_shapley_samples_above_ten_features(backend):
    model = linear(12)
    W = host(model.params["dense_0"]["W"])
    x, bg = data((3, 12)), data((4, 12), seed=1)
    phi = explain.shapley_sampling(model, x, bg, n_permutations=2)
    t = np.argmax(host(model.predict(x)), axis=1)  # the default target: the predicted class
    np.testing.assert_allclose(host(phi), W[:, t].T * (x - bg.mean(axis=0)), atol=1e-5)


def test_exact_and_sampled_shapley_agree_on_a_nonlinear_model(backend):
    # Efficiency: each sample's values sum to f(x) - f(baseline); sampling converges to them.
    model = mlp("relu")
    x, base = data((3, 6)), data((6,), seed=1)
    phi = host(explain.shapley_sampling(model, x, base, 0))
    f = host(model.predict(np.concatenate([x, base[None]])))[:, 0]
    np.testing.assert_allclose(phi.sum(axis=1), f[:3] - f[3], rtol=1e-4, atol=1e-5)
    sampled = host(explain.shapley_sampling(model, x, base, 0, exact=False, n_permutations=400))
    np.testing.assert_allclose(sampled, phi, atol=0.05 * np.abs(phi).max())


# ----------------------------------------------------------------- completeness
@pytest.mark.parametrize("method", METHODS)
def test_completeness_within_one_percent(backend, digits_mlp, method):
    trained, x = digits_mlp
    model = digits_net().build((None, 64))
    model.params = tree_map(backend.asarray, backend.to_host(trained.params))
    for m, xs in ((model, x), (mlp("tanh"), data((20, 6)))):
        attr, delta = explain.integrated_gradients(m, xs, steps=64, method=method)
        logits = host(m.predict(np.concatenate([xs, np.zeros_like(xs[:1])])))
        t = np.argmax(logits[:-1], axis=1)
        change = logits[np.arange(len(xs)), t] - logits[-1, t]
        total = host(attr).reshape(len(xs), -1).sum(axis=1)
        np.testing.assert_allclose(host(delta), total - change, atol=1e-4)
        rel = np.abs(host(delta)) / np.abs(change)
        assert rel.max() < 0.01, (method, rel.max())


# ----------------------------------------------------------------- backends and chunking
def test_numpy_and_jax_agree(jax):
    x, xi = data((5, 6)), data((3, 6, 5, 2))
    bg = data((4, 6), seed=1)
    results = {}
    for name in ("numpy", "jax"):
        with wf.use_backend(name):
            m, c = mlp("tanh"), conv()
            results[name] = [
                *explain.integrated_gradients(m, x, method="riemann_trapezoid"),
                *explain.integrated_gradients(m, x, 0.5, [0, 1, 2, 0, 1], method="gausslegendre"),
                explain.gradient_x_input(m, x),
                explain.smoothgrad(m, x, 2, n_samples=8),
                explain.shapley_sampling(m, x, bg),
                explain.shapley_sampling(m, x, bg, exact=False, n_permutations=4),
                explain.occlusion(c, xi, window=(2, 3), stride=(1, 2)),
                explain.gradient_x_input(c, xi),
            ]
    for i, (a, b) in enumerate(zip(results["numpy"], results["jax"], strict=True)):
        np.testing.assert_allclose(host(a), host(b), rtol=1e-4, atol=1e-5, err_msg=str(i))


def test_chunking_changes_nothing(monkeypatch):
    # The chunking is the same Python on every backend (and jax would retrace per chunk shape).
    with wf.use_backend("numpy"):
        m, c = mlp("relu"), conv()
    x, xi, bg = data((5, 6)), data((3, 6, 5, 2)), data((3, 6), seed=1)

    def run():
        return [
            explain.integrated_gradients(m, x, steps=8).attributions,
            explain.smoothgrad(m, x, n_samples=4, seed=3),
            explain.shapley_sampling(m, x, bg, exact=False, n_permutations=3),
            explain.shapley_sampling(m, x, bg),
            explain.occlusion(c, xi),
        ]

    whole = run()
    monkeypatch.setattr(explain.common, "rows_per_call", lambda model: 7)  # chunks everywhere
    for a, b in zip(whole, run(), strict=True):
        np.testing.assert_allclose(host(a), host(b), rtol=1e-5, atol=1e-6)


def test_smoothgrad_noise_is_seeded(backend):
    m, x = mlp("tanh"), data((4, 6))
    a, b = explain.smoothgrad(m, x, seed=1), explain.smoothgrad(m, x, seed=1)
    np.testing.assert_array_equal(host(a), host(b))
    assert not np.allclose(host(a), host(explain.smoothgrad(m, x, seed=2)))
    plain = explain.smoothgrad(m, x, noise=0.0, n_samples=2)  # no noise: the plain gradient
    np.testing.assert_allclose(host(plain) * x, host(explain.gradient_x_input(m, x)), atol=1e-6)


# ----------------------------------------------------------------- captum and shap
def _torch_mlp(model):
    torch = pytest.importorskip("torch")
    p = model.params
    mods = []
    for name in ("dense_0", "dense_1", "dense_2"):
        W, b = host(p[name]["W"]), host(p[name]["b"])
        lin = torch.nn.Linear(*W.shape)
        lin.weight.data = torch.tensor(W.T, dtype=torch.float32)  # torch's weight is W.T
        lin.bias.data = torch.tensor(b, dtype=torch.float32)
        mods += [lin, torch.nn.Tanh()]
    return torch.nn.Sequential(*mods[:-1])


@pytest.mark.parametrize("method", METHODS)
def test_integrated_gradients_match_captum(backend, method):
    torch = pytest.importorskip("torch")
    captum = pytest.importorskip("captum.attr")
    model, x, base = mlp("tanh"), data((6, 6)), data((6,), seed=1)
    t = np.array([0, 1, 2, 0, 1, 2])
    ig = captum.IntegratedGradients(_torch_mlp(model))
    theirs, their_delta = ig.attribute(
        torch.tensor(x),
        torch.tensor(base[None]),
        target=torch.tensor(t),
        n_steps=32,
        method=method,
        return_convergence_delta=True,
    )
    attr, delta = explain.integrated_gradients(model, x, base, t, steps=32, method=method)
    # captum's trapezoid weights sum to 1 - 1/n (step 1/n, ends halved) where ours sum to 1.
    scale = 31 / 32 if method == "riemann_trapezoid" else 1.0
    np.testing.assert_allclose(host(attr) * scale, theirs.double().numpy(), rtol=1e-4, atol=1e-6)
    if method == "gausslegendre":
        np.testing.assert_allclose(host(delta), their_delta.double().numpy(), atol=1e-5)


def test_occlusion_matches_captum(backend):
    torch = pytest.importorskip("torch")
    captum = pytest.importorskip("captum.attr")
    model, x = conv(), data((3, 6, 5, 2))
    p = model.params
    kernel = torch.nn.Conv2d(2, 3, 3, padding=1)
    kernel.weight.data = torch.tensor(host(p["conv2d_0"]["W"]).transpose(3, 2, 0, 1)).float()
    kernel.bias.data = torch.tensor(host(p["conv2d_0"]["b"])).float()
    head = torch.nn.Linear(30 * 3, 4)
    head.weight.data = torch.tensor(host(p["dense_0"]["W"]).T).float()
    head.bias.data = torch.tensor(host(p["dense_0"]["b"])).float()

    def twin(nhwc):  # NHWC in, flattened NHWC as wframe's Flatten
        y = torch.tanh(kernel(nhwc.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
        return head(y.reshape(len(y), -1))

    t = np.array([3, 0, 1])
    for window, stride, base in (((2, 2), (1, 1), 0.0), ((3, 2), (2, 1), 0.5)):
        theirs = captum.Occlusion(twin).attribute(
            torch.tensor(x),
            sliding_window_shapes=(*window, 2),
            strides=(*stride, 2),
            baselines=base,
            target=torch.tensor(t),
        )
        ours = explain.occlusion(model, x, t, window=window, stride=stride, baseline=base)
        np.testing.assert_allclose(host(ours), theirs.double().numpy(), rtol=1e-4, atol=1e-5)


def test_predict_drives_shap_explainers(backend):
    shap = pytest.importorskip("shap")
    model = linear()
    W = host(model.params["dense_0"]["W"])
    x, bg = data((3, 5)), data((10, 5), seed=1)
    kernel = shap.KernelExplainer(model.predict, bg)
    values = np.asarray(kernel.shap_values(x, nsamples=200, silent=True))
    assert values.shape == (3, 5, 3)  # (samples, features, outputs)
    closed = W[None, :, :] * (x - bg.mean(axis=0))[:, :, None]
    np.testing.assert_allclose(values, closed, rtol=1e-3, atol=1e-4)
    ours = explain.shapley_sampling(model, x, bg, 2)
    np.testing.assert_allclose(host(ours), values[:, :, 2], rtol=1e-3, atol=1e-4)
    # (shap's PermutationExplainer takes predict the same way; its first call compiles numba
    # code for 7 s, so the suite leaves it out.)


# ----------------------------------------------------------------- bad input
def test_bad_input(backend):
    m, x = linear(), data((2, 5))
    with pytest.raises(ValueError, match=r"\[0, 3\): the model has 3 outputs, got 3"):
        explain.gradient_x_input(m, x, 3)
    with pytest.raises(ValueError, match="has 3 outputs, got -1"):
        explain.integrated_gradients(m, x, target=[0, -1])
    with pytest.raises(ValueError, match=r"one index per sample \(shape \(2,\)\)"):
        explain.smoothgrad(m, x, [0, 1, 2])
    with pytest.raises(ValueError, match="x has no examples"):
        explain.gradient_x_input(m, x[:0])
    with pytest.raises(TypeError, match="target must be an int"):
        explain.gradient_x_input(m, x, 1.5)
    with pytest.raises(ValueError, match=r"baseline must be .* got shape \(4,\)"):
        explain.integrated_gradients(m, x, np.zeros(4))
    with pytest.raises(ValueError, match="steps must be an int >= 2, got 1"):
        explain.integrated_gradients(m, x, steps=1)
    with pytest.raises(ValueError, match="method must be one of"):
        explain.integrated_gradients(m, x, method="left")
    with pytest.raises(ValueError, match="noise must be a number >= 0"):
        explain.smoothgrad(m, x, noise=-0.1)
    with pytest.raises(ValueError, match=r"background must be .* got shape \(3, 4\)"):
        explain.shapley_sampling(m, x, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="Dense 'dense_0' expects inputs"):
        explain.gradient_x_input(m, data((2, 4)))
    with pytest.raises(ValueError, match=r"images \(batch, H, W, C\)"):
        explain.occlusion(m, x)
    c = conv()
    with pytest.raises(ValueError, match="window .* is larger than the images"):
        explain.occlusion(c, data((1, 6, 5, 2)), window=(7, 2))
    with pytest.raises(ValueError, match="stride must be an int >= 1"):
        explain.occlusion(c, data((1, 6, 5, 2)), stride=0)
    with pytest.raises(ValueError, match="exact=True enumerates 2\\^30"):
        explain.shapley_sampling(linear(30), data((1, 30)), np.zeros(30), exact=True)


# ----------------------------------------------------------------- the example
def test_example_runs_quick_on_numpy(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("scipy")
    out = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "explain_digits.py"),
            "--quick",
            "--out",
            str(tmp_path / "attr.png"),
        ],
        env={**os.environ, "WFRAME_BACKEND": "numpy"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    gaps = re.findall(r"(riemann_trapezoid|gausslegendre): median \S+, max (\S+)", out.stdout)
    assert len(gaps) == 2 and all(float(g) < 0.01 for _, g in gaps), out.stdout
    assert len(re.findall(r'^- ".+": (holds|does not hold): ', out.stdout, re.M)) == 2
    if "figure: skipped" not in out.stdout:
        assert list(tmp_path.glob("attr*.png")), out.stdout


# ----------------------------------------------------------------- graph models
def multi_net(dtype="float32", seed=1):
    """An image, a vector and token ids in; a class head and a regression head out."""
    L = wf.layers
    img, vec = wf.Input((3, 4, 1), name="img"), wf.Input((3,), name="vec")
    ids = wf.Input((2,), dtype="int32", name="ids")
    tokens = L.Flatten()(L.Embedding(7, 2)(ids))
    h = L.Concatenate()([L.Dense(4, activation="tanh")(L.Flatten()(img)), vec, tokens])
    h = L.Dense(5, activation="tanh")(h)
    heads = [L.Dense(3, name="cls")(h), L.Dense(1, name="reg")(h)]
    return wf.Model([img, vec, ids], heads, seed=seed, dtype=dtype)


def multi_data(n=3, dtype="float32"):
    rng = np.random.default_rng(5)
    return [
        rng.normal(size=(n, 3, 4, 1)).astype(dtype),
        rng.normal(size=(n, 3)).astype(dtype),
        rng.integers(0, 7, size=(n, 2)).astype("int32"),
    ]


def linear_two_inputs():
    """Dense(3) on [flattened image, vector]: W's first 12 rows see the image, the last 3 the
    vector."""
    img, vec = wf.Input((3, 4, 1), name="img"), wf.Input((3,), name="vec")
    joined = wf.layers.Concatenate()([wf.layers.Flatten()(img), vec])
    return wf.Model([img, vec], wf.layers.Dense(3)(joined), seed=4)


def test_graph_model_of_one_input_equals_sequential(backend):
    def stack():
        return [wf.layers.Flatten(), wf.layers.Dense(4, activation="tanh"), wf.layers.Dense(3)]

    seq = wf.Sequential(stack(), seed=2).build((None, 4, 3, 1))
    h = inp = wf.Input((4, 3, 1))
    for layer in stack():
        h = layer(h)
    graph = wf.Model(inp, h, seed=2)
    x, bg, t = data((2, 4, 3, 1)), data((4, 3, 1), seed=1), [1, 2]

    def run(m):
        return [
            explain.gradient_x_input(m, x, t),
            *explain.integrated_gradients(m, x, 0.5, t, steps=4),
            explain.smoothgrad(m, x, t, n_samples=3),
            explain.occlusion(m, x, t),
            explain.shapley_sampling(m, x, bg, t, exact=False, n_permutations=1),
        ]

    for a, b in zip(run(seq), run(graph), strict=True):
        assert type(a) is type(b)
        np.testing.assert_allclose(host(a), host(b), rtol=1e-6, atol=1e-7)


def test_several_inputs_numpy_and_jax_agree(jax):
    x = multi_data()
    bg = [data((2, 3, 4, 1), seed=2), data((2, 3), seed=3), None]
    results = {}
    for name in ("numpy", "jax"):
        with wf.use_backend(name):
            m = multi_net()
            gxi = explain.gradient_x_input(m, x, output="cls")
            named = {"img": x[0], "vec": x[1], "ids": x[2]}
            ig = explain.integrated_gradients(m, named, output=1, steps=8)
            sg = explain.smoothgrad(m, x, output=0, n_samples=3)
            occ = explain.occlusion(m, x, [0, 2, 1], output="cls", baseline=0.5)
            phi = explain.shapley_sampling(m, x, bg, output="reg", exact=False, n_permutations=2)
            assert isinstance(gxi, list) and isinstance(ig.attributions, dict)
            assert gxi[2] is None and ig.attributions["ids"] is None and sg[2] is None
            assert occ[1] is None and occ[2] is None and phi[2] is None
            attributions = ig.attributions
            results[name] = [*gxi[:2], attributions["img"], attributions["vec"], ig.delta]
            results[name] += [*sg[:2], occ[0], *phi[:2]]
    for i, (a, b) in enumerate(zip(results["numpy"], results["jax"], strict=True)):
        np.testing.assert_allclose(host(a), host(b), rtol=1e-5, atol=1e-6, err_msg=str(i))


def _head(model, xs, output, t):
    """The explained output of each row, on the host (float64)."""
    return host(model.predict(xs)[output])[np.arange(len(xs[0])), t]


def test_several_inputs_finite_differences_completeness_and_occlusion():
    with wf.use_backend("numpy"):
        m = multi_net("float64")
    x, t = multi_data(dtype="float64"), np.array([2, 0, 1])
    for output, targets in (("reg", 0 * t), ("cls", t)):
        gxi = explain.gradient_x_input(m, x, targets, output=output)
        for i in (0, 1):

            def f(v, i=i, output=output, targets=targets):
                return _head(m, [*x[:i], v, *x[i + 1 :]], m.output_names.index(output), targets)

            grad = numerical_grad(lambda v, f=f: f(v).sum(), x[i].copy())
            np.testing.assert_allclose(host(gxi[i]), x[i] * grad, rtol=1e-6, atol=1e-9)
    plain = explain.smoothgrad(m, x, t, noise=0.0, n_samples=2, output="cls")
    for i in (0, 1):  # no noise: the plain gradient (gxi is the "cls" one)
        np.testing.assert_allclose(host(plain[i]) * x[i], host(gxi[i]), rtol=1e-12, atol=1e-15)
    # Completeness over both float inputs together; the ids stay at x.
    base = {"img": 0.25, "vec": data((3,), seed=4).astype("float64")}
    attr, delta = explain.integrated_gradients(m, x, base, t, output="cls", method="gausslegendre")
    change = _head(m, x, 0, t) - _head(m, [x[0] * 0 + 0.25, x[1] * 0 + base["vec"], x[2]], 0, t)
    total = host(attr[0]).sum(axis=(1, 2, 3)) + host(attr[1]).sum(axis=1)
    np.testing.assert_allclose(host(delta), total - change, atol=1e-12)
    np.testing.assert_allclose(host(delta), 0, atol=1e-8)
    # Occlusion of the image by hand: each 2x2 window's drop, averaged over covering windows.
    occ = host(explain.occlusion(m, x, t, output="cls", baseline=0.5)[0])
    drops, counts = np.zeros(x[0].shape), np.zeros(x[0].shape)
    for r in range(2):
        for c in range(3):
            covered = x[0].copy()
            covered[:, r : r + 2, c : c + 2] = 0.5
            drop = _head(m, x, 0, t) - _head(m, [covered, *x[1:]], 0, t)
            drops[:, r : r + 2, c : c + 2] += drop[:, None, None, None]
            counts[:, r : r + 2, c : c + 2] += 1
    np.testing.assert_allclose(occ, drops / counts, rtol=1e-9, atol=1e-12)


def test_two_inputs_linear_closed_forms(backend):
    m = linear_two_inputs()
    W = host(m.params["dense_0"]["W"])
    x, t = [data((3, 3, 4, 1)), data((3, 3), seed=1)], np.array([0, 2, 1])
    image = data((3, 4, 1), seed=2)
    w_img, w_vec = W[:12, t].T.reshape(3, 3, 4, 1), W[12:, t].T  # the concatenation's order
    expected = [w_img * (x[0] - image), w_vec * (x[1] - 0.5)]
    attr, delta = explain.integrated_gradients(m, x, [image, 0.5], t, steps=2)
    # 15 features: sampled, which is exact on a linear model.
    phi = explain.shapley_sampling(m, x, {"img": image, "vec": np.full(3, 0.5)}, t)
    for got in (attr, phi):
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(host(g), e, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(host(delta), 0, atol=1e-5)
    gxi = explain.gradient_x_input(m, x, t)
    np.testing.assert_allclose(host(gxi[0]), w_img * x[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(host(gxi[1]), w_vec * x[1], rtol=1e-5, atol=1e-6)
    occ = explain.occlusion(m, x, t, window=1, baseline=[image, None])  # 1x1: W * (x - base)
    assert occ[1] is None
    np.testing.assert_allclose(host(occ[0]), expected[0], rtol=1e-5, atol=1e-5)


def test_output_selects_the_head(backend):
    m, x = multi_net(), multi_data()
    reg, by_index = (explain.gradient_x_input(m, x, 0, output=o) for o in ("reg", 1))
    cls = explain.gradient_x_input(m, x, 0, output="cls")
    np.testing.assert_array_equal(host(reg[1]), host(by_index[1]))
    assert not np.allclose(host(reg[1]), host(cls[1]))
    keys = {k for k in m.trainer.memos() if k[:2] == ("explain", "gxi")}
    assert keys == {("explain", "gxi", 0), ("explain", "gxi", 1)}  # one compile per output
    one, xs = linear(), data((2, 5))
    plain = host(explain.gradient_x_input(one, xs, 1))
    for output in (0, "dense_0"):
        np.testing.assert_array_equal(
            host(explain.gradient_x_input(one, xs, 1, output=output)), plain
        )


def test_bad_input_of_graph_models(backend):
    m, x = multi_net(), multi_data()
    ig, gxi = explain.integrated_gradients, explain.gradient_x_input
    with pytest.raises(ValueError, match=r"has 2 outputs \['cls', 'reg'\]; pass output="):
        gxi(m, x, 0)
    with pytest.raises(ValueError, match=r"'nope' is not one of the outputs \['cls', 'reg'\]"):
        explain.smoothgrad(m, x, 0, output="nope")
    with pytest.raises(ValueError, match=r"output 2 is out of range: the model has 2 outputs"):
        explain.occlusion(m, x, 0, output=2)
    with pytest.raises(ValueError, match="output must be an int >= 0, got -1"):
        explain.shapley_sampling(m, x, None, 0, output=-1)
    with pytest.raises(ValueError, match=r"\[0, 1\): output 'reg' has 1 outputs, got 1"):
        gxi(m, x, 1, output="reg")
    with pytest.raises(ValueError, match=r"baseline: 2 entries for the model's 3 inputs"):
        ig(m, x, [0, 0], 0, output=0)
    with pytest.raises(ValueError, match=r"baseline\['ids'\] must be None: input 'ids' gets no"):
        ig(m, x, {"ids": 0}, 0, output=0)
    with pytest.raises(ValueError, match=r"unknown input names \['nope'\]"):
        ig(m, x, {"nope": 0}, 0, output=0)
    with pytest.raises(ValueError, match="give a list of one per input .* got one array"):
        ig(m, x, np.zeros(3), 0, output=0)
    with pytest.raises(ValueError, match=r"baseline\['vec'\] must be .* got shape \(4,\)"):
        ig(m, x, [None, np.zeros(4), None], 0, output=0)
    with pytest.raises(ValueError, match=r"background\['vec'\] is missing"):
        explain.shapley_sampling(m, x, [np.zeros((3, 4, 1)), None, None], 0, output=0)
    with pytest.raises(ValueError, match=r"same number of rows .* \{'img': 2, 'vec': 3\}"):
        explain.shapley_sampling(
            m, x, [np.zeros((2, 3, 4, 1)), np.zeros((3, 3)), None], 0, output=0
        )
    with pytest.raises(ValueError, match=r"occlusion: baseline\['vec'\] must be None"):
        explain.occlusion(m, x, 0, output=0, baseline=[0.0, 0.0, None])
    a, b = wf.Input((5,)), wf.Input((3,))
    vectors = wf.Model([a, b], wf.layers.Dense(2)(wf.layers.Concatenate()([a, b])))
    with pytest.raises(ValueError, match=r"got inputs of shapes \[\(2, 5\), \(2, 3\)\]; a grad"):
        explain.occlusion(vectors, [data((2, 5)), data((2, 3))], 0)
    ids = wf.Input((2,), dtype="int32")
    tokens = wf.Model(ids, wf.layers.Dense(2)(wf.layers.Flatten()(wf.layers.Embedding(7, 2)(ids))))
    with pytest.raises(ValueError, match=r"inputs \['input_0'\] are all integer"):
        gxi(tokens, np.zeros((2, 2), "int32"), 0)


def test_several_inputs_chunking_changes_nothing(monkeypatch):
    with wf.use_backend("numpy"):
        m = multi_net()
    x, bg = multi_data(n=5), {"img": data((2, 3, 4, 1), seed=2), "vec": data((2, 3), seed=3)}

    def run():
        return [
            *explain.integrated_gradients(m, x, output="cls", steps=8).attributions[:2],
            *explain.smoothgrad(m, x, output="reg", n_samples=4, seed=3)[:2],
            *explain.shapley_sampling(m, x, bg, output="cls", exact=False, n_permutations=2)[:2],
            explain.occlusion(m, x, output="cls")[0],
        ]

    whole = run()
    monkeypatch.setattr(explain.common, "rows_per_call", lambda model: 7)  # chunks everywhere
    for a, b in zip(whole, run(), strict=True):
        np.testing.assert_allclose(host(a), host(b), rtol=1e-5, atol=1e-6)
