"""Data pipelines: ``fit``/``evaluate``/``predict`` on iterables of batches (generators, lists,
torch DataLoaders) train exactly as the same batches given as arrays; steps_per_epoch,
validation_freq, validation_steps; pandas and torch inputs; and the data frictions
(``batch_size=None``, float64 overflow, a refused fit leaving a model unbuilt)."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest

import wframe as wf
from wframe.layers import Concatenate, Dense
from wframe.training.stream import Prefetch, Source, is_batches
from wframe.tree import tree_leaves

RNG = np.random.default_rng(0)
N, B = 40, 8
X = RNG.normal(size=(N, 4)).astype(np.float32)
Y = RNG.integers(0, 3, N)
W = RNG.uniform(0.5, 2.0, N).astype(np.float32)
BATCHES = [(X[i : i + B], Y[i : i + B]) for i in range(0, N, B)]


def mlp(seed: int = 1) -> wf.Sequential:
    return wf.Sequential([Dense(8, activation="relu"), Dense(3)], seed=seed)


def gen(batches=BATCHES):
    yield from batches


def endless():
    while True:
        yield from BATCHES


def weights(model) -> list[np.ndarray]:
    return [np.asarray(wf.to_numpy(a)) for a in tree_leaves(model.params)]


def assert_same(a, b, backend) -> None:
    """Bit-identical on NumPy; within 1e-6 on a compiled backend (other programs, same math)."""
    for u, v in zip(weights(a), weights(b), strict=True):
        if backend.name == "numpy":
            np.testing.assert_array_equal(u, v)
        else:
            np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)


_REFERENCE: dict = {}


def reference(backend, epochs: int = 2):
    """The array fit the iterables must match (shuffle=False, the same batches), per backend."""
    key = (backend.name, epochs)
    if key not in _REFERENCE:
        model = mlp()
        model.fit(X, Y, batch_size=B, shuffle=False, epochs=epochs, verbose=0)
        _REFERENCE[key] = model
    return _REFERENCE[key]


def loader():
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, TensorDataset

    return DataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(Y)), batch_size=B)


@pytest.mark.parametrize("kind", ["generator", "list", "dataloader"])
def test_iterables_train_evaluate_and_predict_as_arrays(backend, kind):
    ref, model = reference(backend), mlp()
    if kind == "generator":  # used up after one pass: one epoch per fit
        model.fit(gen(), verbose=0)
        model.fit(gen(), verbose=0)
        data = gen
    else:
        data = (lambda: BATCHES) if kind == "list" else loader
        history = model.fit(data(), epochs=2, verbose=0)
        assert len(history.history["loss"]) == 2
    assert model.steps == 10
    assert_same(model, ref, backend)
    got, want = model.evaluate(data()), ref.evaluate(X, Y, batch_size=B)
    assert got.keys() == want.keys()
    np.testing.assert_allclose(list(got.values()), list(want.values()), rtol=1e-6)
    np.testing.assert_allclose(
        wf.to_numpy(model.predict(data())), wf.to_numpy(ref.predict(X, batch_size=B)), rtol=1e-6
    )


def test_steps_per_epoch_with_an_endless_generator(backend):
    steps = len(BATCHES)
    model = mlp()
    history = model.fit(endless(), epochs=2, steps_per_epoch=steps, verbose=0)
    assert len(history.history["loss"]) == 2 and model.steps == 2 * steps
    assert_same(model, reference(backend), backend)
    logs = model.evaluate(endless(), steps=steps)
    np.testing.assert_allclose(logs["loss"], model.evaluate(X, Y, batch_size=B)["loss"], rtol=1e-6)
    assert wf.to_numpy(model.predict(endless(), steps=2)).shape == (2 * B, 3)


def test_steps_per_execution_groups_batches_of_one_size(backend):
    ragged = [*BATCHES, (X[:4], Y[:4])]  # calls of 2, 2, 1 batches of 8 and one of 4
    one, two = mlp(), mlp()
    one.fit(ragged, epochs=2, verbose=0)
    two.fit(ragged, epochs=2, steps_per_execution=2, verbose=0)
    assert two.steps == 12
    assert_same(two, one, backend)


class Recorded:
    """An iterable that can be iterated again, recording which batches were drawn."""

    def __init__(self, batches):
        self.batches, self.drawn = batches, []

    def __iter__(self):
        for i, batch in enumerate(self.batches):
            self.drawn.append(i)
            yield batch


def test_steps_per_epoch_is_a_stream_across_epochs_and_passes():
    data = Recorded(BATCHES)
    model = mlp()
    history = model.fit(data, epochs=3, steps_per_epoch=3, verbose=0)
    assert data.drawn == [0, 1, 2, 3, 4, 0, 1, 2, 3]  # Keras: a new pass where one ends
    assert model.steps == 9 and len(history.history["loss"]) == 3


def test_a_generator_that_runs_out_stops_training_with_a_warning():
    with pytest.warns(RuntimeWarning, match="the data ran out .* training stopped after epoch 2"):
        history = mlp().fit(gen(BATCHES[:5]), epochs=3, steps_per_epoch=3, verbose=0)
    assert len(history.history["loss"]) == 2


def test_validation_freq_steps_and_batch_size(backend):
    model = mlp()
    history = model.fit(
        BATCHES,
        epochs=4,
        validation_data=BATCHES,
        validation_steps=2,
        validation_freq=2,
        verbose=0,
    )
    assert len(history.history["loss"]) == 4 and len(history.history["val_loss"]) == 2
    got = model.evaluate(BATCHES[:2])  # each validation: the first two batches, as Keras
    np.testing.assert_allclose(history.history["val_loss"][-1], got["loss"], rtol=1e-6)
    fit = {"batch_size": B, "shuffle": False, "validation_data": (X, Y), "verbose": 0}
    small = mlp().fit(X, Y, validation_batch_size=B, **fit)
    whole = mlp().fit(X, Y, **fit)  # in one batch of 40
    np.testing.assert_allclose(small.history["val_loss"], whole.history["val_loss"], rtol=1e-6)


def test_batches_with_sample_weights_train_as_weighted_arrays(backend):
    ref = mlp()
    ref.fit(X, Y, sample_weight=W, batch_size=B, shuffle=False, verbose=0)
    model = mlp()
    model.fit([(X[i : i + B], Y[i : i + B], W[i : i + B]) for i in range(0, N, B)], verbose=0)
    assert_same(model, ref, backend)


def test_an_error_in_a_batch_names_it_and_keeps_the_last_completed_step(backend):
    bad = X[:B].copy()
    bad[2, 1] = np.nan
    model = mlp()
    with pytest.raises(ValueError, match=r"fit: batch 3: x contains NaN or inf \(first at index"):
        model.fit(gen([*BATCHES[:3], (bad, Y[:B])]), verbose=0)
    assert model.steps == 3


class Interrupt(wf.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if self.model.steps == 8:  # the third batch of the second epoch
            raise RuntimeError("interrupted")


def test_a_fit_restored_mid_epoch_skips_the_batches_done(tmp_path):
    ref = mlp()
    ref.fit(BATCHES, epochs=3, verbose=0)
    model = mlp()
    with pytest.raises(RuntimeError, match="interrupted"):
        backup = wf.callbacks.BackupAndRestore(tmp_path, save_freq=2)
        model.fit(BATCHES, epochs=3, verbose=0, callbacks=[backup, Interrupt()])
    again = mlp()  # a new process would start so: the backup at step 8, then epoch 1, batch 3
    again.fit(BATCHES, epochs=3, verbose=0, callbacks=[wf.callbacks.BackupAndRestore(tmp_path)])
    assert again.steps == 15
    for u, v in zip(weights(again), weights(ref), strict=True):
        np.testing.assert_array_equal(u, v)


def test_torch_tensors_and_a_dataframe_as_arrays(backend):
    torch = pytest.importorskip("torch")
    pd = pytest.importorskip("pandas")
    ref = reference(backend, epochs=1)
    model = mlp()
    model.fit(torch.from_numpy(X), torch.from_numpy(Y), batch_size=B, shuffle=False, verbose=0)
    assert_same(model, ref, backend)
    frame = mlp()
    frame.fit(pd.DataFrame(X), pd.Series(Y), batch_size=B, shuffle=False, verbose=0)
    assert_same(frame, ref, backend)
    np.testing.assert_array_equal(
        wf.to_numpy(model.predict(torch.from_numpy(X))), wf.to_numpy(model.predict(X))
    )


def test_a_dataframe_by_input_name_for_a_model_of_several_inputs():
    pd = pytest.importorskip("pandas")
    a, b = wf.Input((1,), name="a"), wf.Input((1,), name="b")
    model = wf.Model([a, b], Dense(3)(Concatenate()([a, b])))
    frame = pd.DataFrame({"b": X[:, 1], "a": X[:, 0]})
    got = model.predict(frame)
    np.testing.assert_array_equal(
        wf.to_numpy(got), wf.to_numpy(model.predict([X[:, :1], X[:, 1:2]]))
    )


def test_what_is_refused_says_what_was_given_and_what_to_do():
    torch = pytest.importorskip("torch")
    from torch.utils.data import TensorDataset

    def x_only():
        yield X[:B]

    cases = [
        (lambda: mlp().fit(object(), Y), TypeError, r"x must be an array .*; got object$"),
        (
            lambda: mlp().fit(TensorDataset(torch.from_numpy(X)), Y),
            TypeError,
            r"got torch\.utils\.data\.dataset\.TensorDataset; a dataset of single examples goes "
            r"in a DataLoader\(dataset, batch_size=32\)",
        ),
        (lambda: mlp().fit(X, None), TypeError, r"y is None; pass the labels, or x as an"),
        (lambda: mlp().fit(gen(), Y), ValueError, r"fit: y does not apply when x is an iter"),
        (lambda: mlp().fit(gen(), batch_size=16), ValueError, r"batch_size does not apply"),
        (lambda: mlp().fit(gen(), epochs=2), ValueError, r"a generator, used up after one pass"),
        (lambda: mlp().fit(x_only()), ValueError, r"fit: batch 0: a batch needs labels"),
        (
            lambda: mlp().fit(gen([(X, Y, W, Y)])),
            ValueError,
            r"fit: batch 0 is a tuple of 4 entries; each batch must be \(x, y\) or",
        ),
        (lambda: mlp().fit(X, Y, steps_per_epoch=2), ValueError, r"steps_per_epoch applies to x"),
        (lambda: mlp().evaluate(X, Y, steps=2), ValueError, r"evaluate: steps applies to x"),
        (lambda: mlp().fit(gen(), validation_freq=0), ValueError, r"validation_freq .* >= 1"),
        (lambda: mlp().fit(gen(), strategy=None, validation_split=0.5), ValueError, "split"),
        (lambda: mlp().fit(BATCHES, validation_data=gen(), epochs=2), ValueError, r"runs 2 t"),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind, match=message):
            call()


def test_shuffle_set_with_an_iterable_warns_as_keras_does():
    with pytest.warns(UserWarning, match="shuffle=True does not apply to an iterable"):
        mlp().fit(BATCHES, shuffle=True, verbose=0)


def test_batch_size_none_is_keras_default():
    model = mlp()
    model.fit(X, Y, batch_size=None, shuffle=False, verbose=0)
    assert model.steps == 2  # 40 examples in batches of 32
    assert model.evaluate(X, Y, batch_size=None).keys() == {"loss", "accuracy"}
    assert wf.to_numpy(model.predict(X, batch_size=None)).shape == (N, 3)


def test_float64_beyond_float32_is_an_overflow_not_an_inf():
    big = X.astype(np.float64)
    big[5, 2] = 1e39
    overflow = r"x holds values up to 1e\+39, which overflow the model dtype float32"
    model = mlp()
    for call in (
        lambda: mlp().fit(big, Y, verbose=0),
        lambda: model.evaluate(big, Y),  # not checked for NaN, but never cast to inf
        lambda: model.predict(big),
        lambda: mlp().fit(gen([(big, Y)]), verbose=0),
    ):
        with pytest.raises(ValueError, match=overflow):
            call()
    regression = wf.Sequential([Dense(1)])
    with pytest.raises(ValueError, match=r"y holds values up to 1e\+39, which overflow"):
        regression.fit(X, big[:, 2:3], loss="mse", verbose=0)


def test_a_refused_fit_leaves_an_unbuilt_model_unbuilt():
    for data in ((X, np.full(N, 7)), (gen([(X, np.full(N, 7))]),)):
        model = mlp()
        with pytest.raises(ValueError, match=r"labels in \[0, 3\)"):
            model.fit(*data, verbose=0)
        assert not model.built and model.optimizer is None
        model.fit(X, Y, verbose=0)  # and it builds as it would have
        assert model.built


def test_iterables_are_told_from_arrays():
    torch = pytest.importorskip("torch")
    pd = pytest.importorskip("pandas")
    batches = [gen(), iter(BATCHES), BATCHES, tuple(BATCHES), loader(), [{"a": X}], [(X,)]]
    arrays = [X, X.tolist(), [X, X], (X, X), {"a": X}, torch.from_numpy(X), pd.DataFrame(X)]
    assert all(is_batches(b) for b in batches)
    assert not any(is_batches(a) for a in arrays)


def test_source_and_prefetch():
    source = Source(BATCHES, "x")
    assert source.peek() is BATCHES[0] and source.length == 5
    assert list(source.epoch(None)) == BATCHES  # the peeked batch first, once
    assert list(source.epoch(None, skip=4)) == BATCHES[4:]
    threads = set()

    def make(i):
        threads.add(threading.get_ident())
        if i == 3:
            raise KeyError("made in the thread, raised here")
        return i

    made = Prefetch(make(i) for i in range(5))
    assert [next(made) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(KeyError, match="made in the thread"):
        next(made)
    assert threading.get_ident() not in threads
    stopped = Prefetch(iter(range(10**9)))
    next(stopped)
    stopped.close()  # the thread ends though the items do not
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(stopped) == []
