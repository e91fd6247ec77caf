"""Safetensors files read safely: the whole header checked before anything is allocated
(:mod:`wframe.saving.header`), never unpickled, each tensor streamed straight into its own new
array and its checksum verified on the way (:mod:`wframe.saving.integrity`).

Readers take a single file or a shard index (:mod:`wframe.saving.shards`): a sharded file's
:class:`Header` merges its shards' layouts, and reading it reads each shard in turn.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import numpy as np

from wframe.saving import integrity, shards
from wframe.saving.errors import file_error, not_safetensors
from wframe.saving.header import read_layout


class Header(NamedTuple):
    """A safetensors file's checked header: where its data starts, each tensor's
    ``(dtype, shape, begin, end)`` and the text metadata.

    Attributes:
      path: the file read; for a sharded file, the index.
      start: the byte offset of the data buffer in the file (after the header).
      layout: ``{name: (dtype, shape, begin, end)}``, offsets within the data buffer; for a
        sharded file, the shards' merged.
      metadata: the header's ``__metadata__`` strings.
      checksums: each tensor's recorded digest, or ``None``: the file records none, or the
        header was read with ``verify=False`` (a sharded file's are in its parts).
      parts: for a sharded file, each shard's own header; ``()`` otherwise.
      stamp: identifies the file read (device, inode, size, mtime), so that reading its data
        later notices a replaced file; ``None`` for an index.
    """

    path: str
    start: int
    layout: dict[str, tuple[np.dtype, tuple[int, ...], int, int]]
    metadata: dict[str, str]
    checksums: dict[str, str] | None = None
    parts: tuple[Header, ...] = ()
    stamp: tuple[int, ...] | None = None

    def shapes(self) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        """``{name: (dtype, shape)}`` of every tensor, as a loader compares them with a model."""
        return {name: (e[0], e[1]) for name, e in self.layout.items()}

    @property
    def nbytes(self) -> int:
        """The bytes of all tensors' data."""
        return sum(e[3] - e[2] for e in self.layout.values())


def read_safetensors(
    path: str | os.PathLike, *, verify: bool = True
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file (or a shard index) after checking all of it:
    ``(tensors, metadata)``.

    The header is checked against the file's size before anything is allocated (see
    :mod:`wframe.saving.header`); each array is read straight into a new writable array, at
    most the data's size in all, and, with ``verify``, its checksum checked.

    Args:
      path: a safetensors file, a shard index, or the path a sharded save was given.
      verify: check each tensor against the checksum the file records (files that record
        none, written by other tools, load unchecked).

    Raises:
      WeightsFileError: listing every problem with the content, or naming the tensor whose
        bytes do not match their checksum.
      FileNotFoundError, IsADirectoryError, PermissionError: ``path`` cannot be read.
    """
    header = read_header(path, verify=verify)
    tensors: dict[str, Any] = dict.fromkeys(header.layout)
    for name, a in read_tensors(header, verify=verify):
        tensors[name] = a
    return tensors, dict(header.metadata)


def read_header(path: str | os.PathLike, *, verify: bool = True) -> Header:
    """The header of a safetensors file or shard index, checked as :func:`read_safetensors`
    checks it, without reading any tensor: loaders compare it with the model before
    allocating anything. With ``verify``, the checksums entry is checked and kept for
    :func:`read_tensors`; without, it is ignored.

    Args:
      path: a safetensors file, a shard index, or the path a sharded save was given.
      verify: check and keep the recorded checksums (see above).

    Raises:
      WeightsFileError, FileNotFoundError: as :func:`read_safetensors`.
    """
    path = shards.resolve(path)
    if shards.is_index(path):
        return _sharded(path, verify)
    return _single(path, verify)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors file, from its header alone (checked as
    :func:`read_safetensors` checks it; no tensor is read).

    Args:
      path: a safetensors file, a shard index, or the path a sharded save was given.
    """
    return dict(read_header(path, verify=False).metadata)


def read_tensors(
    header: Header, names: Iterable[str] | None = None, *, verify: bool = True
) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, array)`` for ``names`` (default: all) of the file ``header`` describes, one
    new array at a time in file order, each checked against its checksum (with ``verify``
    and a header read with it).

    Args:
      header: from :func:`read_header` (its ``stamp`` detects a file replaced since).
      names: the tensors to read, in any order; ``None``: all of them.
      verify: check each against its checksum (needs a header read with ``verify=True``).

    Raises:
      WeightsFileError: a checksum mismatch (naming the tensor), a file that ended early, or
        one replaced since its header was read.
      KeyError: a name the file does not hold.
    """
    if header.parts:
        wanted = None if names is None else set(names)
        for name in wanted or ():
            if name not in header.layout:
                raise KeyError(f"{header.path!r} holds no tensor {name!r}")
        for part in header.parts:
            sub = [n for n in part.layout if wanted is None or n in wanted]
            if sub:
                yield from read_tensors(part, sub, verify=verify)
        return
    names = list(header.layout) if names is None else list(names)
    order = sorted(names, key=lambda n: header.layout[n][2])
    sums = header.checksums if verify else None
    with _open(header.path) as (f, path, _, stamp):
        if header.stamp is not None and stamp != header.stamp:
            raise not_safetensors(
                path,
                [
                    "the file changed after its header was read (replaced by another save?); "
                    "read it again"
                ],
            )
        for name in order:
            yield name, _read_one(f, header, name, None if sums is None else sums[name])


def _read_one(f: Any, header: Header, name: str, want: str | None) -> np.ndarray:
    """One tensor, read straight into a new array in chunks, each hashed while in cache."""
    dtype, shape, begin, end = header.layout[name]
    a = np.empty(shape, dtype)
    data = memoryview(a.reshape(-1).view(np.uint8))
    h = integrity.new_hash() if want is not None else None
    f.seek(header.start + begin)
    for i in range(0, len(data), integrity.CHUNK):
        chunk = data[i : i + integrity.CHUNK]
        if f.readinto(chunk) != len(chunk):
            raise not_safetensors(
                header.path,
                [f"the file ended while reading {name!r} (was it changed during the read?)"],
            )
        if h is not None:
            h.update(chunk)
    if h is not None and h.hexdigest() != want:
        raise integrity.mismatch(header.path, name, want, h.hexdigest())
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))


def _single(path: str, verify: bool) -> Header:
    with _open(path) as (f, path, size, stamp):
        start, layout, metadata = read_layout(f, path, size)
    raw = metadata.pop(integrity.KEY, None)
    sums = integrity.parse(raw, layout, path) if raw is not None and verify else None
    return Header(path, start, layout, metadata, sums, (), stamp)


def _sharded(path: str, verify: bool) -> Header:
    """The merged header of the shards an index names, each checked, and their agreement
    with the index: every tensor in the shard the index names, every shard of this save."""
    index = shards.read_index(path)
    problems: list[str] = []
    parts, layout = [], {}
    for shard, names in index.shards.items():
        part = _single(shard, verify)
        base = os.path.basename(shard)
        held = part.layout.keys()
        lacking = [n for n in names if n not in held]
        extra = sorted(held - set(names))
        if lacking:
            problems.append(f"the index maps {_few(lacking)} to {base!r}, which lacks them")
        if extra:
            problems.append(f"{base!r} holds {_few(extra)}, which the index maps elsewhere")
        if index.token is not None and part.metadata.get(shards.TOKEN) != index.token:
            problems.append(
                f"{base!r} belongs to another save than the index (a save was killed or ran "
                "while the files were read); save again, or read again"
            )
        parts.append(part)
        layout.update((n, part.layout[n]) for n in names if n in held)
    if problems:
        raise file_error(f"{path!r}: its shards do not match it:", path, problems)
    return Header(path, 0, layout, index.metadata, None, tuple(parts), None)


def _few(names: list[str], limit: int = 5) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{names[:limit]}{more}"


@contextlib.contextmanager
def _open(path: str | os.PathLike) -> Iterator[tuple[Any, str, int, tuple[int, ...]]]:
    """``(file, path, size, stamp)`` of a regular file opened for reading (a folder, pipe or
    device is refused before anything is read)."""
    path = os.fspath(path)
    info = os.stat(path)
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, "expected a safetensors file, got a folder", path)
    if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
        raise not_safetensors(path, ["it is not a regular file (a pipe, socket or device)"])
    with open(path, "rb") as f:
        info = os.fstat(f.fileno())
        stamp = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        yield f, path, info.st_size, stamp
