"""Lottery tickets (IterativeMagnitudePruning): the API against two rounds written by hand,
nested masks, exact rewinding, the controls' sparsities, resuming from a folder, the errors."""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe.callbacks import Callback
from wframe.layers import Dense
from wframe.pruning import IterativeMagnitudePruning, prune
from wframe.tree import flatten
from wframe.types import TrainState

FIT = {"epochs": 2, "batch_size": 16, "verbose": 0}  # 64 rows: 4 steps per epoch


def mlp(seed=0):
    model = wf.Sequential([Dense(12, activation="relu"), Dense(3)], seed=seed).build((None, 6))
    return model.compile(wf.optimizers.adam(1e-2))


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0)


def host(tree):
    return {name: np.array(wf.to_numpy(a)) for name, a in flatten(tree)}


class Starts(Callback):
    """Records the params each ``fit`` starts from (and the model's counters)."""

    def __init__(self):
        self.weights, self.counters = [], []

    def on_train_begin(self, logs=None):
        self.weights.append(host(self.model.params))
        self.counters.append((self.model.steps, self.model.epochs))


class At(Callback):
    """Records the params, state and position after ``k`` steps of the first fit."""

    needs_weights = True

    def __init__(self, k):
        self.k, self.got = k, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.got is None and self.model.steps == self.k:
            m = self.model
            self.got = (host(m.params), m.state, m.steps, m.epochs, (self.epoch, batch + 1))


@pytest.mark.parametrize("rewind_step", [0, 3])
def test_two_rounds_by_hand_equal_the_api(backend, rewind_step):
    if backend.name != "numpy" and rewind_step == 0:
        pytest.skip("one compiled case per backend: rewind_step=3 runs the same code and more")
    x, y = data()
    # By hand: train, prune half, rewind the survivors, train again.
    hand = mlp()
    at = At(rewind_step)
    theta = host(hand.params), hand.state, 0, 0, None
    hand.fit(x, y, **FIT, callbacks=[at] if rewind_step else [])
    theta = at.got if rewind_step else theta
    first = hand.evaluate(x, y)
    prune(hand, 0.5)
    masks = host(hand.masks)
    params = {
        n: np.where(masks[n] != 0, a, 0).astype(a.dtype) if n in masks else a
        for n, a in theta[0].items()
    }
    nested = {"dense_0": {}, "dense_1": {}}
    for name, a in params.items():
        layer, key = name.split("/")
        nested[layer][key] = hand.backend.asarray(a)
    hand.commit(TrainState(nested, theta[1], None, None, None), steps=theta[2], epochs=theta[3])
    hand.masks = masks
    hand.resume_at = theta[4]
    hand.fit(x, y, **FIT)
    second = hand.evaluate(x, y)

    model = mlp()
    imp = IterativeMagnitudePruning(model, rounds=2, rate=0.5, rewind_step=rewind_step)
    rows = imp.run(x, y, **FIT)
    assert [r["round"] for r in rows] == [0, 1] and [r["kind"] for r in rows] == ["ticket"] * 2
    assert rows[1]["sparsity"] == pytest.approx(0.5, abs=0.01)
    for row, want in zip(rows, (first, second), strict=True):
        assert row["loss"] == pytest.approx(want["loss"], rel=1e-6)
        assert row["accuracy"] == want["accuracy"]
    got, want = host(model.params), host(hand.params)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7)
    assert (model.steps, model.epochs) == (hand.steps, hand.epochs)
    steps = 8 - rewind_step
    assert rows[1]["steps"] == steps  # the rest of round 0's schedule after the rewind point


def test_masks_are_nested_and_rewinding_restores_the_recorded_weights():
    x, y = data()
    starts = Starts()
    imp = IterativeMagnitudePruning(mlp(), rounds=4, rate=0.3, rewind_step=2, scope="layer")
    imp.run(x, y, **FIT, callbacks=[starts])
    point = imp.rewind
    assert (point.steps, point.epochs, point.resume_at) == (2, 0, (0, 2))
    rewind = {n: np.asarray(a) for n, a in flatten(point.params)}
    for r in range(1, 4):
        for name, mask in imp.masks[r].items():
            assert not np.any(mask & ~imp.masks[r - 1][name]), (r, name)  # a subset
            expected = round((1 - 0.7**r) * mask.size)
            assert int(np.sum(~mask)) == expected  # scope="layer": each param at the target
        for name, a in starts.weights[r].items():  # exactly the recorded weights, masked
            keep = imp.masks[r].get(name, np.ones(a.shape, bool))
            np.testing.assert_array_equal(a, np.where(keep, rewind[name], 0))
        assert starts.counters[r] == (2, 0)


def test_controls_have_the_tickets_sparsity_and_differ_where_they_should():
    x, y = data()
    starts = Starts()
    imp = IterativeMagnitudePruning(
        mlp(), rounds=3, rate=0.5, reinit=True, random_masks=True, control_seed=7
    )
    rows = imp.run(x, y, **FIT, callbacks=[starts])
    kinds = [(r["round"], r["kind"]) for r in rows]
    assert kinds == [
        (0, "ticket"),
        (1, "reinit"),
        (1, "random_masks"),
        (1, "ticket"),
        (2, "reinit"),
        (2, "random_masks"),
        (2, "ticket"),
    ]
    rewind = {n: np.asarray(a) for n, a in flatten(imp.rewind.params)}
    for i, row in enumerate(rows):
        r = row["round"]
        assert row["sparsity"] == rows[3 * r]["sparsity"]  # as the round's ticket
        start, masks = starts.weights[i], imp.masks[r]
        for name, mask in masks.items():
            kept = start[name] != 0
            if row["kind"] == "random_masks":  # the same count per param, other positions
                assert int(kept.sum()) == int(mask.sum())
                assert np.any(kept != mask)
                np.testing.assert_array_equal(start[name][kept], rewind[name][kept])
            else:  # the ticket's mask; reinit: other weights under it
                np.testing.assert_array_equal(kept, mask)
                same = np.array_equal(start[name][mask], rewind[name][mask])
                assert same == (row["kind"] == "ticket")


class Interrupt(Callback):
    """Raises in the ``n``-th fit it sees (once)."""

    def __init__(self, n):
        self.n, self.seen = n, 0

    def on_train_begin(self, logs=None):
        self.seen += 1
        if self.seen == self.n:
            raise KeyboardInterrupt


def test_a_rerun_in_the_same_folder_continues_after_the_last_completed_round(tmp_path):
    x, y = data()
    kwargs = {"rounds": 3, "rate": 0.4, "rewind_step": 3, "random_masks": True}
    whole = IterativeMagnitudePruning(mlp(), **kwargs)
    want = whole.run(x, y, **FIT)

    imp = IterativeMagnitudePruning(mlp(), **kwargs, directory=tmp_path)
    with pytest.raises(KeyboardInterrupt):  # in round 2's control: rounds 0 and 1 are saved
        imp.run(x, y, **FIT, callbacks=[Interrupt(4)])
    assert len(imp.rows) == 3
    fresh = mlp(seed=5)  # another model of the architecture: the folder's arrays win
    again = IterativeMagnitudePruning(fresh, **kwargs, directory=tmp_path)
    got = again.run(x, y, **FIT)
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in got] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in want
    ]
    for name, a in host(whole.model.params).items():
        np.testing.assert_array_equal(host(fresh.params)[name], a)
    done = IterativeMagnitudePruning(mlp(), **kwargs, directory=tmp_path)
    assert len(done.run(x, y, **FIT)) == len(want)  # nothing left to train
    with pytest.raises(ValueError, match="other settings"):
        IterativeMagnitudePruning(mlp(), **{**kwargs, "rate": 0.5}, directory=tmp_path).run(
            x, y, **FIT
        )


def test_bad_arguments_are_refused():
    model = mlp()
    with pytest.raises(ValueError, match="rate must be > 0"):
        IterativeMagnitudePruning(model, rounds=2, rate=0.0)
    with pytest.raises(ValueError, match="rounds must be an int >= 1"):
        IterativeMagnitudePruning(model, rounds=0)
    with pytest.raises(TypeError, match="reinit must be True or False"):
        IterativeMagnitudePruning(model, rounds=2, reinit="yes")
    with pytest.raises(ValueError, match="matches no param"):
        IterativeMagnitudePruning(model, rounds=2, include="conv*")
    x, y = data()
    imp = IterativeMagnitudePruning(model, rounds=2, rewind_step=8)
    with pytest.raises(ValueError, match="rewind_step=8 is not before the end of round 0"):
        imp.run(x, y, **FIT)
