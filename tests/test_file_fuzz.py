"""Seeded fuzzing of every file kind through every loader: a mutated file either loads exactly
what was saved or is refused with ``WeightsFileError``, and a refused load changes nothing.

Mutants: bytes flipped in the header or the data, truncations, appended and inserted bytes,
and a rewritten header length; a few hundred per file kind, drawn from one seed so a failure
reproduces. Bounded in time (small models, numpy) and in memory (tracemalloc peak).
"""

from __future__ import annotations

import struct
import tracemalloc
import zlib

import numpy as np
import pytest

import wframe as wf
from wframe.saving.io import WeightsFileError
from wframe.tree import flatten

MUTANTS = 150  # per file kind and loader: ~1,000 loads in all


def _model(seed: int = 0) -> wf.Sequential:
    model = wf.Sequential(
        [wf.layers.Dense(6, activation="relu"), wf.layers.BatchNorm(), wf.layers.Dense(3)],
        seed=seed,
    )
    model.build((None, 4))
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """``{kind: (bytes, reference arrays)}`` for a weights file, a model file and a checkpoint
    of a trained, pruned model with an optimizer state."""
    folder = tmp_path_factory.mktemp("fuzz")
    with wf.use_backend("numpy"):
        model = _model()
        model.compile(optimizer="adam", loss="mse")
        x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
        model.fit(x, x[:, :3], epochs=1, batch_size=8, verbose=0)
        wf.pruning.prune(model, 0.5)
        paths = {k: folder / f"{k}.safetensors" for k in ("weights", "model", "checkpoint")}
        model.save_weights(paths["weights"])
        wf.save_model(model, paths["model"])
        model.save_checkpoint(paths["checkpoint"])
        reference = _arrays(model)
    return {k: (p.read_bytes(), reference) for k, p in paths.items()}


def _arrays(model) -> dict[str, np.ndarray]:
    trees = {"p": model.params, "s": model.state, "m": model.masks or {}}
    return {
        f"{k}/{name}": np.asarray(wf.backends.to_numpy(a))
        for k, tree in trees.items()
        for name, a in flatten(tree)
    }


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and (a[k] == b[k]).all() for k in a
    )


def _mutants(data: bytes, seed: int):
    """``MUTANTS`` mutated copies of ``data``, each with a description for failures."""
    rng = np.random.default_rng(seed)
    (n,) = struct.unpack("<Q", data[:8])
    for i in range(MUTANTS):
        b = bytearray(data)
        kind = i % 6
        if kind in (0, 1):  # flip bits: in the header (0) or the data (1)
            lo, hi = (8, 8 + n) if kind == 0 or len(data) == 8 + n else (8 + n, len(data))
            at = int(rng.integers(lo, hi))
            b[at] ^= 1 << int(rng.integers(8))
            what = f"bit flip at byte {at}"
        elif kind == 2:
            cut = int(rng.integers(0, len(data)))
            b, what = b[:cut], f"truncated to {cut} bytes"
        elif kind == 3:
            extra = bytes(rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8))
            b, what = b + extra, f"{len(extra)} bytes appended"
        elif kind == 4:
            at = int(rng.integers(8, len(data)))
            b[at:at] = b"\x00"
            what = f"a byte inserted at {at}"
        else:
            new = int(rng.integers(0, 2 * n))
            b[:8], what = struct.pack("<Q", new), f"header length {n} -> {new}"
        yield bytes(b), what


def _load_weights(path):
    model = _model(seed=7)
    before = _arrays(model)
    try:
        model.load_weights(path)
    except WeightsFileError:
        assert _same(_arrays(model), before), "a refused load_weights changed the model"
        return None
    return _arrays(model)


def _load_model(path):
    try:
        return _arrays(wf.load_model(path))
    except WeightsFileError:
        return None


def _load_checkpoint(path):
    model = _model(seed=7)
    model.compile(optimizer="adam", loss="mse")
    before = (_arrays(model), model.steps, model.epochs)
    try:
        model.load_checkpoint(path)
    except WeightsFileError:
        assert (_arrays(model), model.steps, model.epochs)[1:] == before[1:]
        assert _same(_arrays(model), before[0]), "a refused load_checkpoint changed the model"
        return None
    return _arrays(model)


LOADERS = {"load_weights": _load_weights, "load_model": _load_model, "checkpoint": _load_checkpoint}
PAIRS = [
    ("weights", "load_weights"),
    ("model", "load_model"),
    ("model", "load_weights"),
    ("checkpoint", "checkpoint"),
    ("checkpoint", "load_weights"),
]


@pytest.mark.parametrize(("kind", "loader"), PAIRS, ids=[f"{k}-{v}" for k, v in PAIRS])
def test_mutants_load_exactly_or_are_refused(files, kind, loader, tmp_path):
    data, reference = files[kind]
    path = tmp_path / "mutant.safetensors"
    loaded, seed = 0, zlib.crc32(f"{kind}/{loader}".encode())
    tracemalloc.start()
    try:
        with wf.use_backend("numpy"):
            for i, (mutant, what) in enumerate(_mutants(data, seed)):
                path.write_bytes(mutant)
                got = LOADERS[loader](path)
                if got is None:
                    continue
                loaded += 1
                if loader == "load_weights" or kind != "checkpoint":
                    want = {k: v for k, v in reference.items() if k in got}
                    assert _same(got, want), f"mutant {i} ({what}) loaded other values"
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"fuzzing peaked at {peak / 2**20:.0f} MiB"
    assert loaded < MUTANTS  # most mutants are refused; the ones that load were compared


def test_unmutated_files_load(files, tmp_path):
    """The fuzz test's own oracle: each file as written loads through its loaders exactly."""
    with wf.use_backend("numpy"):
        for kind, loader in PAIRS:
            data, reference = files[kind]
            path = tmp_path / f"{kind}.safetensors"
            path.write_bytes(data)
            got = LOADERS[loader](path)
            assert got is not None and _same(got, {k: reference[k] for k in got})
