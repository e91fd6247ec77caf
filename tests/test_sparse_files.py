"""Sparse weight files (wframe/saving/sparse_pack.py): pruned kernels stored packed, restored
bit for bit (masks too) by every loader, hostile packed tensors refused, and the sizes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import wframe as wf
from wframe import pruning
from wframe.bench import pruned
from wframe.bench.timing import Timer
from wframe.layers import Dense
from wframe.saving import io, sparse_pack
from wframe.saving.io import WeightsFileError
from wframe.transfer import load_pretrained
from wframe.tree import flatten

# A 257x255 kernel: small, but the header no longer dominates the file; 65535 elements, so
# the bitmask has a pad bit.
IN, N = 257, 255


def _model(seed: int = 0, sparsity: float | None = 0.9, units: int = N) -> wf.Sequential:
    layers = [Dense(units, activation="relu"), Dense(10)]
    model = wf.Sequential(layers, seed=seed).build((None, IN))
    return model if sparsity is None else pruning.prune(model, sparsity)


def _bits(a) -> np.ndarray:
    a = np.asarray(wf.to_numpy(a))
    return a.view(f"u{a.dtype.itemsize}") if a.dtype.kind == "f" else a


def _same_arrays(a, b) -> None:
    fa, fb = dict(flatten(a)), dict(flatten(b))
    assert fa.keys() == fb.keys()
    for name in fa:
        np.testing.assert_array_equal(_bits(fa[name]), _bits(fb[name]), err_msg=name)


def _same_masks(a, b) -> None:
    assert set(a.masks) == set(b.masks)
    for name in a.masks:
        np.testing.assert_array_equal(wf.to_numpy(a.masks[name]), wf.to_numpy(b.masks[name]))


def _fitted(backend_name: str) -> wf.Sequential:
    """A pruned model trained one epoch with Adam (moments zero where pruned)."""
    model = _model()
    x = np.random.default_rng(0).normal(size=(32, IN)).astype(np.float32)
    model.fit(x, np.arange(32) % 10, epochs=1, batch_size=32, optimizer="adam", verbose=0)
    return model


# ----------------------------------------------------------------------------- round trips
def test_weights_file_round_trips_bit_for_bit_with_masks(backend, tmp_path):
    model = _model()
    path = tmp_path / "w.safetensors"
    model.save_weights(path)
    layout = io.read_header(path).layout
    assert "@sparse/dense_0/W/values" in layout and "@sparse/dense_0/W/bitmask" in layout
    assert "dense_0/W" not in layout and "@mask/dense_0/W" not in layout  # the pattern is it
    other = _model(seed=1, sparsity=None)
    other.load_weights(path)
    _same_arrays(model.params, other.params)
    _same_masks(model, other)


def test_save_model_and_checkpoints_round_trip_opt_state(backend, tmp_path):
    model = _fitted(backend.name)
    path = tmp_path / "m.safetensors"
    wf.save_model(model, path)
    assert "sparse" in io.read_metadata(path)
    assert any(k.startswith("@sparse/@opt/") for k in io.read_header(path).layout)  # moments
    loaded = wf.load_model(path)
    for tree in ("params", "state", "opt_state"):
        _same_arrays(getattr(model, tree), getattr(loaded, tree))
    _same_masks(model, loaded)
    assert loaded.steps == model.steps
    model.save_checkpoint(tmp_path / "c.safetensors")
    again = _model(seed=3, sparsity=None)
    again.compile(optimizer="adam", loss="softmax_cross_entropy")
    again.load_checkpoint(tmp_path / "c.safetensors")
    _same_arrays(model.opt_state, again.opt_state)
    _same_arrays(model.params, again.params)
    _same_masks(model, again)


def test_unbuilt_model_loads_a_sparse_checkpoint(tmp_path):
    model = _model()
    model.save_checkpoint(tmp_path / "c.safetensors")
    fresh = wf.Sequential([Dense(N, activation="relu"), Dense(10)], seed=7)  # input from the file
    fresh.load_checkpoint(tmp_path / "c.safetensors")
    _same_arrays(model.params, fresh.params)
    _same_masks(model, fresh)


def test_every_reader_restores_the_dense_arrays(tmp_path):
    model = pruning.prune(_model(sparsity=None), 0.99, scope="layer")  # indices are smaller
    path = tmp_path / "w.safetensors"
    model.save_weights(path, max_shard_size=20_000)  # and the parts may land in two shards
    entries = json.loads(io.read_metadata(path)["sparse"])
    assert entries["dense_0/W"]["encoding"] == "indices"
    target = _model(seed=2, sparsity=None)
    report = load_pretrained(target, path)
    assert {k for k, *_ in report.loaded} == {"dense_0/W", "dense_0/b", "dense_1/W", "dense_1/b"}
    _same_arrays(model.params, target.params)
    header = io.read_header(path)
    tensors = dict(sparse_pack.read(header))
    np.testing.assert_array_equal(tensors["dense_0/W"], wf.to_numpy(model.params["dense_0"]["W"]))
    np.testing.assert_array_equal(tensors["@mask/dense_0/W"], wf.to_numpy(model.masks["dense_0/W"]))


def test_plain_safetensors_readers_see_ordinary_tensors(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    model = _model()
    model.save_weights(tmp_path / "w.safetensors")
    raw = st.load_file(str(tmp_path / "w.safetensors"))
    values, bitmask = raw["@sparse/dense_0/W/values"], raw["@sparse/dense_0/W/bitmask"]
    kernel = np.zeros(IN * N, np.float32)
    kernel[np.unpackbits(bitmask, count=IN * N).astype(bool)] = values
    np.testing.assert_array_equal(kernel.reshape(IN, N), model.params["dense_0"]["W"])


def test_exact_bits_negative_zero_and_masks_unlike_the_pattern(tmp_path):
    model = _model(sparsity=None)
    w = np.zeros((IN, N), np.float32)
    w[0, :3] = [-0.0, 1.5, np.float32(np.nan)]  # -0.0 and NaN are values (their bits)
    w[1, 0] = 2.0  # nonzero where the mask is 0: the mask must stay a tensor of its own
    mask = np.zeros((IN, N), bool)
    mask[0, :4] = True  # a kept weight that is exactly 0.0 (w[0, 3])
    model.params = wf.tree.map_at(model.params, {"dense_0/W": lambda _: w})
    model.masks = {"dense_0/W": mask}  # (setting masks zeroes nothing)
    path = tmp_path / "w.safetensors"
    model.save_weights(path)
    layout = io.read_header(path).layout
    assert "@sparse/dense_0/W/values" in layout and "@mask/dense_0/W" in layout
    other = _model(seed=1, sparsity=None)
    other.load_weights(path, allow_nonfinite=True)
    _same_arrays(model.params, other.params)
    _same_masks(model, other)


def test_implicit_mask_keeps_kept_zeros(tmp_path):
    model = _model()
    w = np.array(model.params["dense_0"]["W"])
    kept = np.asarray(model.masks["dense_0/W"]) != 0
    w[np.argwhere(kept)[0][0], np.argwhere(kept)[0][1]] = 0.0  # a kept weight exactly zero
    model.params = wf.tree.map_at(model.params, {"dense_0/W": lambda _: w})
    path = tmp_path / "w.safetensors"
    model.save_weights(path)
    assert json.loads(io.read_metadata(path)["sparse"])["dense_0/W"]["mask"] is True
    other = _model(seed=1, sparsity=None)
    other.load_weights(path)
    _same_masks(model, other)
    _same_arrays(model.params, other.params)


# ----------------------------------------------------------------------------- sizes
def test_size_targets(tmp_path):
    def size(model, name, **kw):
        path = tmp_path / f"{name}.safetensors"
        model.save_weights(path, **kw)
        return os.path.getsize(path)

    dense = _model(sparsity=None)
    assert size(dense, "auto") == size(dense, "off", sparse=False)  # 0%: as before
    assert (tmp_path / "auto.safetensors").read_bytes() == (
        tmp_path / "off.safetensors"
    ).read_bytes()
    model = pruning.prune(_model(sparsity=None), 0.9, scope="layer")
    assert size(model, "sparse90") <= 0.15 * size(dense, "off", sparse=False)
    forced = size(dense, "forced", sparse=True)  # nothing to gain, but exact all the same
    other = _model(seed=1, sparsity=None)
    other.load_weights(tmp_path / "forced.safetensors")
    _same_arrays(dense.params, other.params)
    assert forced > size(dense, "auto")


def test_sparse_argument_is_checked(tmp_path):
    model = _model(sparsity=None)
    for bad in ("yes", 1, None):
        with pytest.raises(ValueError, match="sparse must be 'auto', True or False"):
            model.save_weights(tmp_path / "w.safetensors", sparse=bad)
    with pytest.raises(ValueError, match="sparse must be"):
        wf.save_model(model, tmp_path / "m.safetensors", sparse="always")
    assert not os.path.exists(tmp_path / "w.safetensors")


# ----------------------------------------------------------------------------- hostile files
def _hostile(tmp_path, edit) -> str:
    """A checkpoint whose packed kernel ``edit(tensors, entry)`` broke, its checksums valid."""
    model = _model()
    good = tmp_path / "good.safetensors"
    model.save_checkpoint(good)
    tensors, meta = io.read_safetensors(good)
    entries = json.loads(meta["sparse"])
    edit(tensors, entries["dense_0/W"])
    meta["sparse"] = json.dumps(entries)
    path = str(tmp_path / "bad.safetensors")
    io.write_safetensors(path, tensors, meta)
    return path


def _flip_bit(t, e):
    t["@sparse/dense_0/W/bitmask"][0] ^= 0x80


def _pad_bit(t, e):
    bitmask = t["@sparse/dense_0/W/bitmask"]  # 65535 elements: the last bit is a pad bit
    first = int(np.flatnonzero(np.unpackbits(bitmask))[0])
    bitmask[first // 8] ^= 0x80 >> (first % 8)  # one bit moved: the popcount still fits
    bitmask[-1] |= 1


def _to_indices(t, e, fix):
    bitmask = t.pop("@sparse/dense_0/W/bitmask")
    idx = np.flatnonzero(np.unpackbits(bitmask)).astype(np.int32)
    t["@sparse/dense_0/W/indices"] = fix(idx)
    e["encoding"] = "indices"


def _expanded(t, e):
    _to_indices(t, e, lambda i: i)
    e["shape"] = [IN, N, 16]  # 16x the elements: past 64x its packed bytes


HOSTILE = {
    "popcount": (_flip_bit, "values but its bitmask has"),
    "pad bits": (_pad_bit, "pad bits"),
    "indices order": (
        lambda t, e: _to_indices(t, e, lambda i: i[::-1].copy()),
        "strictly increasing",
    ),
    "indices range": (
        lambda t, e: _to_indices(t, e, lambda i: np.r_[i[:-1], IN * N].astype(np.int32)),
        r"must lie in \[0, 65535\)",
    ),
    "bitmask length": (
        lambda t, e: t.update({"@sparse/dense_0/W/bitmask": t["@sparse/dense_0/W/bitmask"][:-1]}),
        "bitmask must be U8 of shape",
    ),
    "values dtype": (
        lambda t, e: t.update(
            {"@sparse/dense_0/W/values": t["@sparse/dense_0/W/values"].astype(np.float64)}
        ),
        "values must be 1-D F32",
    ),
    "expansion": (_expanded, "more than 64 times"),
    "dense twin": (lambda t, e: t.update({"dense_0/W": np.zeros((IN, N), np.float32)}), "also"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_packed_tensors_are_refused(tmp_path, case):
    edit, message = HOSTILE[case]
    path = _hostile(tmp_path, edit)
    model = _model(seed=4, sparsity=None)
    before = wf.to_numpy(model.params["dense_0"]["W"]).copy()
    for load in (model.load_weights, model.load_checkpoint):
        with pytest.raises(WeightsFileError, match=message) as info:
            load(path)
        assert info.value.path == path and "dense_0/W" in str(info.value)
    np.testing.assert_array_equal(wf.to_numpy(model.params["dense_0"]["W"]), before)


def test_broken_sparse_metadata_is_refused(tmp_path):
    def no_entry(t, e):
        e.clear()

    path = _hostile(tmp_path, no_entry)
    with pytest.raises(WeightsFileError, match="expected an object with shape"):
        _model(sparsity=None).load_weights(path)
    tensors, meta = io.read_safetensors(path)
    del meta["sparse"]
    io.write_safetensors(path, tensors, meta)
    with pytest.raises(WeightsFileError, match="no 'sparse' metadata"):
        _model(sparsity=None).load_weights(path)
    meta["sparse"] = "{not json"
    io.write_safetensors(path, tensors, meta)
    with pytest.raises(WeightsFileError, match="not valid JSON"):
        wf.load_model(path)


def test_declared_shape_is_checked_before_unpacking(tmp_path, monkeypatch):
    model = _model()
    path = tmp_path / "m.safetensors"
    wf.save_model(model, path)
    unpacked = []
    real = sparse_pack.Packed.dense
    monkeypatch.setattr(sparse_pack.Packed, "dense", lambda p: unpacked.append(p) or real(p))
    wider = _model(sparsity=None, units=N + 1)
    with pytest.raises(WeightsFileError, match=r"size mismatch for dense_0/W"):
        wider.load_weights(path)
    with pytest.raises(WeightsFileError, match=r"dense_0/W"):
        wider.load_checkpoint(path)
    assert not unpacked
    wf.load_model(path)
    assert unpacked  # the same file loads, unpacking as it goes


# ----------------------------------------------------------------------------- the bench
def test_pruned_bench_workload_reports_its_targets():
    timer = Timer(rounds=1, chunk_s=0.001, max_reps=1, pause_s=0.0)
    result = pruned.run(True, timer, ["numpy"], [], say=lambda _: None)
    targets = {(t["mode"], t["runner"]): t for t in result["targets"]}
    assert len(targets) == 4 and all(t["ratio"] is not None for t in targets.values())
    assert targets[("file", "90% sparse save_model")]["ratio"] <= 0.15
    assert all(t["status"] == "not judged (--quick)" for t in targets.values())
    table = pruned.markdown(result)
    assert "numpy b=256: structured (128-128-10)" in table and "crossover" in table
