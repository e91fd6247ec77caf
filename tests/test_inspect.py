"""weight_stats: numbers against NumPy by hand, initializer stds against fresh layers, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import wframe as wf
from wframe.inspect import NEAR_ZERO, expected_std, initializer_moments, weight_stats

L = wf.layers


def _by_name(rows):
    return {r["name"]: r for r in rows}


def test_weight_stats_numbers_match_numpy(backend):
    model = wf.Sequential([L.Dense(5), L.Dense(3, use_bias=False)], seed=1).build((None, 4))
    w = np.asarray(wf.to_numpy(model.params["dense_0"]["W"]), dtype=np.float64)
    w[0, :2] = 0.0  # exact zeros
    w[1, 0] = 1e-6 * np.abs(w).max()  # near zero, not zero
    b = np.arange(5, dtype="float32") - 2
    dense_0 = {"W": backend.asarray(w.astype("float32")), "b": backend.asarray(b)}
    model.params = {**model.params, "dense_0": dense_0}
    lines = []
    rows = weight_stats(model, print_fn=lines.append)
    assert [r["name"] for r in rows] == ["dense_0/W", "dense_0/b", "dense_1/W"]
    params = {
        "dense_0/W": model.params["dense_0"]["W"],
        "dense_0/b": model.params["dense_0"]["b"],
        "dense_1/W": model.params["dense_1"]["W"],
    }
    for row in rows:
        a = np.asarray(wf.to_numpy(params[row["name"]]), dtype=np.float64)
        assert row["shape"] == a.shape and row["size"] == a.size
        np.testing.assert_allclose(
            [row[k] for k in ("mean", "std", "min", "max", "l1", "l2")],
            [a.mean(), a.std(), a.min(), a.max(), np.abs(a).sum(), np.linalg.norm(a)],
            rtol=1e-12,
        )
        assert row["sparsity"] == np.mean(a == 0)
        near = (np.abs(a) < NEAR_ZERO * np.abs(a).max()) | (a == 0)
        assert row["near_zero"] == np.mean(near)
    first = _by_name(rows)["dense_0/W"]
    assert first["sparsity"] == 2 / 20 and first["near_zero"] == 3 / 20
    assert first["initializer"] == "glorot_uniform"
    assert first["init_std"] == pytest.approx(math.sqrt(2 / (4 + 5)))
    assert _by_name(rows)["dense_0/b"]["init_std"] == 0.0
    # The printed table: one line per param, and the near-zero rule stated.
    (text,) = lines
    assert all(name in text for name in params)
    assert "near_zero" in text and "0.001" in text and "init_std" in text


@pytest.mark.parametrize(
    ("init", "formula"),
    [
        ("glorot_uniform", lambda i, o: math.sqrt(2 / (i + o))),
        ("glorot_normal", lambda i, o: math.sqrt(2 / (i + o))),
        ("he_normal", lambda i, o: math.sqrt(2 / i)),
        ("he_uniform", lambda i, o: math.sqrt(2 / i)),
        ("lecun_normal", lambda i, o: math.sqrt(1 / i)),
        ("orthogonal", lambda i, o: 1 / math.sqrt(max(i, o))),
    ],
)
@pytest.mark.parametrize("shape", [(512, 512), (256, 768)], ids=["square", "wide"])
def test_init_std_is_the_formula_and_the_empirical_std(init, formula, shape):
    model = wf.Sequential([L.Dense(shape[1], kernel_init=init)], seed=3).build((None, shape[0]))
    row = weight_stats(model, print_fn=None, names="dense_0/W")[0]
    assert row["init_std"] == pytest.approx(formula(*shape), rel=1e-12)
    assert row["std"] == pytest.approx(row["init_std"], rel=0.05)


@pytest.mark.parametrize(
    ("init", "expected"),
    [
        (wf.initializers.truncated_normal(0.0, 0.1), 0.1 * 0.87962566103423978),  # not corrected
        (wf.initializers.normal(0.0, 0.02), 0.02),
        (wf.initializers.uniform(-0.3, 0.1), 0.4 / math.sqrt(12)),
        (wf.initializers.orthogonal(gain=2.0), 2.0 / math.sqrt(512)),
        (wf.initializers.constant(0.5), 0.0),
    ],
    ids=["truncated_normal", "normal", "uniform", "orthogonal_gain", "constant"],
)
def test_parametrized_initializers_give_their_actual_std(init, expected):
    model = wf.Sequential([L.Dense(512, kernel_init=init)], seed=0).build((None, 256))
    row = weight_stats(model, print_fn=None, names="dense_0/W")[0]
    assert row["init_std"] == pytest.approx(expected, rel=1e-12)
    assert row["std"] == pytest.approx(expected, rel=0.05, abs=1e-7)


def test_conv_recurrent_norm_and_custom_initializers():
    custom = lambda key, shape, dtype="float32": wf.initializers.zeros(key, shape, dtype)  # noqa: E731
    conv = wf.Sequential(
        [
            L.Conv2D(64, 3, kernel_init="he_normal"),
            L.BatchNorm(),
            L.Flatten(),
            L.Dense(4, kernel_init=custom),
        ],
        seed=0,
    ).build((None, 12, 12, 32))
    stds = expected_std(conv)
    assert stds["conv2d_0/W"] == pytest.approx(math.sqrt(2 / (3 * 3 * 32)))  # receptive field
    assert stds["batch_norm_0/gamma"] == 0.0 and stds["batch_norm_0/beta"] == 0.0
    assert stds["dense_0/W"] is None  # a custom callable: unknown
    rows = _by_name(weight_stats(conv, print_fn=None))
    assert rows["conv2d_0/W"]["std"] == pytest.approx(stds["conv2d_0/W"], rel=0.05)
    assert rows["dense_0/W"]["initializer"] == "<lambda>"

    rnn = wf.Sequential([L.LSTM(64)], seed=0).build((None, 5, 16))
    rows = _by_name(weight_stats(rnn, print_fn=None))
    assert rows["lstm_0/W_h"]["init_std"] == pytest.approx(1 / math.sqrt(4 * 64))  # (u, 4u)
    # unit_forget_bias: a quarter of b is 1, the rest zeros.
    assert rows["lstm_0/b"]["init_std"] == pytest.approx(math.sqrt(0.25 * 0.75))
    for name in ("lstm_0/W_x", "lstm_0/W_h", "lstm_0/b"):
        assert rows[name]["std"] == pytest.approx(rows[name]["init_std"], rel=0.05)


def test_nested_containers_find_their_layers_initializers():
    block = L.Sequential([L.Dense(8, kernel_init="he_normal"), L.Dense(8)], name="block_0")
    model = wf.Sequential([L.Residual(block), L.Dense(2, kernel_init="lecun_normal")])
    model.build((None, 8))
    rows = _by_name(weight_stats(model, print_fn=None))
    assert rows["residual_0/dense_0/W"]["initializer"] == "he_normal"
    assert rows["residual_0/dense_1/W"]["initializer"] == "glorot_uniform"
    assert rows["dense_0/W"]["init_std"] == pytest.approx(math.sqrt(1 / 8))
    only = weight_stats(model, print_fn=None, names="residual_0/dense_1")
    assert [r["name"] for r in only] == ["residual_0/dense_1/W", "residual_0/dense_1/b"]


def test_initializer_moments_of_names_and_unknowns():
    assert initializer_moments("ones", (3,)) == (1.0, 0.0)
    assert initializer_moments("he_normal", (10, 4)) == (0.0, math.sqrt(0.2))
    assert initializer_moments("no_such_init", (3,)) is None


def test_errors_name_what_exists():
    model = wf.Sequential([L.Dense(3), L.Dense(2)])
    with pytest.raises(RuntimeError, match="never built.*model.build"):
        weight_stats(model)
    model.build((None, 4))
    with pytest.raises(
        ValueError, match=r"'dense_9'.*dense_0/W.*dense_1/b.*\['dense_0', 'dense_1'\]"
    ):
        weight_stats(model, print_fn=None, names=["dense_0", "dense_9"])
    with pytest.raises(TypeError, match="wf.Sequential"):
        weight_stats({"dense_0": {}})
