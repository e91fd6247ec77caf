"""Sharded files: one model in several safetensors files plus a JSON index, in the layout
Hugging Face uses (``model.safetensors.index.json``).

Names: a save to ``path`` = ``"m.safetensors"`` whose data exceeds ``max_shard_size`` writes
the shards ``m-00001-of-00003.safetensors`` ... beside it and the index
``m.safetensors.index.json`` (``path`` + ``".index.json"``)::

    {"metadata": {"total_size": 123456, "format": "wframe", ..., "shard_set": "3f2a..."},
     "weight_map": {"dense_0/W": "m-00001-of-00003.safetensors", ...}}

``metadata`` holds ``total_size`` (the data bytes) and the save's own text metadata; each
shard's metadata holds the same and its checksums. ``shard_set``, a token new at each save,
is in every shard and the index: a reader refuses shards of another save (a mix of files that
ran while the files were read). Shards are complete temporary files before any is renamed into
place, never over a shard the current index names: a save over a sharded save of the same
count names its shards ``m-00001-of-00003-<8 hex>.safetensors`` instead (the next one goes back
to the plain names). The index, written last and atomically, is the commit: a save killed
before it leaves the previous save whole, and one killed after it the new one.

A save to ``path`` replaces what an earlier save to ``path`` left: a sharded save removes a
single file at ``path`` and the shards of its pattern the new index does not name; a single
file's save removes the index ``path.index.json`` and its shards.

Reading: every reader takes the index's path, or ``path`` itself when only its index exists.
The index is checked before any shard is opened: a JSON object, every shard a plain file name
(no folder, no ``..``) in the index's folder that exists, every tensor mapped once.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import uuid
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from wframe.saving import writer
from wframe.saving.errors import file_error, no_duplicates, short
from wframe.saving.header import MAX_HEADER

INDEX_SUFFIX = ".index.json"
TOKEN = "shard_set"  #: the metadata entry that ties the shards of one save together
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS.update({"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40})


class Index(NamedTuple):
    """A checked index: its path, ``{shard path: [tensor names]}`` in the index's order, the
    text metadata (without ``total_size`` and ``shard_set``) and the save's token (``None``
    for an index another tool wrote)."""

    path: str
    shards: dict[str, list[str]]
    metadata: dict[str, str]
    token: str | None


def index_path(path: str | os.PathLike) -> str:
    """The index a sharded save to ``path`` writes: ``path + ".index.json"``.

    Args:
      path: the path the save was given (``"m.safetensors"``).
    """
    return os.fspath(path) + INDEX_SUFFIX


def is_index(path: str) -> bool:
    """Whether ``path`` names an index (a ``.json`` file) rather than a safetensors file."""
    return path.lower().endswith(".json")


def resolve(path: str | os.PathLike) -> str:
    """The file to read for ``path``: itself, or its index where only the index exists."""
    path = os.fspath(path)
    if not os.path.lexists(path) and os.path.isfile(index_path(path)):
        return index_path(path)
    return path


def shard_names(path: str, count: int, tag: str = "") -> list[str]:
    """The file names of ``count`` shards of ``path``: ``m-00001-of-00003.safetensors``, or
    with ``tag`` ``m-00001-of-00003-<tag>.safetensors``."""
    stem, ext = os.path.splitext(os.path.basename(path))
    tag = f"-{tag}" if tag else ""
    return [f"{stem}-{i:05d}-of-{count:05d}{tag}{ext}" for i in range(1, count + 1)]


def _live_shards(path: str) -> set[str]:
    """The shard names the index of ``path`` names now (none: no index, or not one that can
    be read; a save then replaces it whole)."""
    try:
        with open(index_path(path), "rb") as f:
            doc = json.loads(f.read(MAX_HEADER))
        return {v for v in doc["weight_map"].values() if isinstance(v, str)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()


def parse_size(value: Any) -> int:
    """Bytes from ``max_shard_size``: an int, or ``"2GB"``, ``"500MB"``, ``"1.5GiB"`` (KB, MB,
    GB, TB in powers of 1000; KiB, MiB, GiB, TiB in powers of 1024).

    Args:
      value: an int, or a number and a unit as above (any case; fractions rounded down to
        whole bytes); at least 1 byte.

    Raises:
      ValueError, TypeError: naming the value and the accepted forms.
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        size = int(value)
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", value)
        unit = match and _UNITS.get(match[2].upper())
        if not unit:
            raise ValueError(
                f"max_shard_size={value!r} is not a size; give bytes as an int or a string "
                "such as '2GB', '500MB' or '1GiB'"
            )
        size = math.floor(float(match[1]) * unit)
    else:
        raise TypeError(f"max_shard_size must be an int or a str like '2GB', got {value!r}")
    if size < 1:
        raise ValueError(f"max_shard_size={value!r} must be at least 1 byte")
    return size


def save(
    path: str | os.PathLike,
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str],
    max_shard_size: Any = None,
) -> None:
    """Write ``tensors`` to ``path``: one file, or shards and an index when their data
    exceeds ``max_shard_size`` (see the module for the names and what is replaced)."""
    path = os.fspath(path)
    limit = None if max_shard_size is None else parse_size(max_shard_size)
    groups = _groups(tensors, limit) if limit is not None else [list(tensors)]
    if len(groups) <= 1:
        writer.write_safetensors(path, tensors, metadata)
        _remove_sharded(path, keep=())
        return
    if os.path.islink(path):
        raise ValueError(
            f"{path!r} is a symbolic link: a sharded save writes several files beside the path "
            "it is given; save to a path in the real folder"
        )
    token = uuid.uuid4().hex
    text = {**metadata, TOKEN: token}
    folder = os.path.dirname(os.path.abspath(path))
    names = shard_names(path, len(groups))
    if set(names) & _live_shards(path):  # never rename over a shard the live index names
        names = shard_names(path, len(groups), token[:8])
    staged = []
    try:
        for name, group in zip(names, groups, strict=True):
            part = {k: tensors[k] for k in group}
            staged.append(writer.stage(os.path.join(folder, name), part, text))
    except BaseException:
        for s in staged:
            s.discard()
        raise
    for i, s in enumerate(staged):
        try:
            s.commit()
        except BaseException:
            for rest in staged[i + 1 :]:
                rest.discard()
            raise
    total = sum(int(a.nbytes) for a in tensors.values())
    index = {
        "metadata": {"total_size": total, **text},
        "weight_map": {k: name for name, group in zip(names, groups, strict=True) for k in group},
    }
    writer.write_bytes(index_path(path), json.dumps(index, indent=2).encode() + b"\n")
    _remove_sharded(path, keep=names)
    if os.path.isfile(path) and not os.path.islink(path):
        with contextlib.suppress(OSError):
            os.unlink(path)


def _groups(tensors: Mapping[str, Any], limit: int) -> list[list[str]]:
    """Tensor names in shards of at most ``limit`` bytes, in order (a larger tensor alone)."""
    groups: list[list[str]] = [[]]
    size = 0
    for name, a in tensors.items():
        n = int(getattr(a, "nbytes", 0))  # (the writer refuses what is not an array)
        if groups[-1] and size + n > limit:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += n
    return groups


def _remove_sharded(path: str, keep: Any) -> None:
    """Remove what an earlier sharded save to ``path`` left and ``keep`` does not name: the
    index (when ``keep`` is empty) and shard files of ``path``'s pattern."""
    folder = os.path.dirname(os.path.abspath(path))
    stem, ext = os.path.splitext(os.path.basename(path))
    pattern = re.compile(re.escape(stem) + r"-\d{5}-of-\d{5}(?:-[0-9a-f]{8})?" + re.escape(ext))
    if not keep:
        if not os.path.lexists(index_path(path)):
            return
        with contextlib.suppress(OSError):
            os.unlink(index_path(path))
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if pattern.fullmatch(entry.name) and entry.name not in keep:
                with contextlib.suppress(OSError):
                    if entry.is_file(follow_symlinks=False):
                        os.unlink(entry.path)


def read_index(path: str) -> Index:
    """The index at ``path``, checked (see the module) before any shard is opened.

    Raises:
      WeightsFileError: listing every problem, naming the index.
      FileNotFoundError, IsADirectoryError: ``path`` cannot be read.
    """
    problems: list[str] = []

    def fail(problem: str):
        return file_error(f"{path!r} is not a valid shard index:", path, [problem])

    with open(path, "rb") as f:
        raw = f.read(MAX_HEADER + 1)
    if len(raw) > MAX_HEADER:
        raise fail(f"it is larger than {MAX_HEADER} bytes")
    try:
        index = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise fail(f"it is not valid JSON ({e})") from None
    if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
        raise fail(f"expected a JSON object with a 'weight_map' object, got {short(index)}")
    meta = index.get("metadata", {})
    if not isinstance(meta, dict):
        raise fail(f"'metadata' must be an object, got {short(meta)}")
    token = meta.get(TOKEN)
    metadata = {
        k: v if isinstance(v, str) else json.dumps(v)
        for k, v in meta.items()
        if k not in ("total_size", TOKEN)
    }
    folder = os.path.dirname(os.path.abspath(path))
    shards: dict[str, list[str]] = {}
    for name, shard in index["weight_map"].items():
        if not _plain(shard):
            problems.append(
                f"tensor {name!r} is mapped to {short(shard)}, not a plain file name in the "
                "index's folder (no folder, '..' or '/')"
            )
            continue
        shards.setdefault(os.path.join(folder, shard), []).append(name)
    for shard in shards:
        if not os.path.isfile(shard):
            problems.append(f"the shard {os.path.basename(shard)!r} is missing from {folder!r}")
    if problems:
        raise file_error(f"{path!r} is not a valid shard index:", path, problems)
    return Index(path, shards, metadata, token if isinstance(token, str) else None)


def _plain(name: Any) -> bool:
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and not any(c in name for c in "/\\\0")
        and os.path.basename(name) == name
    )
