"""Sharded files: ``save_weights(..., max_shard_size=...)`` writes shards and a Hugging Face
style index; every reader takes the index (or the path the save was given), checks it and
merges the shards; torch files (``safetensors.torch.save_file``, single or sharded by hand as
Hugging Face shards them) read through the same functions."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import wframe as wf
from wframe import transfer
from wframe.saving import shards
from wframe.saving.io import (
    WeightsFileError,
    index_path,
    parse_size,
    read_header,
    read_metadata,
    read_safetensors,
    write_safetensors,
)
from wframe.saving.weights import save_weights
from wframe.tree import flatten

X = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)


def model(seed=0):
    layers = [wf.layers.Dense(16), wf.layers.BatchNorm(), wf.layers.Dense(16), wf.layers.Dense(4)]
    return wf.Sequential(layers, seed=seed).build((None, 8))


def host(m):
    trees = (m.params, m.state)
    return {n: np.array(wf.to_numpy(a)) for tree in trees for n, a in flatten(tree)}


def same(a, b):
    return sorted(a) == sorted(b) and all(a[k].tobytes() == b[k].tobytes() for k in a)


@pytest.mark.parametrize(
    "value, size",
    [(1000, 1000), ("2GB", 2 * 10**9), ("500MB", 5 * 10**8), ("1.5kb", 1500), ("1GiB", 2**30)],
)
def test_sizes(value, size):
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["2 GBs", "", "-1MB", 0, "0.1B", True, 1.5, None])
def test_bad_sizes_are_refused(value):
    with pytest.raises((ValueError, TypeError), match="max_shard_size"):
        parse_size(value)


def test_a_sharded_round_trip(backend, tmp_path):
    src = model()
    path = tmp_path / "m.safetensors"
    save_weights(src, path, max_shard_size=1200)  # dense W: 512 and 1024 bytes
    files = sorted(os.listdir(tmp_path))
    count = len(files) - 1  # (before save_model adds its own shards below)
    assert count > 2 and files[-1] == "m.safetensors.index.json"
    assert files[:-1] == [f"m-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
    index = json.loads((tmp_path / "m.safetensors.index.json").read_text())
    assert set(index) == {"metadata", "weight_map"}
    assert index["metadata"]["total_size"] == sum(a.nbytes for a in host(src).values())
    assert sorted(index["weight_map"]) == sorted(
        [*(n for n, _ in flatten(src.params)), *(f"@state/{n}" for n, _ in flatten(src.state))]
    )
    assert set(index["weight_map"].values()) == set(files[:-1])
    want = host(src)
    for source in (path, index_path(path)):  # the path the save was given, or the index
        dst = model(seed=3).load_weights(source)
        assert same(host(dst), want)
    wf.save_model(src, tmp_path / "whole.safetensors", max_shard_size=1200)
    loaded = wf.load_model(tmp_path / "whole.safetensors")
    assert same(host(loaded), want) and loaded.backend is backend
    np.testing.assert_allclose(wf.to_numpy(loaded.predict(X)), wf.to_numpy(src.predict(X)))
    meta = read_metadata(index_path(path))
    assert meta["format"] == "wframe" and "total_size" not in meta and "shard_set" not in meta
    assert read_header(path).nbytes == index["metadata"]["total_size"]


def test_a_save_replaces_what_an_earlier_save_left(tmp_path):
    src, path = model(), tmp_path / "m.safetensors"
    save_weights(src, path, max_shard_size=600)
    many = len(os.listdir(tmp_path))
    save_weights(src, path, max_shard_size=2000)  # fewer shards: the extra ones go
    assert len(os.listdir(tmp_path)) < many and not (tmp_path / "m.safetensors").exists()
    save_weights(src, path, max_shard_size="1GB")  # fits one file: no index, no shards
    assert os.listdir(tmp_path) == ["m.safetensors"]
    save_weights(src, path)
    save_weights(src, path, max_shard_size=2000)  # sharded again: the single file goes
    assert "m.safetensors" not in os.listdir(tmp_path)
    assert same(host(model(seed=1).load_weights(path)), host(src))


def test_a_failed_sharded_save_leaves_the_previous_files(tmp_path, monkeypatch):
    src, path = model(), tmp_path / "m.safetensors"
    save_weights(src, path, max_shard_size=1200)
    before = {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)}
    real, calls = shards.writer.stage, []

    def failing(*args):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(*args)

    monkeypatch.setattr(shards.writer, "stage", failing)
    with pytest.raises(OSError, match="No space"):
        save_weights(model(seed=8), path, max_shard_size=1200)
    monkeypatch.undo()
    assert {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)} == before
    assert same(host(model(seed=2).load_weights(path)), host(src))
    link = tmp_path / "link.safetensors"
    link.symlink_to(path.with_suffix(".other"))
    with pytest.raises(ValueError, match="symbolic link"):
        save_weights(src, link, max_shard_size=1200)


def test_a_resave_killed_between_its_renames_leaves_the_previous_save(tmp_path, monkeypatch):
    """The new shards never replace a shard the live index names (a save over one of the same
    count takes tagged names), and the index commits: killed after a rename, the previous save
    loads whole; a later save then cleans up what it left."""
    src, path = model(), tmp_path / "m.safetensors"
    save_weights(src, path, max_shard_size=1200)
    first = sorted(os.listdir(tmp_path))
    real, renamed = shards.writer.Staged.commit, []

    def killed(self):
        if renamed:
            raise KeyboardInterrupt  # (kill -9 would not even discard the rest)
        renamed.append(real(self))

    monkeypatch.setattr(shards.writer.Staged, "commit", killed)
    with pytest.raises(KeyboardInterrupt):
        save_weights(model(seed=8), path, max_shard_size=1200)
    monkeypatch.undo()
    assert same(host(model(seed=2).load_weights(path)), host(src))
    save_weights(new := model(seed=9), path, max_shard_size=1200)
    assert same(host(model(seed=2).load_weights(path)), host(new))
    files = sorted(n for n in os.listdir(tmp_path) if not n.startswith("."))  # (not temps)
    assert len(files) == len(first) and files != first  # tagged names, the old ones removed
    save_weights(src, path, max_shard_size=1200)  # and back to the plain names
    assert sorted(n for n in os.listdir(tmp_path) if not n.startswith(".")) == first


def _sharded(tmp_path, max_size=1200):
    src, path = model(), tmp_path / "m.safetensors"
    save_weights(src, path, max_shard_size=max_size)
    index = json.loads((tmp_path / "m.safetensors.index.json").read_text())
    return src, index_path(path), index


def _rewrite(path, index):
    with open(path, "w") as f:
        json.dump(index, f)


@pytest.mark.parametrize(
    "shard, message",
    [
        ("../m-00001-of-00004.safetensors", "not a plain file name"),
        ("sub/m-00001-of-00004.safetensors", "not a plain file name"),
        ("/etc/passwd", "not a plain file name"),
        ("..", "not a plain file name"),
        (7, "not a plain file name"),
        ("gone.safetensors", "'gone.safetensors' is missing"),
    ],
)
def test_an_index_naming_files_outside_its_folder_or_missing_is_refused(tmp_path, shard, message):
    _, path, index = _sharded(tmp_path)
    index["weight_map"]["dense_0/W"] = shard
    _rewrite(path, index)
    before = host(dst := model(seed=4))
    with pytest.raises(WeightsFileError, match=message) as e:
        dst.load_weights(path)
    assert path in str(e.value) and same(host(dst), before)


def test_an_index_that_does_not_match_its_shards_is_refused(tmp_path):
    _, path, index = _sharded(tmp_path)
    first, second = sorted(set(index["weight_map"].values()))[:2]
    moved = next(k for k, v in index["weight_map"].items() if v == first)
    index["weight_map"][moved] = second  # the tensor is in `first`
    _rewrite(path, index)
    with pytest.raises(WeightsFileError, match=f"{second!r}, which lacks them") as e:
        read_safetensors(path)
    assert f"{first!r} holds ['{moved}'], which the index maps elsewhere" in str(e.value)
    text = f'{{"weight_map": {{"a": "{first}", "a": "{second}"}}}}'
    with open(path, "w") as f:
        f.write(text)
    with pytest.raises(WeightsFileError, match="duplicate key 'a'"):
        read_safetensors(path)
    for bad in ("[]", "{}", '{"weight_map": []}', "not json", '{"weight_map": {}, "metadata": 1}'):
        with open(path, "w") as f:
            f.write(bad)
        with pytest.raises(WeightsFileError, match="not a valid shard index"):
            read_header(path)


def test_shards_of_another_save_are_refused(tmp_path):
    """A reader that meets shards of two saves (a save killed between renames, or one that ran
    during the read) refuses them: each save's shards share a token with its index."""
    _, path, index = _sharded(tmp_path)
    shard = os.path.join(tmp_path, sorted(set(index["weight_map"].values()))[-1])
    tensors, meta = read_safetensors(shard)
    write_safetensors(shard, tensors, {**meta, "shard_set": "another"})
    with pytest.raises(WeightsFileError, match="belongs to another save"):
        model(seed=2).load_weights(path)


def test_a_corrupted_shard_is_refused_naming_the_tensor(tmp_path):
    _, path, index = _sharded(tmp_path)
    name = "dense_1/W"
    shard = os.path.join(tmp_path, index["weight_map"][name])
    with open(shard, "rb") as f:
        blob = bytearray(f.read())
    blob[-1] ^= 0xFF
    with open(shard, "wb") as f:
        f.write(bytes(blob))
    with pytest.raises(WeightsFileError, match="corrupted") as e:
        model(seed=2).load_weights(path)
    assert shard in str(e.value)
    model(seed=2).load_weights(path, verify=False, allow_nonfinite=True)


def test_a_checkpoint_split_into_shards_loads(tmp_path):
    src = model()
    src.compile(optimizer="adam", loss="mse")
    src.fit(X, X[:, :4], epochs=2, verbose=0)
    single = tmp_path / "c.safetensors"
    src.save_checkpoint(single)
    tensors, meta = read_safetensors(single)
    (tmp_path / "s").mkdir()
    shards.save(tmp_path / "s" / "c.safetensors", tensors, meta, 1500)
    assert len(os.listdir(tmp_path / "s")) > 2
    dst = model(seed=5)
    dst.compile(optimizer="adam", loss="mse")
    dst.load_checkpoint(tmp_path / "s" / "c.safetensors.index.json")
    assert same(host(dst), host(src)) and dst.steps == src.steps


# ----------------------------------------------------------------------------- torch files
torch = pytest.importorskip("torch")


def test_torch_files_single_and_sharded_as_hugging_face_writes_them(tmp_path):
    import safetensors.torch

    torch.manual_seed(0)
    twin = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    state = {k: v.contiguous() for k, v in twin.state_dict().items()}
    safetensors.torch.save_file(state, tmp_path / "model.safetensors", {"format": "pt"})
    tensors, meta = read_safetensors(tmp_path / "model.safetensors")
    assert meta == {"format": "pt"} and sorted(tensors) == sorted(state)
    # Hugging Face's sharded layout, as transformers' save_pretrained writes it
    (tmp_path / "hf").mkdir()
    parts = [["0.weight", "0.bias"], ["2.weight", "2.bias"]]
    weight_map = {}
    for i, names in enumerate(parts, 1):
        name = f"model-{i:05d}-of-00002.safetensors"
        safetensors.torch.save_file(
            {k: state[k] for k in names}, tmp_path / "hf" / name, {"format": "pt"}
        )
        weight_map.update(dict.fromkeys(names, name))
    total = sum(v.numel() * v.element_size() for v in state.values())
    with open(tmp_path / "hf" / "model.safetensors.index.json", "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    index = str(tmp_path / "hf" / "model.safetensors.index.json")
    merged, meta = read_safetensors(index)
    assert sorted(merged) == sorted(state) and meta == {}
    for k, v in state.items():
        np.testing.assert_array_equal(merged[k], v.numpy())
    ours = wf.Sequential([wf.layers.Dense(16, "relu"), wf.layers.Dense(3)]).build((None, 6))
    transfer.from_torch(ours, index)
    x = np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)
    with torch.no_grad():
        want = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(wf.to_numpy(ours.predict(x)), want, rtol=1e-5, atol=1e-6)
