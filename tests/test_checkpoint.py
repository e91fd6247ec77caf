"""Checkpoints (wframe.checkpoint), ModelCheckpoint and BackupAndRestore: what is saved comes
back exactly, and training resumed from a checkpoint or a backup is the uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import wframe as wf
from wframe.saving import checkpoint, io, load_model
from wframe.tree import flatten

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _resume_script  # noqa: E402

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_resume_script.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(wf.__file__)))


def data(n=64, features=6, classes=3):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, features)).astype("float32")
    return x, rng.integers(0, classes, n)


def mlp(seed=0, norm=False, first=16):
    layers = [
        wf.layers.Dense(first, activation="relu"),
        wf.layers.Dropout(0.25),
        wf.layers.Dense(3),
    ]
    if norm:
        layers.insert(1, wf.layers.BatchNorm())
    return wf.Sequential(layers, seed=seed)


def host(tree):
    return {name: wf.to_numpy(a) for name, a in flatten(tree)}


def assert_trees_equal(a, b, atol=0.0):
    a, b = host(a), host(b)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        if atol:
            np.testing.assert_allclose(a[name], b[name], rtol=0, atol=atol, err_msg=name)
        else:
            assert np.array_equal(a[name], b[name]), name


@pytest.fixture
def on_numpy():
    """File handling does not depend on the backend: run it on the fastest one."""
    with wf.use_backend("numpy") as b:
        yield b


# ----------------------------------------------------------------------------- checkpoint files
def test_round_trip_restores_everything(backend, tmp_path):
    x, y = data()
    model = mlp(norm=True)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    mask = np.ones((6, 16), "float32")
    mask[0] = 0
    model.masks = {"dense_0/W": mask}
    path = tmp_path / "ck.safetensors"
    checkpoint.save(model, path)

    tensors, meta = io.read_safetensors(path)
    assert "@opt/inner_state/0/mu/dense_0/W" in tensors and tensors["@mask/dense_0/W"].dtype == bool
    assert "dense_0/W" in tensors and "@state/batch_norm_0/mean" in tensors
    assert (meta["epochs"], meta["steps"], meta["optimizer"]) == ("2", "8", "adam")

    other = mlp(seed=9, norm=True)  # another seed: the checkpoint's comes back too
    other.compile(optimizer="adam")
    assert other.load_checkpoint(path) is other
    for a, b in [
        (model.params, other.params),
        (model.state, other.state),
        (model.masks, other.masks),
        (model.opt_state, other.opt_state),
    ]:
        assert_trees_equal(a, b)
    assert type(other.opt_state) is type(model.opt_state)
    assert (other.epochs, other.steps, other.seed) == (2, 8, 0)
    assert all(wf.backend_of(a) is backend for _, a in flatten(other.opt_state))

    # A checkpoint is a weights file with more in it: the weights readers take it too.
    weights = mlp(seed=9, norm=True).build((None, 6)).load_weights(path)
    rebuilt = load_model(path)
    for m in (weights, rebuilt):
        for a, b in [(model.params, m.params), (model.state, m.state), (model.masks, m.masks)]:
            assert_trees_equal(a, b)


def test_loads_on_another_backend(jax, tmp_path):
    x, y = data()
    with wf.use_backend("numpy"):
        model = mlp()
        model.fit(x, y, epochs=1, batch_size=16, verbose=0)
        checkpoint.save(model, tmp_path / "ck.safetensors")
    with wf.use_backend("jax") as jb:
        other = mlp()
        other.load_checkpoint(tmp_path / "ck.safetensors")  # unbuilt, no optimizer: from the file
        assert other.backend is jb and other.optimizer_name == "adam"
        assert all(wf.backend_of(a) is jb for _, a in flatten((other.params, other.opt_state)))
        assert_trees_equal(model.opt_state, other.opt_state)
        other.fit(x, y, epochs=2, initial_epoch=1, batch_size=16, verbose=0)


def test_the_frozen_set_comes_back_with_its_optimizer_state(on_numpy, tmp_path):
    x, y = data()
    model = mlp()
    model.build((None, 6)).freeze("dense_0")
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    checkpoint.save(model, tmp_path / "ck.safetensors")
    other = mlp().compile(optimizer="adam")
    other.load_checkpoint(tmp_path / "ck.safetensors")  # the state covers dense_1 alone
    assert other.frozen == model.frozen == {"dense_0/W", "dense_0/b"}
    assert_trees_equal(model.opt_state, other.opt_state)


def test_python_numbers_in_the_optimizer_state(on_numpy, tmp_path):
    # An optimizer whose state holds a Python float (as set_hyperparam keeps one).
    tx = wf.optimizers.GradientTransformation(
        lambda params: {"scale": 1.0, "count": np.zeros((), np.int32)},
        lambda updates, state, params=None: (updates, state),
    )
    model = mlp().compile(optimizer=tx)
    model.build((None, 6))
    model.opt_state = {"scale": 0.25, "count": np.asarray(3, np.int32)}
    checkpoint.save(model, tmp_path / "ck.safetensors")
    model.opt_state = None
    model.load_checkpoint(tmp_path / "ck.safetensors")
    scale, count = model.opt_state["scale"], model.opt_state["count"]
    assert type(scale) is float and scale == 0.25 and count == 3 and count.dtype == np.int32


def test_a_bad_checkpoint_changes_nothing(on_numpy, tmp_path):
    x, y = data()
    model = mlp()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    checkpoint.save(model, tmp_path / "ck.safetensors")

    wrong = mlp(first=8)
    wrong.fit(x, y, epochs=2, batch_size=16, verbose=0)
    before = (wrong.params, wrong.state, wrong.opt_state, wrong.epochs, wrong.steps)
    with pytest.raises(io.WeightsFileError) as err:
        wrong.load_checkpoint(tmp_path / "ck.safetensors")
    message = str(err.value)  # every problem at once: params and optimizer state
    assert "param 'dense_0/W'" in message and "param 'dense_1/W'" in message
    assert "'@opt/inner_state/0/mu/dense_0/W'" in message
    after = (wrong.params, wrong.state, wrong.opt_state, wrong.epochs, wrong.steps)
    assert all(a is b for a, b in zip(before, after, strict=True))

    unbuilt = mlp(first=8)
    with pytest.raises(io.WeightsFileError, match="cannot load checkpoint"):
        unbuilt.load_checkpoint(tmp_path / "ck.safetensors")
    assert not unbuilt.built and unbuilt.optimizer is None

    model.save_weights(tmp_path / "w.safetensors")
    with pytest.raises(io.WeightsFileError, match="not a wframe checkpoint"):
        mlp().load_checkpoint(tmp_path / "w.safetensors")


def test_an_optimizer_object_must_be_compiled_first(on_numpy, tmp_path):
    x, y = data()
    model = mlp()
    model.fit(
        x, y, epochs=1, batch_size=16, optimizer=wf.optimizers.sgd(0.1, momentum=0.9), verbose=0
    )
    checkpoint.save(model, tmp_path / "ck.safetensors")
    fresh = mlp()
    with pytest.raises(io.WeightsFileError, match=r"model\.compile\(optimizer=\.\.\.\)"):
        fresh.load_checkpoint(tmp_path / "ck.safetensors")
    assert not fresh.built
    fresh.compile(optimizer=wf.optimizers.sgd(0.1, momentum=0.9))
    fresh.load_checkpoint(tmp_path / "ck.safetensors")
    assert_trees_equal(model.opt_state, fresh.opt_state)


# ----------------------------------------------------------------------------- exact resume
@pytest.mark.parametrize("optimizer", ["adam", "object"])
def test_resume_from_a_checkpoint_is_the_uninterrupted_run(backend, tmp_path, optimizer):
    if optimizer == "object" and backend.name != "numpy":
        pytest.skip("the optimizer kinds differ only in how they are named: numpy suffices")
    x, y = data()
    tx = wf.optimizers.sgd(0.05, momentum=0.9) if optimizer == "object" else "adam"
    straight = mlp()
    straight.compile(optimizer=tx)
    straight.fit(x, y, epochs=6, batch_size=16, verbose=0)

    first = mlp()
    first.compile(optimizer=tx)
    saver = wf.callbacks.ModelCheckpoint(str(tmp_path / "ck-{epoch}.safetensors"))
    first.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[saver])

    resumed = mlp(seed=5)  # a new model: the seed, counters and optimizer state come back
    resumed.compile(optimizer=tx)
    resumed.load_checkpoint(tmp_path / "ck-3.safetensors")
    resumed.fit(x, y, epochs=6, initial_epoch=3, batch_size=16, verbose=0)
    atol = 0.0 if backend.name == "numpy" else 1e-6
    assert_trees_equal(straight.params, resumed.params, atol)
    assert_trees_equal(straight.opt_state, resumed.opt_state, atol)
    assert (resumed.epochs, resumed.steps) == (6, 24)


# ----------------------------------------------------------------------------- ModelCheckpoint
def test_model_checkpoint_names_files_from_epoch_and_logs(on_numpy, tmp_path):
    x, y = data()
    model = mlp()
    pattern = str(tmp_path / "sub" / "m-{epoch:02d}-{val_loss:.3f}.safetensors")
    cb = wf.callbacks.ModelCheckpoint(pattern)
    history = model.fit(
        x, y, epochs=3, batch_size=16, validation_data=(x[:16], y[:16]), callbacks=[cb], verbose=0
    )
    expected = [
        f"m-{e + 1:02d}-{v:.3f}.safetensors" for e, v in enumerate(history.history["val_loss"])
    ]
    assert sorted(os.listdir(tmp_path / "sub")) == expected
    for epoch, name in enumerate(expected, 1):
        assert io.read_safetensors(tmp_path / "sub" / name)[1]["epochs"] == str(epoch)

    bad = wf.callbacks.ModelCheckpoint(str(tmp_path / "{nope}.safetensors"))
    with pytest.raises(KeyError, match="Failed to format this callback filepath"):
        model.fit(x, y, epochs=1, batch_size=16, callbacks=[bad], verbose=0)


def scripted(name, values):
    """A callback that sets ``logs[name]`` to ``values[epoch]`` before the others see it."""
    return wf.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: logs.update({name: values[e]}))


@pytest.mark.parametrize(
    ("monitor", "mode", "threshold", "values", "saved"),
    [
        ("val_loss", "auto", None, [3.0, 2.0, 2.5, 1.0, 1.5], [1, 2, 4]),
        ("val_loss", "min", 1.8, [3.0, 2.0, 2.5, 1.0, 1.5], [4]),
        ("val_accuracy", "auto", None, [0.5, 0.4, 0.7, 0.7, 0.9], [1, 3, 5]),
        ("score", "max", None, [0.5, 0.4, 0.7, 0.7, 0.9], [1, 3, 5]),
    ],
)
def test_save_best_only_writes_improving_epochs(
    on_numpy, tmp_path, monitor, mode, threshold, values, saved
):
    x, y = data()
    cb = wf.callbacks.ModelCheckpoint(
        str(tmp_path / "b-{epoch}.safetensors"),
        monitor=monitor,
        mode=mode,
        save_best_only=True,
        initial_value_threshold=threshold,
    )
    mlp().fit(x, y, epochs=5, batch_size=32, callbacks=[scripted(monitor, values), cb], verbose=0)
    assert sorted(os.listdir(tmp_path)) == [f"b-{e}.safetensors" for e in saved]


def test_a_missing_monitor_warns_once_and_saves(on_numpy, tmp_path):
    x, y = data()
    cb = wf.callbacks.ModelCheckpoint(str(tmp_path / "b-{epoch}.safetensors"), save_best_only=True)
    with pytest.warns(UserWarning, match=r"`val_loss` which is not available.*loss") as record:
        mlp().fit(x, y, epochs=3, batch_size=32, callbacks=[cb], verbose=0)
    assert len(record) == 1  # as Keras 3, nothing to compare: every epoch is saved
    assert sorted(os.listdir(tmp_path)) == [f"b-{e}.safetensors" for e in (1, 2, 3)]


def test_keep_last_deletes_only_its_own_older_files(on_numpy, tmp_path):
    x, y = data()
    (tmp_path / "k-9.safetensors").write_bytes(b"not ours")
    cb = wf.callbacks.ModelCheckpoint(str(tmp_path / "k-{epoch}.safetensors"), keep_last=2)
    model = mlp()
    model.fit(x, y, epochs=4, batch_size=32, callbacks=[cb], verbose=0)
    names = ["k-3.safetensors", "k-4.safetensors", "k-9.safetensors"]
    assert sorted(os.listdir(tmp_path)) == names
    model.fit(x, y, epochs=6, initial_epoch=4, batch_size=32, callbacks=[cb], verbose=0)
    assert sorted(os.listdir(tmp_path)) == ["k-5.safetensors", "k-6.safetensors", names[2]]
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="keep_last"):
            wf.callbacks.ModelCheckpoint("k.safetensors", keep_last=bad)


@pytest.mark.parametrize(
    ("per_call", "files"), [(1, {"s-1-3": 3, "s-2-2": 6}), (2, {"s-1-4": 4, "s-2-2": 6})]
)
def test_save_freq_counts_training_steps(on_numpy, tmp_path, per_call, files):
    x, y = data()  # 64 examples in batches of 16: 4 steps an epoch
    cb = wf.callbacks.ModelCheckpoint(str(tmp_path / "s-{epoch}-{batch}.safetensors"), save_freq=3)
    assert cb.needs_weights
    mlp().fit(
        x, y, epochs=2, batch_size=16, steps_per_execution=per_call, callbacks=[cb], verbose=0
    )
    found = {
        n.removesuffix(".safetensors"): int(io.read_safetensors(tmp_path / n)[1]["steps"])
        for n in os.listdir(tmp_path)
    }
    assert found == files
    for bad in (0, "batch", 2.0):
        with pytest.raises(ValueError, match="save_freq"):
            wf.callbacks.ModelCheckpoint("s.safetensors", save_freq=bad)


def test_a_batch_checkpoint_holds_the_arrays_after_that_step(on_numpy, tmp_path):
    x, y = data()
    cb = wf.callbacks.ModelCheckpoint(str(tmp_path / "s-{batch}.safetensors"), save_freq=2)
    mlp().fit(x, y, epochs=1, batch_size=16, shuffle=False, callbacks=[cb], verbose=0)
    two = mlp()  # the same first two steps (same batches, same dropout keys), then stopped
    two.fit(x[:32], y[:32], epochs=1, batch_size=16, shuffle=False, verbose=0)
    loaded = mlp()
    loaded.load_checkpoint(tmp_path / "s-2.safetensors")
    assert_trees_equal(two.params, loaded.params)
    assert_trees_equal(two.opt_state, loaded.opt_state)
    assert (loaded.epochs, loaded.steps) == (0, 2)  # written inside epoch 0


def test_save_weights_only_writes_a_weights_file(on_numpy, tmp_path):
    x, y = data()
    cb = wf.callbacks.ModelCheckpoint(
        str(tmp_path / "w-{epoch}.safetensors"), save_weights_only=True
    )
    model = mlp()
    model.fit(x, y, epochs=2, batch_size=32, callbacks=[cb], verbose=0)
    tensors, _ = io.read_safetensors(tmp_path / "w-2.safetensors")
    assert not any(name.startswith("@opt/") for name in tensors)
    other = mlp(seed=3)
    other.build((None, 6))
    other.load_weights(tmp_path / "w-2.safetensors")
    assert_trees_equal(model.params, other.params)


# ----------------------------------------------------------------------------- BackupAndRestore
class Interrupt(wf.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise KeyboardInterrupt


def test_backup_and_restore_resumes_in_process(on_numpy, tmp_path):
    x, y = data()
    straight = mlp()
    straight.fit(x, y, epochs=4, batch_size=16, verbose=0)
    backup = wf.callbacks.BackupAndRestore(tmp_path / "bk")
    model = mlp()
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=4, batch_size=16, callbacks=[backup, Interrupt()], verbose=0)
    assert os.listdir(tmp_path / "bk") == ["backup.safetensors"]
    model = mlp()  # a new process would start from a fresh model
    history = model.fit(x, y, epochs=4, batch_size=16, callbacks=[backup], verbose=0)
    assert len(history.history["loss"]) == 2  # epochs 2 and 3
    assert_trees_equal(straight.params, model.params)
    assert not (tmp_path / "bk").exists()  # deleted at the end, with its emptied folder

    kept = wf.callbacks.BackupAndRestore(tmp_path / "keep", delete_checkpoint=False)
    mlp().fit(x, y, epochs=1, batch_size=16, callbacks=[kept], verbose=0)
    assert os.listdir(tmp_path / "keep") == ["backup.safetensors"]
    with pytest.raises(ValueError, match="save_freq"):
        wf.callbacks.BackupAndRestore(tmp_path, save_freq="never")


class InterruptInEpoch(wf.callbacks.Callback):
    """Interrupt ``fit`` once, at the first batch hook from batch 4 of epoch 2 on."""

    def __init__(self):
        self.epoch, self.fired = 0, False

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 2 and batch >= 4 and not self.fired:
            self.fired = True
            raise KeyboardInterrupt


@pytest.mark.parametrize("per_call", [1, 3])
def test_a_backup_within_an_epoch_resumes_at_its_batch(backend, tmp_path, per_call):
    if per_call > 1 and backend.name != "numpy":
        pytest.skip("compiling each call length costs seconds on JAX; numpy covers the counts")
    x, y = data(60)  # 60 examples in batches of 8: 7 full batches and one of 4
    options = {"epochs": 4, "batch_size": 8, "steps_per_execution": per_call, "verbose": 0}
    straight = mlp()
    straight.fit(x, y, **options)
    backup = wf.callbacks.BackupAndRestore(tmp_path / "bk", save_freq=3)
    with pytest.raises(KeyboardInterrupt):
        mlp().fit(x, y, callbacks=[backup, InterruptInEpoch()], **options)
    meta = io.read_safetensors(tmp_path / "bk" / "backup.safetensors")[1]
    # The backup saves after every other callback's hook, so the interrupt at step 21 comes
    # first: the last backup is step 18 (2 batches into epoch 2), or 19 where calls run 3
    # steps (7 + 7 + 5).
    done = 2 if per_call == 1 else 3
    where = [int(meta[k]) for k in ("resume_epoch", "resume_batch", "steps")]
    assert where == [2, done, 16 + done]
    model = mlp()
    # A ModelCheckpoint before the backup counts from the restored step, not from 0.
    saver = wf.callbacks.ModelCheckpoint(
        str(tmp_path / "s-{epoch}-{batch}.safetensors"), save_freq=3
    )
    history = model.fit(x, y, callbacks=[saver, backup], **options)
    assert len(history.history["loss"]) == 2
    if per_call == 1:  # steps 21, 24, 27 and 30: epoch 3 batches 5 and 8, epoch 4 3 and 6
        assert sorted(os.listdir(tmp_path)) == [
            "s-3-5.safetensors",
            "s-3-8.safetensors",
            "s-4-3.safetensors",
            "s-4-6.safetensors",
        ]
    assert_trees_equal(straight.params, model.params, 0.0 if backend.name == "numpy" else 1e-6)
    assert model.steps == straight.steps == 32


@pytest.mark.parametrize("save_freq", ["epoch", "3"])
def test_backup_and_restore_survives_sigkill(tmp_path, save_freq):
    # The subprocess imports the wframe this process tests.
    path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "WFRAME_BACKEND": "numpy", "PYTHONPATH": path}
    run = [sys.executable, SCRIPT, str(tmp_path), save_freq]
    killed = subprocess.run(run, env=env, timeout=60, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (tmp_path / "killed").exists() and (tmp_path / "backup").exists()
    done = subprocess.run(run, env=env, timeout=60, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "backup").exists()

    final = np.load(tmp_path / "final.npz")
    assert int(final["epochs_run"]) == _resume_script.EPOCHS - _resume_script.KILL_EPOCH
    with wf.use_backend("numpy"):
        plain, _ = _resume_script.train(str(tmp_path / "plain"), "epoch", callbacks=False)
    reference = _resume_script.params_dict(plain)
    assert reference.keys() == {k for k in final.files if k != "epochs_run"}
    for name, value in reference.items():
        assert np.array_equal(final[name], value), name
