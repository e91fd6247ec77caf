"""BackupAndRestore resumes exactly with every callback: a run interrupted (within an epoch or
at an epoch's end) and resumed from its backup ends with the params, the History entries, the
callbacks' states and the files of the uninterrupted run, bit for bit, on NumPy and JAX, with
``steps_per_execution`` 1 and ``"epoch"``."""

from __future__ import annotations

import functools
import json
import os

import numpy as np
import pytest

import wframe as wf
from wframe.callbacks import (
    BackupAndRestore,
    Callback,
    CSVLogger,
    EarlyStopping,
    ModelCheckpoint,
    ReduceLROnPlateau,
)
from wframe.pruning import PruningSchedule
from wframe.saving import io
from wframe.tree import flatten

EPOCHS, BATCH = 5, 8  # 60 examples: 7 full batches and one of 4, 8 steps an epoch
STOP_EPOCH, STOP_BATCH = 2, 4  # where the interrupted runs stop


def data(n=60):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 6)).astype("float32"), rng.integers(0, 3, n)


def make_model():
    layers = [
        wf.layers.Dense(16, activation="relu"),
        wf.layers.BatchNorm(),
        wf.layers.Dropout(0.25),
        wf.layers.Dense(3),
    ]
    return wf.Sequential(layers, seed=1)


def make_callbacks(kind: str, folder) -> list:
    """The callbacks that keep state across epochs. ``"schedule"``: a learning-rate schedule
    (which ReduceLROnPlateau cannot set) with pruning and early stopping; ``"plateau"``: Adam with
    ReduceLROnPlateau, early stopping, the best checkpoints and a CSV log. Patience and
    min_delta make every counter move: the rate drops at epoch 2, training stops at epoch 3."""
    if kind == "schedule":
        return [
            PruningSchedule(0.6, 0.1, begin_step=3, frequency=5),  # end_step: fit's last step
            EarlyStopping(monitor="loss", min_delta=10, patience=3),
        ]
    return [
        ReduceLROnPlateau(monitor="loss", factor=0.5, patience=2, min_delta=10, cooldown=1),
        EarlyStopping(monitor="loss", min_delta=10, patience=3),
        ModelCheckpoint(
            os.path.join(folder, "best-{epoch}.safetensors"), monitor="loss", save_best_only=True
        ),
        CSVLogger(os.path.join(folder, "log.csv")),
    ]


def optimizer(kind: str):
    if kind == "schedule":
        return wf.optimizers.sgd(wf.schedules.exponential_decay(0.1, 10, 0.5))
    return "adam"


class Interrupt(Callback):
    """Raise KeyboardInterrupt once: at the first batch hook from ``STOP_BATCH`` of
    ``STOP_EPOCH`` on (``"batch"``), or when ``STOP_EPOCH`` begins (``"epoch"``)."""

    def __init__(self, where: str):
        self.where, self.epoch = where, 0
        if where == "batch":
            self.on_train_batch_end = self._batch_end

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        if self.where == "epoch" and epoch == STOP_EPOCH:
            raise KeyboardInterrupt

    def _batch_end(self, batch, logs=None):
        if self.epoch == STOP_EPOCH and batch >= STOP_BATCH:
            raise KeyboardInterrupt


def run(kind, per_call, folder, extra=()):
    """One fit of a fresh model (a new process would start from one) with fresh callbacks."""
    os.makedirs(folder, exist_ok=True)
    model = make_model()
    callbacks = make_callbacks(kind, folder)
    history = model.fit(
        *data(),
        epochs=EPOCHS,
        batch_size=BATCH,
        optimizer=optimizer(kind),
        steps_per_execution=per_call,
        verbose=0,
        callbacks=[*callbacks, *extra],
    )
    return model, history, callbacks


def host(tree):
    return {name: np.array(wf.to_numpy(a)) for name, a in flatten(tree)}


def arrays(model):
    trees = (model.params, model.state, model.masks or {}, model.opt_state)
    return [host(tree) for tree in trees]


def comparable(callbacks) -> list:
    """Each callback's state, the files a ModelCheckpoint wrote by name (folders differ)."""
    out = []
    for cb in callbacks:
        state = cb.get_state()
        if "written" in state:
            state["written"] = [os.path.basename(p) for p in state["written"]]
        out.append((type(cb).__name__, state))
    return out


@functools.cache
def straight(backend_name, kind, per_call, save_freq, folder):
    """The uninterrupted run, with the same callbacks (its backups never read)."""
    with wf.use_backend(backend_name):
        backup = BackupAndRestore(os.path.join(folder, "backup"), save_freq)
        model, history, callbacks = run(kind, per_call, folder, [backup])
        return arrays(model), history, comparable(callbacks), (model.steps, model.epochs)


def files(folder) -> dict:
    """The CSV logs' bytes and the other files' names (checkpoints: written or not)."""
    out = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".csv"):
            with open(os.path.join(folder, name), "rb") as f:
                out[name] = f.read()
        elif not os.path.isdir(os.path.join(folder, name)):
            out[name] = None
    return out


def assert_arrays_equal(got, want):
    for a, b in zip(got, want, strict=True):
        assert a.keys() == b.keys()
        for name in b:
            assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), name


# Every configuration on NumPy; on JAX (a compile per optimizer, call length and donation)
# and CuPy each kind, call length and place of interruption at least once.
MATRIX = [
    (kind, per_call, where)
    for kind in ("schedule", "plateau")
    for per_call in (1, "epoch")
    for where in ("batch", "epoch")
]
# On jax (and cupy) each kind and call length once, interrupted mid-epoch (the harder place):
# each jax configuration compiles its own steps; numpy runs every configuration.
SUBSET = {
    ("schedule", 1, "batch"),
    ("plateau", "epoch", "batch"),
}


@pytest.mark.parametrize(("kind", "per_call", "where"), MATRIX)
def test_a_resumed_run_is_the_uninterrupted_run(backend, tmp_path_factory, kind, per_call, where):
    if backend.name != "numpy" and (kind, per_call, where) not in SUBSET:
        pytest.skip("numpy runs every configuration; jax, cupy one of each kind and length")
    save_freq = 3 if where == "batch" else "epoch"
    ref_dir = tmp_path_factory.getbasetemp() / f"ref-{backend.name}-{kind}-{per_call}-{where}"
    reference = straight(backend.name, kind, per_call, save_freq, str(ref_dir))
    expected_arrays, expected_history, expected_states, counters = reference
    folder = str(tmp_path_factory.mktemp("resumed"))
    backup_dir = os.path.join(folder, "backup")
    with pytest.raises(KeyboardInterrupt):
        run(kind, per_call, folder, [BackupAndRestore(backup_dir, save_freq), Interrupt(where)])
    meta = io.read_metadata(os.path.join(backup_dir, "backup.safetensors"))
    resume_at = (int(meta["resume_epoch"]), int(meta["resume_batch"]))
    # Within an epoch: the last save before the interruption: step 18, or step 16 (epoch 1's
    # one call, whose epoch end the resumed run then plays from the stored sums alone). At an
    # epoch's end: epoch 2's start. Saves come after the other callbacks' hooks, so the
    # interruption at step 21 (or 24) comes before that step's save.
    assert resume_at == {"batch": (2, 2) if per_call == 1 else (1, 8), "epoch": (2, 0)}[where]

    backup = BackupAndRestore(backup_dir, save_freq)
    model, history, callbacks = run(kind, per_call, folder, [backup])
    assert (model.steps, model.epochs) == counters
    assert_arrays_equal(arrays(model), expected_arrays)
    ran = len(history.epoch)
    assert ran and history.epoch == expected_history.epoch[-ran:]
    assert history.history.keys() == expected_history.history.keys()
    for key, values in expected_history.history.items():
        assert history.history[key] == values[-ran:], key  # floats, exactly
    assert comparable(callbacks) == expected_states
    assert files(folder) == files(ref_dir)  # the CSV log byte for byte; the backup is gone


def test_backups_change_nothing_in_an_uninterrupted_run(tmp_path):
    with wf.use_backend("numpy"):
        plain, history, _ = run("plateau", 1, str(tmp_path / "plain"))
    _, expected_history, _, _ = straight("numpy", "plateau", 1, 3, str(tmp_path / "ref"))
    assert_arrays_equal(arrays(plain), straight("numpy", "plateau", 1, 3, str(tmp_path / "ref"))[0])
    assert history.history == expected_history.history


# ----------------------------------------------------------------------------- the protocol
def interrupted_backup(tmp_path, kind="plateau", where="batch"):
    """A backup left by an interrupted numpy run: ``(backup folder, its file)``."""
    folder, backup_dir = str(tmp_path / "run"), str(tmp_path / "run" / "backup")
    save_freq = 3 if where == "batch" else "epoch"
    with wf.use_backend("numpy"), pytest.raises(KeyboardInterrupt):
        run(kind, 1, folder, [BackupAndRestore(backup_dir, save_freq), Interrupt(where)])
    return backup_dir, os.path.join(backup_dir, "backup.safetensors")


def rewrite_metadata(path, **changes):
    """Rewrite the file with metadata entries changed (``None``: removed)."""
    tensors, meta = io.read_safetensors(path)
    meta = {k: v for k, v in meta.items() if k != "checksums"}
    meta.update(changes)
    io.write_safetensors(path, tensors, {k: v for k, v in meta.items() if v is not None})


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"backup_state": "{not json"}, "not valid JSON"),
        ({"backup_state": None}, "no 'backup_state' entry"),
        ({"resume_epoch": None, "resume_batch": None}, "not a BackupAndRestore backup"),
        ({"backup_state": '{"version": 2, "callbacks": {}, "epoch": null}'}, "version 2"),
        ({"backup_state": '{"version": 1, "callbacks": {}, "epoch": null}'}, "sums are missing"),
        (
            {"backup_state": '{"version": 1, "version": 1, "callbacks": {}, "epoch": null}'},
            "appear twice",
        ),
    ],
)
def test_a_broken_backup_is_refused_before_the_model_changes(tmp_path, changes, match):
    _, path = interrupted_backup(tmp_path)
    rewrite_metadata(path, **changes)
    with wf.use_backend("numpy"):
        model = make_model().build((None, 6))
        before = arrays(model)[:3]
        with pytest.raises(wf.WeightsFileError, match=match) as err:
            model.fit(
                *data(),
                epochs=EPOCHS,
                batch_size=BATCH,
                verbose=0,
                callbacks=[
                    *make_callbacks("plateau", str(tmp_path / "run")),
                    BackupAndRestore(os.path.dirname(path), 3),
                ],
            )
    assert err.value.path == path and path in str(err.value)
    assert model.steps == 0
    assert_arrays_equal(arrays(model)[:3], before)


def test_a_bad_callback_state_names_the_callback_and_key(tmp_path):
    _, path = interrupted_backup(tmp_path)
    state = json.loads(io.read_metadata(path)["backup_state"])
    state["callbacks"]["ReduceLROnPlateau #0"]["wait"] = -1
    rewrite_metadata(path, backup_state=json.dumps(state))
    with (
        wf.use_backend("numpy"),
        pytest.raises(
            wf.WeightsFileError, match=r"ReduceLROnPlateau #0.*wait must be an int >= 0, got -1"
        ),
    ):
        run("plateau", 1, str(tmp_path / "run"), [BackupAndRestore(os.path.dirname(path), 3)])


def test_other_metrics_cannot_resume_an_epoch_in_progress(tmp_path):
    backup_dir, path = interrupted_backup(tmp_path)
    with wf.use_backend("numpy"):
        model = make_model()
        model.compile(optimizer="adam", metrics=[])
        with pytest.raises(wf.WeightsFileError, match=r"logged \['loss', 'accuracy'\]"):
            model.fit(
                *data(),
                epochs=EPOCHS,
                batch_size=BATCH,
                verbose=0,
                callbacks=[BackupAndRestore(backup_dir, 3)],
            )
        assert model.steps == 0


def test_a_whole_epoch_call_cannot_resume_within_an_epoch(tmp_path):
    backup_dir, _ = interrupted_backup(tmp_path)  # steps_per_execution=1, at batch 2 of 8
    with wf.use_backend("numpy"), pytest.raises(ValueError, match="steps_per_execution='epoch'"):
        run("plateau", "epoch", str(tmp_path / "run"), [BackupAndRestore(backup_dir, 3)])
    assert os.path.exists(os.path.join(backup_dir, "backup.safetensors"))  # kept


def test_other_callbacks_warn_and_resume(tmp_path):
    backup_dir, _ = interrupted_backup(tmp_path, where="epoch")
    extra = EarlyStopping(monitor="loss", patience=1)  # EarlyStopping #1: not in the backup
    folder = str(tmp_path / "run")
    with wf.use_backend("numpy"):
        callbacks = make_callbacks("plateau", folder)[1:]  # no ReduceLROnPlateau
        with pytest.warns(UserWarning, match=r"ReduceLROnPlateau #0.*\['EarlyStopping #1'\]"):
            history = make_model().fit(
                *data(),
                epochs=EPOCHS,
                batch_size=BATCH,
                verbose=0,
                callbacks=[*callbacks, extra, BackupAndRestore(backup_dir)],
            )
    assert history.epoch[0] == STOP_EPOCH
    assert callbacks[0].best is not None and callbacks[0].wait > 0  # restored, went on


def test_a_callback_added_on_resume_starts_afresh_silently(tmp_path):
    backup_dir, _ = interrupted_backup(tmp_path, where="epoch")
    folder = str(tmp_path / "run")
    added = ModelCheckpoint(str(tmp_path / "every-{epoch}.safetensors"))
    with wf.use_backend("numpy"):  # no warning (they are errors here)
        make_model().fit(
            *data(),
            epochs=EPOCHS,
            batch_size=BATCH,
            verbose=0,
            callbacks=[*make_callbacks("plateau", folder), added, BackupAndRestore(backup_dir)],
        )
    assert [os.path.basename(p) for p in added.written] == [
        "every-3.safetensors",
        "every-4.safetensors",
    ]


def test_state_round_trips_and_bad_values_are_refused(tmp_path):
    for cb in [*make_callbacks("plateau", str(tmp_path)), *make_callbacks("schedule", "")]:
        state = cb.get_state()
        cb.set_state(json.loads(json.dumps(state)))
        assert cb.get_state() == state
        with pytest.raises(ValueError, match=type(cb).__name__):
            cb.set_state({**state, "extra": 1})
    schedule = PruningSchedule(0.5, begin_step=2)
    for bad in ({"end_step": 2}, {"next": True}, {"pruned": [[1, 1.5]]}, {"finished": 1}):
        with pytest.raises(ValueError, match="PruningSchedule"):
            schedule.set_state({**schedule.get_state(), **bad})
    with pytest.raises(ValueError, match="keeps no state"):
        Callback().set_state({"wait": 1})
    assert Callback().get_state() == {}


def test_early_stopping_warns_when_its_best_weights_were_lost(tmp_path):
    backup_dir, _ = interrupted_backup(tmp_path, where="epoch")
    callbacks = make_callbacks("plateau", str(tmp_path / "run"))
    stopper = callbacks[1] = EarlyStopping(
        monitor="loss", min_delta=10, patience=3, restore_best_weights=True
    )
    with wf.use_backend("numpy"), pytest.warns(UserWarning, match="cannot restore the weights"):
        make_model().fit(
            *data(),
            epochs=EPOCHS,
            batch_size=BATCH,
            verbose=0,
            callbacks=[*callbacks, BackupAndRestore(backup_dir)],
        )
    assert stopper.best_epoch == 0 and stopper.stopped_epoch == 3  # restored, then went on
