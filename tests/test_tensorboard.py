"""TensorBoard: the event files it writes, read back with tensorboardX's protos and the
TFRecord framing (no TensorFlow): scalar tags, values and steps, and histogram tags."""

from __future__ import annotations

import struct
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

import wframe as wf
from wframe.callbacks import GradientMonitor, TensorBoard

event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")


def read_events(folder: Path) -> tuple[dict, set]:
    """``({tag: [(step, value), ...]}, {histogram tags})`` of every event file in ``folder``."""
    scalars, histograms = defaultdict(list), set()
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        i = 0
        while i < len(data):  # TFRecord: u64 length, u32 crc, data, u32 crc
            (length,) = struct.unpack("<Q", data[i : i + 8])
            event = event_pb2.Event.FromString(data[i + 12 : i + 12 + length])
            i += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("histo"):
                    histograms.add(value.tag)
                else:
                    scalars[value.tag].append((event.step, value.simple_value))
    return dict(scalars), histograms


def data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 4)).astype(np.float32), rng.integers(0, 3, n)


def model():
    return wf.Sequential([wf.layers.Dense(8, activation="relu"), wf.layers.Dense(3)], seed=0).build(
        (None, 4)
    )


def test_epoch_scalars_learning_rate_and_histograms(backend, tmp_path):
    x, y = data()
    history = model().fit(
        x,
        y,
        epochs=3,
        batch_size=10,
        optimizer=wf.optimizers.sgd(0.05),
        verbose=0,
        validation_data=(x[:20], y[:20]),
        callbacks=[TensorBoard(tmp_path, histogram_freq=2)],
    )
    train, train_hist = read_events(tmp_path / "train")
    val, val_hist = read_events(tmp_path / "validation")
    assert set(train) == {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"}
    for key in ("loss", "accuracy"):
        got = train[f"epoch_{key}"]
        assert [s for s, _ in got] == [0, 1, 2]
        np.testing.assert_allclose([v for _, v in got], history.history[key], rtol=1e-6)
        got = val[f"epoch_{key}"]
        np.testing.assert_allclose([v for _, v in got], history.history[f"val_{key}"], rtol=1e-6)
    assert train["epoch_learning_rate"] == [
        (0, pytest.approx(0.05)),
        (1, pytest.approx(0.05)),
        (2, pytest.approx(0.05)),
    ]
    # histogram_freq=2: epochs 0 and 2, every param; nothing about gradients without a monitor
    assert train_hist == {f"dense_{i}/{p}/histogram" for i in (0, 1) for p in ("W", "b")}
    assert val_hist == set()


def test_gradient_statistics_and_batch_scalars(backend, tmp_path):
    x, y = data()
    monitor = GradientMonitor()
    history = model().fit(
        x,
        y,
        epochs=2,
        batch_size=10,
        optimizer="sgd",
        verbose=0,
        callbacks=[monitor, TensorBoard(tmp_path, histogram_freq=0, update_freq="batch")],
    )
    train, hist = read_events(tmp_path / "train")
    assert hist == set()
    assert [s for s, _ in train["batch_loss"]] == list(range(1, 9))
    assert train["batch_loss"][3][1] == pytest.approx(history.history["loss"][0], rel=1e-6)
    got = train["grad_norm/dense_0/W"]
    assert [s for s, _ in got] == history.steps["step"] == list(range(1, 9))
    np.testing.assert_allclose(
        [v for _, v in got], monitor.values["grad_norm/dense_0/W"], rtol=1e-6
    )
    assert {"update_ratio/dense_1/b", "dead_relu/dense_0"} <= set(train)


def test_write_grads_per_epoch_and_gradient_histograms(tmp_path):
    x, y = data()
    tb = TensorBoard(tmp_path, write_grads=True, grad_batch=(x[:8], y[:8]))
    model().fit(x, y, epochs=2, batch_size=10, optimizer="sgd", verbose=0, callbacks=[tb])
    train, hist = read_events(tmp_path / "train")
    # per epoch: the mean of the epoch's per-call values, at step = epoch
    assert [s for s, _ in train["grad_norm/dense_1/W"]] == [0, 1]
    assert {f"dense_0/{p}/gradient" for p in ("W", "b")} <= hist
    assert "dense_0/W/histogram" in hist


def test_update_freq_int_writes_at_each_multiple(tmp_path):
    x, y = data()
    tb = TensorBoard(tmp_path, histogram_freq=0, update_freq=3)
    model().fit(x, y, epochs=2, batch_size=10, optimizer="sgd", verbose=0, callbacks=[tb])
    train, _ = read_events(tmp_path / "train")
    assert [s for s, _ in train["batch_loss"]] == [3, 6]


def test_arguments_and_missing_tensorboardx(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="update_freq must be"):
        TensorBoard(tmp_path, update_freq="step")
    with pytest.raises(ValueError, match="histogram_freq must be"):
        TensorBoard(tmp_path, histogram_freq=-1)
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(ImportError, match=r"pip install 'wframe\[viz\]'"):
        TensorBoard(tmp_path)
