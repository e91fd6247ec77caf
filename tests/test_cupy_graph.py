"""``CupyBackend.jit`` (wframe/backends/cupy_graph.py): CUDA-graph capture and replay.

The bookkeeping (keys, argument buffers, donated views, output copies, fallbacks) runs here on a
NumPy stand-in runtime whose "graph" replays the function on the captured buffers and writes the
results into the captured outputs, as a CUDA graph rewrites the same addresses. On a GPU (marker
``gpu``) the real capture is compared with eager execution on train steps and ``fit``.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

import wframe as wf
from wframe.backends import backend_class
from wframe.backends.cupy_graph import GraphJit, _build, _flatten
from wframe.testing import assert_close
from wframe.tree import tree_leaves, tree_map


class FakeRuntime:
    """NumPy arrays; a capture runs the function once without changing its inputs."""

    def __init__(self):
        self.active, self.copies = False, 0

    def is_array(self, a):
        return isinstance(a, np.ndarray)

    def capturing(self):
        return self.active

    def empty_like(self, a):
        return np.empty_like(a)

    def copy_into(self, dst, src):
        dst[...] = src
        self.copies += 1

    def copy(self, a):
        return a.copy()

    def view(self, a):
        return a.view()

    def scalar(self, value):
        return np.asarray(value, dtype=bool if type(value) is bool else np.int64)

    def fill(self, buf, value):
        buf[...] = value

    def capture(self, fn, args):
        # A capture records: undo what running fn changed in the arrays it received.
        arrays = [a for a in tree_leaves(list(args)) if isinstance(a, np.ndarray)]
        saved = [a.copy() for a in arrays]
        self.active = True
        try:
            out = fn(*args)
        finally:
            self.active = False
        for a, s in zip(arrays, saved, strict=True):
            a[...] = s
        leaves = []
        _flatten(out, leaves)

        def replay():  # no Python runs in a real replay: nested jits record, as in capture
            self.active, new = True, []
            try:
                _flatten(fn(*args), new)
            finally:
                self.active = False
            for o, n in zip(leaves, new, strict=True):
                if isinstance(o, np.ndarray) and o is not n:
                    o[...] = n

        return replay, out, []

    def launch(self, graph):
        graph()

    def synchronize(self):
        pass


def _jit(fn, **kw):
    return GraphJit(fn, FakeRuntime(), **kw)


def test_flatten_round_trip():
    from wframe.training import TrainState

    tree = ({"a": [1, (2, None)], "b": TrainState(3, 4, 5)}, None, 6)
    leaves = []
    struct = _flatten(tree, leaves)
    assert leaves == [1, 2, 3, 4, 5, 6]
    assert _build(struct, iter(leaves)) == tree
    hash(struct)


def test_keyed_by_shapes_dtypes_and_non_array_values():
    calls = []

    def f(x, scale, n):
        calls.append(1)
        return x * scale + x[n]

    jf = _jit(f)
    x = np.arange(4.0, dtype=np.float32)
    for n in (0, 1, 2, 3):  # ints are device scalars: one key
        assert_close(jf(x, 2.0, n), f(x, 2.0, n), rtol=0)
    assert jf.stats == {"eager": 1, "captures": 1, "replays": 2, "fallbacks": 0}
    jf(x, 3.0, 0)  # another float: another key, eager first
    jf(x.astype(np.float64), 2.0, 0)  # another dtype
    jf(np.arange(5.0, dtype=np.float32), 2.0, 0)  # another shape
    assert jf.stats["eager"] == 4 and len(jf._entries) == 4
    unkeyed = _jit(lambda x, options: x + 1)
    for _ in range(3):  # a set is unhashable: nothing to key a graph by, eager
        unkeyed(x, {1})
    assert unkeyed.stats["eager"] == 3 and not unkeyed._entries


def test_static_argnums_are_part_of_the_key():
    jf = _jit(lambda x, k: x * k, static_argnums=(1,))
    x = np.ones(3, np.float32)
    for k in (2, 2, 2, 3):
        assert_close(jf(x, k), x * k, rtol=0)
    assert jf.stats["replays"] == 1 and len(jf._entries) == 2


def test_donated_state_is_updated_in_place_and_never_aliases_what_the_user_holds():
    def step(state, x):
        state["w"] += x  # in place, as the fused optimizers do
        return state, {"sum": state["w"].sum(keepdims=True)}

    jf = _jit(step, donate_argnums=(0,))
    x = np.ones(3, np.float32)
    state, logs = jf({"w": np.zeros(3, np.float32)}, x)  # eager
    state, logs = jf(state, x)  # captured: its buffer, handed out as a view
    kept = logs["sum"]
    rt = jf._rt
    copies = rt.copies
    state, logs = jf(state, x)  # the view passed back: no copy
    assert rt.copies == copies and jf.stats["replays"] == 1
    assert_close(state["w"], [3, 3, 3], rtol=0)
    assert float(kept[0]) == 6.0  # logs are copies
    held = state
    other, _ = jf({"w": np.full(3, 10, np.float32)}, x)  # held is still referenced: recapture
    assert_close(other["w"], [11, 11, 11], rtol=0)
    assert_close(held["w"], [3, 3, 3], rtol=0)  # never overwritten
    assert jf.stats["captures"] == 2
    del held, state
    again, _ = jf({"w": np.zeros(3, np.float32)}, x)  # `other` is held: capture again
    assert_close(again["w"], [1, 1, 1], rtol=0)
    assert_close(other["w"], [11, 11, 11], rtol=0)
    assert jf.stats["captures"] == 3


def test_inputs_read_in_place_until_they_change():
    def f(data, idx):
        return data[idx] * np.full(1, 2.0)  # an array (NumPy would return a scalar)

    jf = _jit(f)
    data = np.arange(10.0)
    for i in range(4):
        assert float(jf(data, i)[0]) == 2 * i
    data[3] = 100.0  # the same object, changed in place: the graph reads it
    assert float(jf(data, 3)[0]) == 200.0
    new = np.arange(10.0) + 1  # another object: captured again, copied from then on
    assert float(jf(new, 3)[0]) == 8.0
    assert float(jf(new + 1, 3)[0]) == 10.0
    assert jf.stats["captures"] == 2 and jf._entries and jf.stats["fallbacks"] == 0


def test_outputs_are_copies_and_inputs_come_back_as_themselves():
    jf = _jit(lambda x, y: (x + 1, y))
    x, y = np.zeros(2), np.ones(2)
    outs = [jf(x, y) for _ in range(3)]
    assert all(o[1] is y for o in outs)
    outs[2][0][...] = 7.0
    assert_close(jf(x, y)[0], [1, 1], rtol=0)
    assert_close(outs[1][0], [1, 1], rtol=0)


def test_a_failed_capture_runs_eagerly_and_says_why(caplog):
    rt = FakeRuntime()

    def step(x):
        if rt.capturing():
            raise RuntimeError("the current stream is capturing, so D2H transfers are disallowed")
        return x * 2

    jf = GraphJit(step, rt)
    x = np.ones(2)
    with caplog.at_level(logging.DEBUG, logger="wframe"):
        results = [jf(x) for _ in range(4)]
    assert all((r == 2).all() for r in results)
    assert jf.stats == {"eager": 4, "captures": 0, "replays": 0, "fallbacks": 1}
    assert "D2H transfers are disallowed" in jf.reasons[-1]
    assert "running eagerly" in caplog.text


def test_outputs_that_change_kind_under_capture_fall_back():
    jf = _jit(lambda x, n: (x, n + 1))  # n + 1: an int eagerly, an array when captured
    x = np.ones(2)
    assert [jf(x, 1)[1], jf(x, 2)[1], jf(x, 3)[1]] == [2, 3, 4]
    assert jf.stats["fallbacks"] == 1 and "differ" in jf.reasons[-1]


def test_nested_calls_inside_a_capture_are_recorded_by_it():
    inner = _jit(lambda x: x + 1)
    outer = _jit(lambda x: inner(x) * 2)
    inner._rt = outer._rt
    x = np.zeros(2)
    assert [float(outer(x)[0]) for _ in range(3)] == [2.0, 2.0, 2.0]
    assert inner.stats["captures"] == 0 and outer.stats["replays"] == 1


# ------------------------------------------------------------------------------ on a GPU
_ok, _why = backend_class("cupy").is_available()
gpu = pytest.mark.gpu
needs_cupy = pytest.mark.skipif(not _ok, reason=f"cupy unavailable: {_why}")


def _model(seed=0):
    layers = [wf.layers.Dense(64, activation="relu"), wf.layers.Dropout(0.2), wf.layers.Dense(10)]
    return wf.Sequential(layers, seed=seed).build((None, 20))


def _steps(graphs: bool, n: int = 6):
    backend = wf.get_backend()
    backend.graphs = graphs  # read when the step is made (backend.jit)
    try:
        model, adam = _model(), wf.optimizers.adam(1e-2)
        step = wf.make_train_step(model, "softmax_cross_entropy", adam, metrics=("accuracy",))
    finally:
        backend.graphs = True
    ts = wf.TrainState(backend.copy(model.params), model.state, adam.init(model.params))
    rng = np.random.default_rng(1)
    losses = []
    for i in range(n):
        x = backend.asarray(rng.standard_normal((32, 20)), dtype="float32")
        y = backend.asarray(rng.integers(0, 10, 32), dtype="int32")
        ts, logs = step(ts, x, y, wf.random.array_key(5, i, backend))
        losses.append(float(wf.to_numpy(logs["loss"])))
    return ts, losses, step


@gpu
@needs_cupy
def test_gpu_graph_train_step_matches_eager():
    with wf.use_backend("cupy"):
        eager_ts, eager_losses, eager_step = _steps(False)
        ts, graph_losses, step = _steps(True)
    assert not hasattr(eager_step.compiled, "stats")
    stats = step.compiled.stats
    assert stats["captures"] == 1 and stats["replays"] == 4, (stats, step.compiled.reasons)
    assert_close(graph_losses, eager_losses, rtol=1e-5)
    tree_map(lambda a, b: assert_close(a, b, rtol=1e-5, atol=1e-6), ts.params, eager_ts.params)


@gpu
@needs_cupy
def test_gpu_step_that_reads_the_host_falls_back(caplog):
    with wf.use_backend("cupy") as backend:
        jf = backend.jit(lambda x: x * float(x.sum()))
        x = backend.asarray(np.arange(4.0))
        with caplog.at_level(logging.DEBUG, logger="wframe"):
            results = [backend.to_numpy(jf(x)) for _ in range(3)]
    assert all((r == np.arange(4.0) * 6).all() for r in results)
    assert jf.stats["fallbacks"] == 1 and jf.stats["replays"] == 0
    assert "capture failed" in caplog.text


@gpu
@needs_cupy
def test_gpu_fit_with_graphs_matches_eager():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((256, 20)).astype("float32"), rng.integers(0, 10, 256)
    results = []
    with wf.use_backend("cupy") as backend:
        for graphs in (False, True):
            backend.graphs = graphs
            try:
                model = _model().compile(optimizer=wf.optimizers.adam(1e-2))
                history = model.fit(x, y, epochs=3, batch_size=32, verbose=0)
            finally:
                backend.graphs = True
            results.append((history.history["loss"], backend.to_host(model.params), model))
    (eager_loss, eager_params, _), (loss, params, model) = results
    assert_close(loss, eager_loss, rtol=1e-5)
    tree_map(lambda a, b: assert_close(a, b, rtol=1e-5, atol=1e-6), params, eager_params)
    fns = [*model.trainer.runners().values(), *model.trainer.memos().values()]
    graphs = [f for f in fns if isinstance(f, GraphJit)]
    assert sum(f.stats["replays"] for f in graphs) > 0, [(f.stats, f.reasons) for f in graphs]
