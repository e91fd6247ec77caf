"""Values and metadata a loaded file may hold (wframe.saving.values, checkpoint_meta): NaN and
inf, negative variances, step counts and learning rates, and malformed checkpoint metadata are
refused with a WeightsFileError naming the file, before the model changes."""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe.saving import checkpoint, io
from wframe.saving.checkpoint_meta import parse
from wframe.saving.errors import capped
from wframe.saving.values import check_values, short
from wframe.tree import flatten


def _model(seed=0, compiled=True):
    model = wf.Sequential(
        [wf.layers.Dense(4), wf.layers.BatchNorm(), wf.layers.Dense(2)], seed=seed
    )
    model.build((None, 3))
    if compiled:
        model.compile(optimizer="adam", loss="mse")
        model.opt_state = model.optimizer.init(model.trainable_params)
    return model


def _host(model):
    trees = (model.params, model.state, model.opt_state)
    return {n: np.array(wf.to_numpy(a)) for n, a in flatten(trees)}


def _saved(tmp_path, **kw):
    path = tmp_path / "ck.safetensors"
    _model(**kw).save_checkpoint(path)
    return path


def _rewrite(path, tensors=None, meta=None, drop=()):
    """``path`` rewritten (to a new file) with tensor values and metadata entries replaced."""
    stored, stored_meta = io.read_safetensors(path)
    stored_meta.pop("checksums", None)  # recomputed by the writer
    stored = {k: np.array(a) for k, a in stored.items()}
    for name, value in (tensors or {}).items():
        stored[name] = np.full_like(stored[name], value)
    stored_meta.update(meta or {})
    for key in drop:
        stored_meta.pop(key)
    out = path.with_name("edited.safetensors")
    io.write_safetensors(out, stored, stored_meta)
    return out


def _refused(model, path, match, **kw):
    """Load ``path`` into ``model``, expecting a refusal matching ``match`` that names the file
    and leaves the model as it was."""
    before, counters = _host(model), (model.epochs, model.steps, model.seed, model.resume_at)
    with pytest.raises(io.WeightsFileError, match=match) as info:
        checkpoint.load(model, path, **kw)
    assert str(path) in str(info.value) and info.value.path == str(path)
    after = _host(model)
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k], equal_nan=True) for k in before)
    assert (model.epochs, model.steps, model.seed, model.resume_at) == counters
    return info.value


# ----------------------------------------------------------------------------- the rules
def test_check_values_rules():
    nan = np.array([1.0, np.nan], np.float32)
    assert "non-finite values in dense_0/W: 1 NaN or inf" in check_values("dense_0/W", nan)[0]
    assert check_values("dense_0/W", nan, allow_nonfinite=True) == []
    assert "variance" in check_values("@state/bn/var", np.array([0.5, -1.0]))[0]
    assert check_values("@state/bn/mean", np.array([-1.0])) == []  # a mean may be negative
    assert "step count" in check_values("@opt/inner_state/0/count", np.int32(-1))[0]
    assert "second-moment" in check_values("@opt/0/nu/dense_0/W", np.array([-1e-9]))[0]
    assert check_values("@opt/0/mu/dense_0/W", np.array([-1.0])) == []  # a first moment
    lr = check_values("@opt/hyperparams/learning_rate", np.float32(-0.1))
    assert lr == [
        "@opt/hyperparams/learning_rate is the hyper-parameter learning_rate and "
        "must be >= 0, got -0.1"
    ]
    assert check_values("@opt/hyperparams/my_shift", np.float32(-1)) == []  # unknown: any sign
    assert check_values("@opt/inner_states/nu/inner_state/0/mu/w", np.array([-1.0])) == []
    assert "loss scale" in check_values("@loss_scale/scale", np.float32(0))[0]
    big = check_values("dense_0/W", np.array([1e300, 1.0]), dtype="float32")
    assert "overflow float32" in big[0]
    assert check_values("dense_0/W", np.array([1e30]), dtype="float32") == []
    assert check_values("@mask/dense_0/W", np.array([True, False])) == []


def test_the_first_bad_value_is_found_past_the_first_chunk():
    a = np.zeros((3, 1 << 19), np.float32)  # 1.5 M values: two chunks
    a[2, 7] = np.inf
    assert "first at index (2, 7): inf" in check_values("w", a)[0]


def test_messages_are_capped():
    assert len(short("x" * 10_000)) <= 80
    lines = capped([str(i) for i in range(100)])
    assert len(lines) == 21 and lines[-1] == "... and 80 more"


# ----------------------------------------------------------------------------- values in files
BAD_VALUES = {
    "param NaN": ("dense_0/W", np.nan, "non-finite values in dense_0/W"),
    "state inf": ("@state/batch_norm_0/mean", np.inf, "non-finite values in @state/"),
    "negative variance": ("@state/batch_norm_0/var", -1.0, "is a variance"),
    "optimizer moment inf": ("@opt/inner_state/0/nu/dense_0/W", np.inf, "non-finite"),
    "negative second moment": ("@opt/inner_state/0/nu/dense_1/b", -1.0, "second-moment"),
    "negative count": ("@opt/inner_state/0/count", -5, "step count"),
    "NaN learning rate": ("@opt/hyperparams/learning_rate", np.nan, "learning_rate"),
    "negative learning rate": ("@opt/hyperparams/learning_rate", -0.01, "learning_rate"),
}


@pytest.mark.parametrize("case", BAD_VALUES)
def test_checkpoint_values_are_refused(backend, tmp_path, case):
    name, value, match = BAD_VALUES[case]
    path = _rewrite(_saved(tmp_path), {name: value})
    _refused(_model(seed=1), path, match)


def test_allow_nonfinite_loads_nan_but_not_a_negative_variance(backend, tmp_path):
    saved = _saved(tmp_path)
    model = _model(seed=1)
    checkpoint.load(model, _rewrite(saved, {"dense_0/W": np.nan}), allow_nonfinite=True)
    assert np.isnan(wf.to_numpy(model.params["dense_0"]["W"])).all()
    bad = _rewrite(saved, {"@state/batch_norm_0/var": -1.0})
    _refused(_model(seed=1), bad, "variance", allow_nonfinite=True)
    with pytest.raises(TypeError, match="allow_nonfinite must be True or False"):
        checkpoint.load(model, saved, allow_nonfinite="yes")


def test_every_bad_value_is_listed_then_capped(tmp_path):
    with wf.use_backend("numpy"):
        model = wf.Sequential([wf.layers.Dense(2) for _ in range(15)])
        model.build((None, 2))
        path = tmp_path / "many.safetensors"
        model.save_checkpoint(path)
        names = [n for n, _ in flatten(model.params)]
        error = _refused(model, _rewrite(path, dict.fromkeys(names, np.nan)), "non-finite")
    assert len(error.problems) == 30 and "... and 10 more" in str(error)


def test_backup_and_restore_refuses_a_nan_backup_unless_allowed(tmp_path):
    with wf.use_backend("numpy"):
        folder, x = tmp_path / "bk", np.zeros((4, 3), np.float32)
        keep = wf.callbacks.BackupAndRestore(folder, delete_checkpoint=False)
        _model().fit(x, x[:, :2], callbacks=[keep], verbose=0)
        backup = folder / "backup.safetensors"
        _rewrite(backup, {"dense_1/b": np.nan}).replace(backup)
        model, fit = _model(seed=1), {"epochs": 2, "verbose": 0}
        with pytest.raises(io.WeightsFileError, match="non-finite values in dense_1/b"):
            model.fit(x, x[:, :2], callbacks=[wf.callbacks.BackupAndRestore(folder)], **fit)
        assert model.steps == 0
        allow = wf.callbacks.BackupAndRestore(folder, allow_nonfinite=True)
        with pytest.warns(RuntimeWarning, match="NaN or inf"):  # restored, then the guard
            model.fit(x, x[:, :2], callbacks=[allow], **fit)
        assert np.isnan(wf.to_numpy(model.params["dense_1"]["b"])).all()
        with pytest.raises(TypeError, match="allow_nonfinite must be True or False"):
            wf.callbacks.BackupAndRestore(folder, allow_nonfinite=1)


def test_load_weights_refuses_a_negative_variance(on_numpy, tmp_path):
    model = _model(compiled=False)
    path = tmp_path / "w.safetensors"
    model.save_weights(path)
    bad = _rewrite(path, {"@state/batch_norm_0/var": -2.0})
    with pytest.raises(io.WeightsFileError, match="is a variance"):
        model.load_weights(bad)


@pytest.fixture
def on_numpy():
    with wf.use_backend("numpy") as b:
        yield b


# ----------------------------------------------------------------------------- metadata
BAD_META = [
    ("epochs", "1e3"),
    ("epochs", ""),
    ("epochs", "nan"),
    ("epochs", "-1"),
    ("epochs", " 3"),
    ("epochs", "3 "),
    ("steps", "٣"),  # an Arabic-Indic digit: int() takes it, a checkpoint never holds it
    ("steps", "+4"),
    ("steps", "1_000"),
    ("seed", "-1"),
    ("seed", "99999999999999999999"),
    ("resume_epoch", "-1000000000"),
    ("resume_epoch", "4294967296"),
    ("frozen", "{"),
    ("frozen", "[1]"),
    ("frozen", "[" * 100_000),
    ("input_shape", "[null, 0]"),
    ("input_shape", "[null, true]"),
    ("input_shape", "[null, 1.5]"),
    ("input_shape", "[]"),
    ("input_shape", '"x"'),
    ("opt_state", "maybe"),
]


@pytest.mark.parametrize(("key", "value"), BAD_META, ids=[f"{k}={v[:8]!r}" for k, v in BAD_META])
def test_invalid_metadata_is_refused_before_anything_changes(on_numpy, tmp_path, key, value):
    extra = {"resume_batch": "0"} if key == "resume_epoch" else {}
    path = _rewrite(_saved(tmp_path), meta={key: value, **extra})
    error = _refused(_model(seed=1), path, f"metadata {key}=")
    assert len(str(error)) < 1000


@pytest.mark.parametrize("key", ["epochs", "steps", "seed", "frozen", "input_shape", "opt_state"])
def test_missing_metadata_is_refused(on_numpy, tmp_path, key):
    path = _rewrite(_saved(tmp_path), drop=[key])
    _refused(_model(seed=1), path, f"missing metadata entry '{key}'")


def test_resume_fields_come_in_pairs_within_the_counters(on_numpy, tmp_path):
    saved = _saved(tmp_path)
    model = _model(seed=1)
    _refused(model, _rewrite(saved, meta={"resume_epoch": "1"}), "resume_epoch but no resume_batch")
    _refused(model, _rewrite(saved, meta={"resume_batch": "1"}), "resume_batch but no resume_epoch")
    both = {"resume_epoch": "1", "resume_batch": "-1"}
    _refused(model, _rewrite(saved, meta=both), "metadata resume_batch='-1'")
    ahead = {"resume_epoch": "1", "resume_batch": "3", "steps": "2"}
    _refused(model, _rewrite(saved, meta=ahead), "resume_batch=3 exceeds steps=2")
    fine = {"resume_epoch": "1", "resume_batch": "2", "steps": "2", "epochs": "1", "seed": "7"}
    checkpoint.load(model, _rewrite(saved, meta=fine))
    assert (model.resume_at, model.steps, model.epochs, model.seed) == ((1, 2), 2, 1, 7)


def test_every_metadata_problem_is_listed(on_numpy, tmp_path):
    path = _rewrite(_saved(tmp_path), meta={"epochs": "x", "seed": "-3", "frozen": "7"})
    error = _refused(_model(seed=1), path, "metadata epochs=")
    assert len(error.problems) == 3


def test_parse_gives_the_build_shape_of_several_inputs():
    meta = {
        "epochs": "0",
        "steps": "0",
        "seed": "0",
        "frozen": '["a"]',
        "input_shape": "[[null, 4], [null, null, 3]]",
        "opt_state": "absent",
    }
    fields, problems = parse(meta)
    assert problems == [] and fields.input_shape == ((None, 4), (None, None, 3))
    assert fields.frozen == {"a"} and fields.resume_at is None and not fields.opt_state


def test_other_errors_of_a_load_name_the_file(on_numpy, tmp_path):
    # an optimizer name no wframe knows: the lookup's ValueError becomes a WeightsFileError
    path = _saved(tmp_path)
    model = _model(seed=1)  # to write an optimizer state
    model.save_checkpoint(path)
    edited = _rewrite(path, meta={"optimizer": "no_such_optimizer"})
    error = _refused(_model(seed=1, compiled=False), edited, "no_such_optimizer")
    assert isinstance(error.__cause__ or error.__context__, ValueError)


def test_a_memory_error_during_a_load_names_the_file(on_numpy, tmp_path):
    path = _saved(tmp_path)

    def init(params):
        raise MemoryError("Unable to allocate 116. TiB for an array")

    def update(updates, state, params=None):
        return updates, state

    model = _model(seed=1, compiled=False)
    model.compile(optimizer=wf.optimizers.GradientTransformation(init, update), loss="mse")
    error = _refused(model, path, "MemoryError: Unable to allocate 116. TiB")
    assert isinstance(error.__context__, MemoryError)
