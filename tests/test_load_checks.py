"""Loaders check a file against the architecture before allocating anything.

* ``wframe.placeholders.shape_only``: every initializer returns a zero-memory placeholder and
  counts its bytes; a budget stops at the first array past it.
* ``load_model`` bounds the config by the file (layer count, declared bytes), derives the
  model's arrays without allocating and compares them with the header: the config bombs of
  issue 19 are refused in milliseconds with a few kB allocated, and real models whose input
  dimensions exceed their weights (a CNN on 64x64 images, an LSTM over 500 steps) load.
* ``checkpoint`` on an unbuilt model: the same check against the checkpoint's input shape.
"""

from __future__ import annotations

import json
import threading
import time
import tracemalloc

import numpy as np
import pytest

import wframe as wf
from wframe import initializers, placeholders
from wframe.layers import LSTM, Activation, BatchNorm, Conv2D, Dense, Flatten, MaxPool2D
from wframe.saving import expected, io, model_config
from wframe.saving.io import WeightsFileError
from wframe.transfer import load_pretrained
from wframe.tree import flatten


def host_arrays(model) -> dict[str, np.ndarray]:
    trees = (("", model.params), ("@state/", model.state))
    return {
        p + n: np.asarray(model.backend.to_numpy(a)) for p, tree in trees for n, a in flatten(tree)
    }


def assert_same_arrays(a, b):
    got, want = host_arrays(a), host_arrays(b)
    assert list(got) == list(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert not any(placeholders.is_placeholder(x) for x in (*a.params.values(),))


def no_placeholder_left(model) -> bool:
    leaves = [a for _, a in flatten((model.params, model.state))]
    return not any(placeholders.is_placeholder(a) for a in leaves)


# ----------------------------------------------------------------------------- shape_only
def test_shape_only_gives_placeholders_of_every_initializer_kind():
    def mine(key, shape, dtype="float32"):  # a user callable: never called in the block
        raise AssertionError("drew inside shape_only")

    inits = [
        initializers.get("he_normal"),
        initializers.get("orthogonal", gain=2.0),
        initializers.constant(0.5),
        initializers.zeros,
    ]
    with placeholders.shape_only() as tally:
        made = [init(0, (300, 200), "float64") for init in inits]
        made.append(initializers.get(mine)(0, (300, 200), "float64"))
    for a in made:
        assert placeholders.is_placeholder(a) and a.shape == (300, 200) and a.dtype == np.float64
        assert a.nbytes == 480_000 and not a.flags.writeable and a.strides == (0, 0)
    assert (tally.count, tally.total) == (5, 5 * 480_000)
    # Outside the block they draw again, and a placeholder is never mistaken for an array.
    real = initializers.get("he_normal")(0, (3, 2))
    assert not placeholders.is_placeholder(np.asarray(wf.get_backend().to_numpy(real)))
    assert not placeholders.is_placeholder(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="orthogonal needs a shape with at least 2 dims"):
        with placeholders.shape_only():
            initializers.orthogonal()(0, (4,))


def test_the_budget_stops_at_the_first_array_past_it():
    with pytest.raises(placeholders.BudgetExceeded) as info:
        with placeholders.shape_only(budget_bytes=1000) as tally:
            initializers.zeros(0, (10, 10))  # 400 bytes
            initializers.zeros(0, (287,) * 4)  # 27 GB: refused, never made
    e = info.value
    assert (e.total, e.budget, e.shape) == (400 + 4 * 287**4, 1000, (287,) * 4)
    assert isinstance(e, MemoryError) and tally.count == 2
    with pytest.raises(ValueError, match="budget_bytes must be an int >= 0"):
        with placeholders.shape_only(budget_bytes=-1):
            pass


def test_nested_blocks_count_into_the_outer_and_other_threads_draw_real_weights():
    seen = []

    def other():
        seen.append(initializers.zeros(0, (2, 2)))

    with placeholders.shape_only() as outer:
        with placeholders.shape_only() as inner:
            initializers.ones(0, (5,))
        worker = threading.Thread(target=other)
        worker.start()
        worker.join()
    assert (inner.total, outer.total) == (20, 20)
    assert not placeholders.is_placeholder(np.asarray(seen[0]))


def test_model_init_under_shape_only_allocates_nothing_big():
    model = wf.Sequential([Conv2D(287, 287)])
    tracemalloc.start()
    try:
        with placeholders.shape_only() as tally:
            params, _, out = model.init(0, (None, 287, 287, 287), dtype="float32")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert params["conv2d_0"]["W"].shape == (287,) * 4 and out == (None, 1, 1, 287)
    assert tally.total == 4 * (287**4 + 287) and peak < 1_000_000
    # A graph infers its shapes the same way: wf.Input + a 27 GB layer costs nothing.
    x = wf.Input((287, 287, 287))
    assert Conv2D(287, 287)(x).shape == (None, 1, 1, 287)


# ----------------------------------------------------------------------------- load_model
@pytest.fixture
def small_file(tmp_path):
    path = tmp_path / "small.safetensors"
    wf.save_model(wf.Sequential([Dense(2)]).build((None, 3)), path)
    return path


def with_config(src, dst, config) -> str:
    """``src``'s arrays under another model config (a hostile or damaged file)."""
    tensors, meta = io.read_safetensors(src)
    io.write_safetensors(dst, tensors, {**meta, "config": json.dumps(config)})
    return str(dst)


def chain(layers: list[dict], input_shape: list) -> dict:
    config = {"layers": layers, "seed": 0, "dtype": "float32", "name": None}
    return {"class": "wframe.Sequential", "config": config, "input_shape": input_shape}


def dense(units: int, i: int) -> dict:
    return {"class": "Dense", "config": {"units": units, "name": f"dense_{i}"}}


BOMBS = {
    "conv-287": chain(
        [{"class": "Conv2D", "config": {"filters": 287, "kernel_size": 287}}], [None, 287, 287, 287]
    ),
    "2000-dense-287": chain([dense(287, i) for i in range(2000)], [None, 287]),
    "3000-dense-468": chain([dense(468, i) for i in range(3000)], [None, 468]),
    "20-dense-287": chain([dense(287, i) for i in range(20)], [None, 287]),  # within the count
}
REFUSALS = {
    "conv-287": "would hold more than 32 bytes of arrays",
    "2000-dense-287": "describes 2001 layers and graph calls, more than the 80",
    "3000-dense-468": "describes 3001 layers and graph calls, more than the 80",
    "20-dense-287": "would hold more than 32 bytes of arrays",
}


@pytest.mark.parametrize("bomb", list(BOMBS))
def test_config_bombs_are_refused_at_once_without_allocating(backend, small_file, tmp_path, bomb):
    path = with_config(small_file, tmp_path / "bomb.safetensors", BOMBS[bomb])
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(WeightsFileError, match=REFUSALS[bomb]) as info:
            wf.load_model(path)
        took, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.path == path and repr(path) in str(info.value)
    assert took < 1.0  # it took 50 GiB, 684 MB or > 20 s before the check
    assert peak < 8_000_000  # parsing the 3000-layer config (730 kB of JSON) is the most


def test_a_legitimate_cnn_on_64x64_images_loads(backend, tmp_path):
    model = wf.Sequential([Conv2D(2, 3), MaxPool2D(2), BatchNorm(), Flatten(), Dense(3)])
    model.build((None, 64, 64, 3))
    wf.save_model(model, tmp_path / "cnn.safetensors")
    loaded = wf.load_model(tmp_path / "cnn.safetensors")
    assert loaded.input_shape == (None, 64, 64, 3) and no_placeholder_left(loaded)
    assert_same_arrays(loaded, model)


def test_a_legitimate_lstm_over_500_steps_loads(backend, tmp_path):
    model = wf.Sequential([LSTM(4), Dense(1)], seed=3).build((None, 500, 2))
    wf.save_model(model, tmp_path / "lstm.safetensors")
    loaded = wf.load_model(tmp_path / "lstm.safetensors")
    assert loaded.input_shape == (None, 500, 2) and no_placeholder_left(loaded)
    assert_same_arrays(loaded, model)


def test_graph_and_nested_models_load_through_the_check(backend, tmp_path):
    x = wf.Input((5,))
    shared = Dense(5)
    h = shared(shared(x))  # one layer called twice: its arrays are counted once
    inner = wf.Sequential([Dense(4), Activation("relu")], name="inner")
    graph = wf.Model(x, Dense(2)(inner(BatchNorm()(h))))
    wf.save_model(graph, tmp_path / "g.safetensors")
    loaded = wf.load_model(tmp_path / "g.safetensors")
    assert_same_arrays(loaded, graph)
    nested = wf.Sequential([wf.Sequential([Dense(3)], name="body"), Dense(2)]).build((None, 4))
    wf.save_model(nested, tmp_path / "n.safetensors")
    assert_same_arrays(wf.load_model(tmp_path / "n.safetensors"), nested)


def test_a_graph_config_bomb_is_refused(small_file, tmp_path):
    x = wf.Input((3,))
    config = model_config(wf.Model(x, Dense(2)(x)))
    config["config"]["inputs"][0][1] = [None, 287, 287, 287]
    config["config"]["layers"][0] = {
        "class": "Conv2D",
        "config": {"filters": 287, "kernel_size": 287, "name": "dense_0"},
    }
    config["input_shape"] = [None, 287, 287, 287]
    x2 = wf.Input((3,))
    graph_file = tmp_path / "g.safetensors"
    wf.save_model(wf.Model(x2, Dense(2)(x2)), graph_file)
    path = with_config(graph_file, tmp_path / "bomb.safetensors", config)
    with pytest.raises(WeightsFileError, match="would hold more than 32 bytes"):
        wf.load_model(path)


def test_parameterless_layers_fit_the_bound_and_more_are_refused(small_file, tmp_path):
    acts = [{"class": "Activation", "config": {"activation": "relu"}} for _ in range(70)]
    fits = with_config(
        small_file, tmp_path / "a.safetensors", chain([dense(2, 0), *acts], [None, 3])
    )
    assert wf.load_model(fits).output_shape == (None, 2)  # 72 objects <= 8 * 2 + 64
    extra = [*acts, *acts[:10]]
    path = with_config(
        small_file, tmp_path / "b.safetensors", chain([dense(2, 0), *extra], [None, 3])
    )
    with pytest.raises(WeightsFileError, match="describes 82 layers"):
        wf.load_model(path)
    assert expected.max_layers(2) == 80


def test_a_mismatch_names_the_arrays_and_is_capped(tmp_path):
    model = wf.Sequential([Dense(3) for _ in range(8)]).build((None, 3))
    wf.save_model(model, tmp_path / "m.safetensors")
    # The config says 2 units where the file holds 3: every one of the 16 arrays differs (but
    # the first kernel's rows), and the file is large enough for the config's arrays.
    config = chain([dense(2, i) for i in range(8)], [None, 3])
    path = with_config(tmp_path / "m.safetensors", tmp_path / "bad.safetensors", config)
    with pytest.raises(WeightsFileError) as info:
        wf.load_model(path)
    text = str(info.value)
    assert "dense_0/W: the model makes float32 (3, 2), the file holds float32 (3, 3)" in text
    assert "dense_0/b: the model makes float32 (2,), the file holds float32 (3,)" in text
    assert "... and 6 more" in text and "dense_7" not in text
    assert "save the model again with wf.save_model" in text and info.value.path == path


def test_expected_arrays_of_a_config_without_building(tmp_path):
    model = wf.Sequential([Dense(4), BatchNorm(), LSTM(3)])
    with pytest.raises(ValueError, match="expects 3-D inputs"):
        expected.expected_arrays(wf.Sequential([LSTM(3)]), (None, 5))
    got = expected.expected_arrays(model, [None, 7, 2], budget_bytes=10_000)
    assert got["dense_0/W"] == (np.dtype("float32"), (2, 4))
    assert got["@state/batch_norm_0/var"] == (np.dtype("float32"), (4,))
    assert got["lstm_0/W_h"] == (np.dtype("float32"), (3, 12)) and not model.built
    with pytest.raises(placeholders.BudgetExceeded):
        expected.expected_arrays(model, (None, 7, 2), budget_bytes=100)


# ----------------------------------------------------------------------------- checkpoints
def mlp():
    model = wf.Sequential([Dense(4), BatchNorm(), Dense(2)], seed=1)
    model.compile(optimizer="adam", loss="mse")
    return model


def test_an_unbuilt_model_loads_a_checkpoint_without_drawing(backend, tmp_path):
    model = mlp().build((None, 5))
    model.save_checkpoint(tmp_path / "c.safetensors")
    fresh = mlp()
    fresh.load_checkpoint(tmp_path / "c.safetensors")
    assert fresh.input_shape == (None, 5) and no_placeholder_left(fresh)
    assert_same_arrays(fresh, model)


def test_a_checkpoint_bomb_input_shape_is_refused_before_building(tmp_path):
    mlp().build((None, 5)).save_checkpoint(tmp_path / "c.safetensors")
    tensors, meta = io.read_safetensors(tmp_path / "c.safetensors")
    path = str(tmp_path / "bomb.safetensors")
    io.write_safetensors(path, tensors, {**meta, "input_shape": "[null, 1000000000000]"})
    model = mlp()
    tracemalloc.start()
    try:
        with pytest.raises(WeightsFileError, match="would hold more than .* bytes of arrays"):
            model.load_checkpoint(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000 and not model.built  # it asked for 116 TiB before the check
    io.write_safetensors(path, tensors, {**meta, "input_shape": "[null, 4]"})
    with pytest.raises(WeightsFileError, match=r"dense_0/W: the model makes float32 \(4, 4\)"):
        model.load_checkpoint(path)
    assert not model.built


# ----------------------------------------------------------------------------- pretrained
def test_load_pretrained_reads_a_file_only_if_something_loads(tmp_path, monkeypatch):
    source = wf.Sequential([Dense(3)]).build((None, 4))
    source.save_weights(tmp_path / "w.safetensors")
    target = wf.Sequential([Dense(2)]).build((None, 4))  # other shapes: nothing fits
    calls = []
    real = io.read_safetensors
    monkeypatch.setattr(io, "read_safetensors", lambda *a, **k: calls.append(a) or real(*a, **k))
    report = load_pretrained(target, tmp_path / "w.safetensors")
    assert not report.loaded and not calls
    same = wf.Sequential([Dense(3)], seed=5).build((None, 4))
    report = load_pretrained(same, tmp_path / "w.safetensors")
    assert len(report.loaded) == 2 and len(calls) == 1
    np.testing.assert_array_equal(same.params["dense_0"]["W"], source.params["dense_0"]["W"])
