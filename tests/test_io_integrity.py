"""Integrity of wframe's files: every tensor's checksum is recorded and verified on load (a
one-byte edit anywhere in the data is refused, naming the tensor and the file), files of other
tools still load, a broken checksums entry is refused; headers of a million entries are read
fast; a load streams into the model with bounded extra memory."""

from __future__ import annotations

import json
import struct
import time
import tracemalloc

import numpy as np
import pytest
import safetensors.numpy

import wframe as wf
from wframe.saving import integrity
from wframe.saving.io import WeightsFileError, read_header, read_safetensors, write_safetensors
from wframe.tree import flatten

X = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)


def small(seed=0):
    layers = [wf.layers.Dense(6), wf.layers.BatchNorm(), wf.layers.Dense(3)]
    return wf.Sequential(layers, seed=seed).build((None, 4))


def host(model):
    trees = (model.params, model.state)
    return {n: np.array(wf.to_numpy(a)) for tree in trees for n, a in flatten(tree)}


def same(a, b):
    return sorted(a) == sorted(b) and all(
        (a[k].dtype, a[k].shape, a[k].tobytes()) == (b[k].dtype, b[k].shape, b[k].tobytes())
        for k in a
    )


def raw_parts(path):
    """``(header dict, data bytes)`` of a safetensors file."""
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def rewrite(path, header, data):
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


# ----------------------------------------------------------------------------- recorded
def test_each_tensor_checksum_is_recorded_and_hidden_from_the_metadata(tmp_path):
    path = tmp_path / "w.safetensors"
    arrays = {"a": np.arange(6.0).reshape(2, 3), "b": np.arange(4, dtype=np.int8), "c": np.ones(0)}
    write_safetensors(path, arrays, {"note": "x"})
    header, data = raw_parts(path)
    entry = json.loads(header["__metadata__"]["checksums"])
    assert entry["algorithm"] == "xxh3_64" and set(entry["tensors"]) == {"a", "b", "c"}
    begin, end = header["a"]["data_offsets"]
    assert entry["tensors"]["a"] == integrity.digest(data[begin:end])
    tensors, meta = read_safetensors(path)
    assert meta == {"note": "x"} and same(tensors, arrays)
    assert read_header(path).checksums == entry["tensors"]
    # The safetensors library reads the file as before: the checksums are one more entry.
    assert same(safetensors.numpy.load_file(path), arrays)
    with pytest.raises(ValueError, match="may not use the name 'checksums'"):
        write_safetensors(path, arrays, {"checksums": "{}"})


# ----------------------------------------------------------------------------- one-byte edits
@pytest.mark.parametrize("kind", ["weights", "checkpoint"])
def test_a_one_byte_edit_anywhere_in_the_data_is_refused_naming_the_tensor(tmp_path, kind):
    model = small()
    model.compile(optimizer="adam", loss="mse")
    model.fit(X, X[:, :3], epochs=1, verbose=0)
    path = tmp_path / "w.safetensors"
    (model.save_weights if kind == "weights" else model.save_checkpoint)(path)
    header, data = raw_parts(path)
    good = path.read_bytes()
    start = len(good) - len(data)
    spans = {k: e["data_offsets"] for k, e in header.items() if k != "__metadata__"}
    fresh = small(seed=5)
    before = host(fresh)
    # first, last and a middle byte of every tensor with data
    for name, (begin, end) in spans.items():
        for at in sorted({begin, (begin + end) // 2, end - 1} if end > begin else set()):
            blob = bytearray(good)
            blob[start + at] ^= 0x01
            path.write_bytes(bytes(blob))
            with pytest.raises(WeightsFileError, match="corrupted") as e:
                read_safetensors(path)
            assert repr(name) in str(e.value) and str(path) in str(e.value)
            assert "verify=False" in str(e.value)
            with pytest.raises(WeightsFileError, match=f"tensor {name!r}"):
                if kind == "weights":
                    fresh.load_weights(path)
                else:
                    fresh.load_checkpoint(path)
            assert same(host(fresh), before)  # refused: the model is unchanged
    # verify=False reads the edited bytes as they are
    tensors, _ = read_safetensors(path, verify=False)
    assert path.read_bytes() != good and set(tensors) == set(spans)


def test_verify_false_loads_an_edited_file(tmp_path):
    model = small()
    path = tmp_path / "w.safetensors"
    model.save_weights(path)
    _, data = raw_parts(path)
    blob = bytearray(path.read_bytes())
    blob[len(blob) - len(data)] ^= 0x40  # the first data byte: dense_0/W[0, 0]'s lowest byte
    path.write_bytes(bytes(blob))
    with pytest.raises(WeightsFileError, match="'dense_0/W'"):
        small(seed=1).load_weights(path)
    other = small(seed=1).load_weights(path, verify=False)
    got, want = host(other)["dense_0/W"], host(model)["dense_0/W"]
    assert got.ravel()[0] != want.ravel()[0] and (got.ravel()[1:] == want.ravel()[1:]).all()


def test_files_of_other_tools_without_checksums_load(tmp_path):
    model = small()
    path = tmp_path / "lib.safetensors"
    tensors = {n: np.array(wf.to_numpy(a)) for n, a in flatten(model.params)}
    tensors |= {f"@state/{n}": np.array(wf.to_numpy(a)) for n, a in flatten(model.state)}
    safetensors.numpy.save_file(tensors, path)
    assert read_header(path).checksums is None
    dst = small(seed=9).load_weights(path)
    assert same(host(dst), host(model))


# ----------------------------------------------------------------------------- broken entry
@pytest.mark.parametrize(
    "entry, message",
    [
        ("{not json", "not valid JSON"),
        ('{"algorithm": "xxh3_64"}', "exactly the keys"),
        ('{"algorithm": "md5", "tensors": {}}', "unknown algorithm 'md5'"),
        ('{"algorithm": "xxh3_64", "tensors": []}', "'tensors' must be an object"),
        ("WRONG_NAMES", "not in the file: \\['zz'\\]"),
        ("MISSING", "no checksum for \\['b'\\]"),
        ("NOT_HEX", "the checksum of 'a' is 'xyz"),
        ("UPPER", "not 16 hex digits"),
        ('{"algorithm": "xxh3_64", "tensors": {"a": "0", "a": "1"}}', "duplicate key 'a'"),
    ],
)
def test_a_broken_checksums_entry_is_refused(tmp_path, entry, message):
    path = tmp_path / "w.safetensors"
    write_safetensors(path, {"a": np.arange(3.0), "b": np.ones(2, np.float32)})
    header, data = raw_parts(path)
    sums = json.loads(header["__metadata__"]["checksums"])
    variants = {
        "WRONG_NAMES": {**sums, "tensors": {**sums["tensors"], "zz": "0" * 16}},
        "MISSING": {**sums, "tensors": {"a": sums["tensors"]["a"]}},
        "NOT_HEX": {**sums, "tensors": {**sums["tensors"], "a": "xyz" + "0" * 13}},
        "UPPER": {**sums, "tensors": {**sums["tensors"], "a": sums["tensors"]["a"].upper()}},
    }
    value = json.dumps(variants[entry]) if entry in variants else entry
    header["__metadata__"]["checksums"] = value
    rewrite(path, header, data)
    with pytest.raises(WeightsFileError, match=message) as e:
        read_safetensors(path)
    assert str(path) in str(e.value) and "verify=False" in str(e.value)
    tensors, _ = read_safetensors(path, verify=False)  # the data itself is intact
    np.testing.assert_array_equal(tensors["a"], np.arange(3.0))


# ----------------------------------------------------------------------------- huge headers
def _empty_tensors(path, count, bad_at=None):
    header = {
        f"t{i:07d}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(count)
    }
    if bad_at is not None:
        header[f"t{bad_at:07d}"]["dtype"] = "F33"
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text)
    return text


def _cpu(fn):
    # This thread's CPU time: a process's (time.process_time) also counts threads that
    # earlier tests left spinning (BLAS, XLA), which made one CI run 25x its floor.
    start = time.thread_time()
    try:
        fn()
    except WeightsFileError:
        pass
    return time.thread_time() - start


def test_a_header_of_many_tensors_is_read_or_refused_at_the_speed_of_json(tmp_path):
    """A header of 1M empty tensors (59 MB) took 14.5 s to read; now about as long as
    ``json.loads`` of its text. 10k here, bounded relative to ``json.loads`` (CPU time) so
    that a loaded machine does not fail it."""
    count = 10_000
    path = tmp_path / "h.safetensors"
    text = _empty_tensors(path, count)
    floor = min(_cpu(lambda: json.loads(text)) for _ in range(2))
    read = min(_cpu(lambda: read_header(path)) for _ in range(2))
    assert len(read_header(path).layout) == count
    assert read < 3 * floor + 0.05, (read, floor)
    # A model that does not fit is refused from the header, as fast.
    refused = min(_cpu(lambda: small().load_weights(path)) for _ in range(2))
    assert refused < 4 * floor + 0.1, (refused, floor)
    with pytest.raises(WeightsFileError, match="unexpected in the file") as e:
        small().load_weights(path)
    assert len(str(e.value)) < 5_000  # the names are capped
    # One broken entry: every entry is then checked one by one, for the message.
    _empty_tensors(path, count, bad_at=count - 1)
    with pytest.raises(WeightsFileError, match=f"tensor 't{count - 1:07d}': unknown dtype 'F33'"):
        read_header(path)
    broken = min(_cpu(lambda: read_header(path)) for _ in range(2))
    assert broken < 8 * floor + 0.2, (broken, floor)


def test_a_header_where_every_entry_is_broken_gives_a_capped_message(tmp_path):
    path = tmp_path / "h.safetensors"
    header = {f"t{i}": {"dtype": "F33", "shape": [0], "data_offsets": [0, 0]} for i in range(500)}
    rewrite(path, header, b"")
    with pytest.raises(WeightsFileError, match="and 450 more") as e:
        read_header(path)
    assert len(e.value.problems) == 500 and str(e.value).count("\n") < 60


def test_duplicate_names_and_out_of_order_tensors(tmp_path):
    path = tmp_path / "h.safetensors"
    text = (
        b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
        b'"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'
    )
    path.write_bytes(struct.pack("<Q", len(text)) + text + bytes(8))
    with pytest.raises(WeightsFileError, match="duplicate key 'a'"):
        read_header(path)
    # Tensors listed out of file order take the entry-by-entry path and still load.
    header = {
        "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
        "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
    }
    rewrite(path, header, np.array([1, 2], np.float32).tobytes())
    tensors, _ = read_safetensors(path)
    assert tensors["a"][0] == 1 and tensors["b"][0] == 2 and list(tensors) == ["b", "a"]


# ----------------------------------------------------------------------------- memory
def test_load_weights_streams_into_the_model_with_bounded_extra_memory(tmp_path):
    """tracemalloc on numpy: a load allocates the model's new arrays and little else (no
    second copy of the file); a save streams."""
    model = wf.Sequential([wf.layers.Dense(256) for _ in range(3)], seed=0).build((None, 256))
    nbytes = sum(a.nbytes for _, a in flatten(model.params))  # 790 kB
    path = tmp_path / "m.safetensors"
    tracemalloc.start()
    try:
        model.save_weights(path)
        _, saved = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        model.load_weights(path)
        _, loaded = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert saved < 0.1 * nbytes + 200_000, saved
    assert loaded - base < 1.1 * nbytes + 200_000, (loaded - base, nbytes)


def test_the_column_checks_accept_only_what_the_entry_checks_accept():
    """Seeded mutants of a header: whenever the fast, column-wise path accepts one, the
    entry-by-entry checks accept it too and give the same layout."""
    from wframe.saving import header as H

    rng = np.random.default_rng(7)
    values = [True, 1.0, -1, 0, 3, 2**70, "F32", "BF16", [], [0], [2, 3], None, {"a": 1}]
    fields = ("dtype", "shape", "data_offsets")
    accepted = 0
    for _ in range(400):
        header = {
            "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
            "b": {"dtype": "I8", "shape": [0, 5], "data_offsets": [24, 24]},
            "c": {"dtype": "F64", "shape": [], "data_offsets": [24, 32]},
        }
        for _ in range(int(rng.integers(0, 3))):
            entry = header[str(rng.choice(list(header)))]
            field = str(rng.choice(fields))
            where = int(rng.integers(0, 3))
            value = values[int(rng.integers(0, len(values)))]
            if field not in entry:
                entry[field] = value
            elif isinstance(entry[field], list) and entry[field] and where < len(entry[field]):
                entry[field] = [*entry[field]]
                entry[field][where] = value
            elif where == 2:
                del entry[field]
            else:
                entry[field] = value
        pairs = json.loads(json.dumps(header), object_pairs_hook=tuple)
        names = [k for k, _ in pairs]
        fast = H._fast_layout(names, pairs, 32)
        problems: list[str] = []
        slow = H._checked_layout(pairs, 32, problems, "p")
        if fast is not None:
            accepted += 1
            assert not problems and fast == slow, (header, problems)
    assert 20 < accepted < 400  # both kinds of header were drawn
