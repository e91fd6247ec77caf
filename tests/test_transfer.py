"""wframe.transfer: PyTorch twins give the same outputs, round trips, heads and pretrained loads."""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe import transfer
from wframe.layers import (
    GRU,
    LSTM,
    Activation,
    BatchNorm,
    Conv2D,
    Dense,
    Flatten,
    LayerNorm,
    MaxPool2D,
    SimpleRNN,
)
from wframe.optimizers import GradientTransformation, sgd
from wframe.tree import tree_map

torch = pytest.importorskip("torch")
nn = torch.nn

from _torch_twins import Recurrent as _Recurrent  # noqa: E402
from _torch_twins import flat_params as _flat  # noqa: E402


def _mlp():
    twin = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    return twin, wf.Sequential([Dense(16, "relu"), Dense(3)], seed=1), (None, 6)


def _cnn():
    twin = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3),
        nn.Flatten(),
        nn.BatchNorm1d(24),
        nn.Linear(24, 5),
    )
    model = wf.Sequential(
        [
            Conv2D(4, 3, padding="same"),
            BatchNorm(epsilon=1e-5),
            Activation("relu"),
            MaxPool2D(2),
            Conv2D(6, 3),
            Flatten(),
            BatchNorm(epsilon=1e-5),
            Dense(5),
        ],
        seed=1,
    )
    twin.train()
    with torch.no_grad():  # non-trivial running statistics
        for i in range(3):
            twin(torch.randn(16, 3, 8, 9, generator=torch.Generator().manual_seed(i)) * 2 + 1)
    return twin.eval(), model, (None, 8, 9, 3)


def _rnn(kind):
    torch_cls, wf_cls = {"lstm": (nn.LSTM, LSTM), "gru": (nn.GRU, GRU), "rnn": (nn.RNN, SimpleRNN)}[
        kind
    ]
    twin = _Recurrent(torch_cls(5, 8, batch_first=True))
    return twin, wf.Sequential([wf_cls(8), Dense(3)], seed=1), (None, 7, 5)


TWINS = {
    "mlp": _mlp,
    "cnn": _cnn,
    "lstm": lambda: _rnn("lstm"),
    "gru": lambda: _rnn("gru"),
    "rnn": lambda: _rnn("rnn"),
}


def _torch_out(twin, x):
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy() if x.ndim == 4 else x)
    with torch.no_grad():
        return twin(xt).numpy()


def _data(shape, seed=0):
    return np.random.default_rng(seed).normal(size=(4, *shape[1:])).astype("float32")


@pytest.mark.parametrize("kind", list(TWINS))
def test_twin_gives_the_same_outputs(backend, kind):
    torch.manual_seed(0)
    twin, model, shape = TWINS[kind]()
    model.build(shape)
    report = transfer.from_torch(model, twin.state_dict())
    x = _data(shape)
    np.testing.assert_allclose(wf.to_numpy(model.predict(x)), _torch_out(twin, x), atol=1e-5)
    assert not report.missing and report.loaded
    assert all(why == "a counter" for _, why in report.skipped)


def test_flatten_order_is_permuted_and_the_report_says_so(backend):
    torch.manual_seed(0)
    twin, model, shape = _cnn()
    model.build(shape)
    report = transfer.from_torch(model, twin)  # the module itself: eps etc. are checked too
    text = str(report)
    assert "7.weight" in text and "dense_0/W" in text and "NCHW -> NHWC" in text
    assert "1.num_batches_tracked" in text and "skipped" in text
    # The conv output is (2, 2, 6): wframe's feature (h, w, c) is PyTorch's c * 4 + h * 2 + w.
    rows = [c * 4 + h * 2 + w for h in range(2) for w in range(2) for c in range(6)]
    weight = twin[7].weight.detach().numpy()
    np.testing.assert_array_equal(wf.to_numpy(model.params["dense_0"]["W"]), weight.T[rows])
    mean = twin[6].running_mean.numpy()
    np.testing.assert_array_equal(wf.to_numpy(model.state["batch_norm_1"]["mean"]), mean[rows])


def test_gru_bias_placement():
    # Only with b_ih != b_hh does reset_after tell the two biases apart.
    torch.manual_seed(0)
    twin, model, shape = _rnn("gru")
    with torch.no_grad():
        twin.rnn.bias_hh_l0.uniform_(-2, 2)
    model.build(shape)
    transfer.from_torch(model, twin.state_dict())
    x = _data(shape)
    np.testing.assert_allclose(model.predict(x), _torch_out(twin, x), atol=1e-5)


@pytest.mark.parametrize("kind", list(TWINS))
def test_to_torch_state_dict_round_trips(backend, kind, tmp_path):
    from safetensors.numpy import save_file

    torch.manual_seed(0)
    twin, model, shape = TWINS[kind]()
    model.build(shape)
    model.state = tree_map(lambda a: a + 0.25, model.state)  # non-trivial running statistics
    sd = transfer.to_torch_state_dict(model)
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    named = sd
    if not isinstance(twin, nn.Sequential):  # a custom module: its own names, the same order
        named = dict(zip(twin.state_dict(), sd.values(), strict=True))
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in named.items()})
    x = _data(shape)
    np.testing.assert_allclose(_torch_out(twin.eval(), x), model.predict(x), atol=1e-5)
    # Into a differently seeded model, through a file: bit for bit.
    other = wf.Sequential(list(model.layers), seed=7).build(shape)
    save_file(sd, str(tmp_path / "twin.safetensors"))
    transfer.from_torch(other, tmp_path / "twin.safetensors")
    for mine, theirs in ((model.params, other.params), (model.state, other.state)):
        a, b = _flat(mine), _flat(theirs)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_arrays_are_copies():
    twin, model, shape = _mlp()
    model.build(shape)
    sd = transfer.to_torch_state_dict(model)
    sd["0.bias"][:] = 5
    assert not np.any(wf.to_numpy(model.params["dense_0"]["b"]) == 5)


def test_unmappable_module_names_both_sides_and_assigns_nothing():
    model = wf.Sequential([Dense(4), Dense(2)]).build((None, 3))
    before = _flat(model.params)
    sd = {"0.weight": np.zeros((4, 3, 3), "float32"), "1.weight": np.zeros((2, 4), "float32")}
    with pytest.raises(ValueError, match=r"torch module '0'.*weight \(4, 3, 3\).*'dense_0'"):
        transfer.from_torch(model, sd)
    sd = {
        "0.weight": np.ones((4, 3), "float32"),
        "0.bias": np.ones(4, "float32"),
        "1.weight": np.ones((2, 5), "float32"),
    }
    with pytest.raises(ValueError, match=r"'1' \(Linear: weight \(2, 5\)\).*'dense_1'.*W"):
        transfer.from_torch(model, sd)
    assert all(np.array_equal(before[k], v) for k, v in _flat(model.params).items())
    with pytest.raises(ValueError, match="a Conv2d cannot fill a Dense"):
        transfer.from_torch(model, {"0.weight": np.zeros((4, 3, 1, 1), "float32")})
    with pytest.raises(
        ValueError, match=r"left over: torch modules \[\], wframe layers \['dense_1'\]"
    ):
        transfer.from_torch(model, {k: v for k, v in sd.items() if k.startswith("0")})


def test_eps_and_padding_are_checked_on_modules():
    model = wf.Sequential([Conv2D(2, 3), BatchNorm()]).build((None, 5, 5, 1))
    twin = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))  # eps 1e-5, wframe's 1e-3
    with pytest.raises(ValueError, match=r"eps=1e-05 differs from epsilon=0.001"):
        transfer.from_torch(model, twin)
    twin = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2, eps=1e-3))
    with pytest.raises(ValueError, match="padding"):
        transfer.from_torch(model, twin)


def test_mapping_overrides_order_and_skips():
    torch.manual_seed(0)
    twin, model, shape = _mlp()
    model.build(shape)
    sd = twin.state_dict()
    sd = {
        "extra.weight": torch.ones(3, 3),
        **{k: sd[k] for k in ("2.weight", "2.bias", "0.weight", "0.bias")},
    }
    with pytest.raises(ValueError, match="paired with wframe layer .dense_0."):
        transfer.from_torch(model, sd)
    report = transfer.from_torch(model, sd, {"extra": None, "2": "dense_1"})
    assert ("extra.weight", "mapped to None") in report.skipped
    x = _data(shape)
    np.testing.assert_allclose(model.predict(x), _torch_out(twin, x), atol=1e-5)
    with pytest.raises(ValueError, match="mapping '2': 'dense_9' names a missing"):
        transfer.from_torch(model, sd, {"2": "dense_9"})
    report = transfer.from_torch(model, {k: v for k, v in sd.items() if k[0] == "0"}, strict=False)
    assert report.missing == ["dense_1"]


def _trained():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 6)).astype("float32"), rng.integers(0, 3, 64)
    active = wf.get_backend()
    with wf.use_backend("numpy"):  # trained on the host (fast), then moved to the test's backend
        model = wf.Sequential([Dense(8, "relu"), LayerNorm(), Dense(3)], seed=3)
        model.fit(x, y, epochs=2, verbose=0)
    return model.to_backend(active), x, y


def _head_only(tx, prefix):
    """``tx`` on the params under ``prefix``; every other update is zero (a frozen body)."""

    def update(updates, state, params=None):
        zero = lambda a: a * 0  # noqa: E731
        mask = {k: v if k.startswith(prefix) else tree_map(zero, v) for k, v in updates.items()}
        return tx.update(mask, state, params)

    return GradientTransformation(tx.init, update)


def test_replace_head_keeps_the_body_and_trains_only_the_head(backend):
    model, x, y = _trained()
    plain = wf.Sequential([*model.layers[:2], Dense(2)], seed=3).build((None, 6))
    assert not np.array_equal(plain.params["dense_0"]["W"], model.params["dense_0"]["W"])
    new = transfer.replace_head(model, Dense(2))
    assert [layer.name for layer in new.layers] == ["dense_0", "layer_norm_0", "dense_1"]
    assert new.params["dense_1"]["W"].shape == (8, 2) and new.backend is model.backend
    body = {k: v for k, v in _flat(new.params).items() if not k.startswith("dense_1")}
    old = _flat(model.params)
    assert all(np.array_equal(v, old[k]) for k, v in body.items())
    assert new.params["dense_0"]["W"] is not model.params["dense_0"]["W"]
    head = _flat(new.params)["dense_1/W"]
    new.fit(x, y % 2, epochs=1, verbose=0, optimizer=_head_only(sgd(0.1), "dense_1"))
    after = _flat(new.params)
    assert all(np.array_equal(after[k], v) for k, v in body.items())
    assert not np.array_equal(after["dense_1/W"], head)
    with pytest.raises(ValueError, match="keep must select 1 to 3"):
        transfer.replace_head(model, Dense(2), keep=0)
    assert [layer.name for layer in transfer.replace_head(model, [], keep=-2).layers] == ["dense_0"]


def test_load_pretrained_filters_renames_and_reports(backend, tmp_path):
    source, _, _ = _trained()
    target = wf.Sequential([Dense(8, "relu"), LayerNorm(), Dense(4)], seed=9).build((None, 6))
    before = _flat(target.params)
    report = transfer.load_pretrained(target, source, exclude="dense_1")
    src, got = _flat(source.params), _flat(target.params)
    assert all(np.array_equal(got[k], src[k]) for k in ("dense_0/W", "layer_norm_0/gamma"))
    assert np.array_equal(got["dense_1/W"], before["dense_1/W"])
    assert ("dense_1/W", "matched by exclude") in report.skipped
    assert report.missing == ["dense_1/W", "dense_1/b"]
    report = transfer.load_pretrained(target, source, include=["dense_*"])
    assert ("dense_1/W", "shape (8, 3) != the model's (8, 4)") in report.skipped
    assert ("layer_norm_0/beta", "not matched by include") in report.skipped
    assert "dense_0/b" in str(report) and "not in the source: kept" in str(report)
    with pytest.warns(UserWarning, match=r"'conv\*' matches no name.*dense_0/W"):
        transfer.load_pretrained(target, source, include="conv*")
    # rename: a dict of prefixes or a callable; a flat dict source.
    flat = {"enc/W": np.ones((6, 8)), "enc/b": np.ones(8), "junk": np.ones(2)}
    report = transfer.load_pretrained(target, flat, rename={"enc": "dense_0"})
    assert np.all(_flat(target.params)["dense_0/W"] == 1)
    assert ("junk", "no params 'junk' in the model") in report.skipped
    assert report.loaded[0][4] == "float64 -> float32"
    report = transfer.load_pretrained(target, flat, rename=lambda n: None)
    assert not report.loaded and ("enc/W", "renamed to None") in report.skipped


def test_load_pretrained_from_a_weights_file(tmp_path):
    from wframe.saving import weights

    src = wf.Sequential([Dense(3), BatchNorm()]).build((None, 2))
    src.state = tree_map(lambda a: a + 1, src.state)
    weights.save_weights(src, tmp_path / "w.safetensors")
    dst = wf.Sequential([Dense(3), BatchNorm(), Dense(2)], seed=5).build((None, 2))
    report = transfer.load_pretrained(dst, tmp_path / "w.safetensors", exclude="*/gamma")
    got, want = (
        _flat({**dst.params, "@state": dst.state}),
        _flat({**src.params, "@state": src.state}),
    )
    assert all(np.array_equal(got[k], want[k]) for k in want if not k.endswith("gamma"))
    assert ("batch_norm_0/gamma", "matched by exclude") in report.skipped
    assert "@state/batch_norm_0/var" in str(report)
    assert report.missing == ["batch_norm_0/gamma", "dense_1/W", "dense_1/b"]


def test_load_pretrained_state_by_name():
    src = wf.Sequential([Dense(3), BatchNorm()]).build((None, 2))
    src.state = tree_map(lambda a: a + 1, src.state)
    dst = wf.Sequential([Dense(3), BatchNorm()], seed=5).build((None, 2))
    transfer.load_pretrained(dst, src)
    assert _flat(dst.state).keys() == _flat(src.state).keys()
    assert all(np.array_equal(v, _flat(src.state)[k]) for k, v in _flat(dst.state).items())
    transfer.load_pretrained(dst, {"batch_norm_0": {"mean": np.full(3, 7.0, "float32")}})
    assert np.all(wf.to_numpy(dst.state["batch_norm_0"]["mean"]) == 7)


def test_containers_round_trip_and_unbuilt_models_are_refused():
    inner = wf.layers.Sequential([Dense(4, "relu"), Dense(4)])
    layers = [inner, wf.layers.Residual(Dense(4)), Flatten(), Dense(2)]
    model = wf.Sequential(layers, seed=1).build((None, 3))
    sd = transfer.to_torch_state_dict(model)
    assert list(sd) == [
        "0.0.weight",
        "0.0.bias",
        "0.2.weight",
        "0.2.bias",
        "1.weight",
        "1.bias",
        "3.weight",
        "3.bias",
    ]
    other = wf.Sequential(layers, seed=2).build((None, 3))
    report = transfer.from_torch(other, sd)
    assert [row[2] for row in report.loaded[:3]] == [
        "sequential_0/dense_0/W",
        "sequential_0/dense_0/b",
        "sequential_0/dense_1/W",
    ]
    np.testing.assert_array_equal(other.predict(np.ones((2, 3))), model.predict(np.ones((2, 3))))
    unbuilt = wf.Sequential([Dense(2)])
    for call in (
        lambda: transfer.from_torch(unbuilt, {}),
        lambda: transfer.to_torch_state_dict(unbuilt),
        lambda: transfer.replace_head(unbuilt, Dense(1), keep=1),
        lambda: transfer.load_pretrained(unbuilt, model),
    ):
        with pytest.raises(RuntimeError, match="no params yet"):
            call()
    with pytest.raises(TypeError, match="expected a state_dict"):
        transfer.from_torch(model, 3)
