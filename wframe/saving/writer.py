"""Safetensors files written safely: atomically, with checksums, and only over regular files.

A write goes to a temporary file ``.{name}.<random>.tmp`` in the target's folder, is fsynced
and renamed over the target: after a crash the target is the old file or the new one, never a
torn one. Around that:

- **Targets.** A folder, device, FIFO or socket is refused before anything is written (the
  rename would replace it with a regular file: ``/dev/null`` as root). A symbolic link is
  written through: its final target is replaced atomically (the temporary file lies in that
  target's folder) and the link stays. An existing file without write permission for this
  process is refused (:class:`PermissionError` naming it and the fix), not replaced.
- **Leftovers.** A writer killed mid-write leaves its temporary file; the next save of the
  same target removes those files (only names of this writer's pattern, last modified before
  this process imported the module, so no write still running in this process is touched).
- **Errors** of the disk (full: ENOSPC, EDQUOT; too large: EFBIG; I/O) name the path; the old
  file is then unchanged.
- **Checksums.** Each tensor's bytes are hashed while they stream to disk
  (:mod:`wframe.saving.integrity`); the header, written first with placeholder digests of the
  same length, is rewritten in place before the fsync.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
import struct
import tempfile
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from wframe.saving import integrity
from wframe.saving.formats import check_suffix
from wframe.saving.header import CODES, DTYPES

_IMPORTED = time.time()  # temporary files older than this belong to no running writer here
_KINDS = {
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
}


class Staged(NamedTuple):
    """A complete, fsynced temporary file and the path it will replace."""

    tmp: str
    target: str
    path: str  # as the caller named it (a symlink's target is ``target``)

    def commit(self) -> None:
        """Rename the temporary file over its target, durably."""
        try:
            os.replace(self.tmp, self.target)
        except BaseException:
            self.discard()
            raise
        _sync_folder(os.path.dirname(self.target))

    def discard(self) -> None:
        """Remove the temporary file (nothing else changes)."""
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)


def write_safetensors(
    path: str | os.PathLike,
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``tensors`` (and text ``metadata``) as a safetensors file, atomically, recording
    each tensor's checksum in the metadata entry ``"checksums"``.

    The format of ``safetensors.numpy.save`` (tensors by decreasing item size, so each is
    aligned), streamed array by array rather than joined in memory; see the module for the
    targets it refuses, symlinks, leftovers and errors.

    Args:
      path: the file to write; a symlink is written through. Another format's suffix
        (``.h5``) draws a ``UserWarning``: the file is safetensors whatever its name.
      tensors: ``{name: NumPy array}`` of safetensors dtypes; names are strings other than
        ``"__metadata__"``.
      metadata: ``{str: str}`` stored in the header, or ``None``; ``"checksums"`` is reserved.

    Raises:
      FileNotFoundError, PermissionError, IsADirectoryError: the folder is missing, is not
        writable, ``path`` is a folder, or ``path`` is a file without write permission (the
        message names ``path`` and the fix).
      OSError: ``path`` is a device, FIFO or socket; or the disk failed (full, file too
        large), named with the path.
      TypeError: a key, array or metadata value of the wrong type.
      ValueError: the metadata uses ``"checksums"``.
    """
    stage(path, tensors, metadata).commit()


def stage(
    path: str | os.PathLike, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None
) -> Staged:
    """Everything :func:`write_safetensors` does but the final rename: the caller commits
    (sharded saves stage every shard before renaming any)."""
    path = os.fspath(path)
    check_suffix(path)
    items = _items(tensors, metadata)
    header = _header(items, metadata, integrity.placeholder(name for name, _ in items))
    target = check_target(path)
    fd, tmp = _temporary(path, target)
    try:
        if hasattr(os, "fchmod"):  # mkstemp creates 0600; give the file the usual mode
            os.fchmod(fd, _mode(target))
        digests = []
        _write_all(fd, struct.pack("<Q", len(header)) + header)
        for name, a in items:
            h, data = integrity.new_hash(), memoryview(a.reshape(-1).view(np.uint8))
            for i in range(0, len(data), integrity.CHUNK):
                chunk = data[i : i + integrity.CHUNK]
                h.update(chunk)
                _write_all(fd, chunk)
            digests.append((name, h.hexdigest()))
        final = _header(items, metadata, integrity.encode(digests))
        if len(final) != len(header):  # the digests have a fixed width; never happens
            raise RuntimeError("write_safetensors: the header changed length; report this bug")
        os.lseek(fd, 8, os.SEEK_SET)
        _write_all(fd, final)
        os.fsync(fd)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:
            why = f"{e.strerror} while writing the file (the old one is unchanged)"
            raise OSError(e.errno, why, path) from e
        raise
    os.close(fd)
    return Staged(tmp, target, path)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` as :func:`write_safetensors` writes (same targets refused,
    same leftovers removed, atomic): for a shard index."""
    path = os.fspath(path)
    target = check_target(path)
    fd, tmp = _temporary(path, target)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, _mode(target))
        _write_all(fd, data)
        os.fsync(fd)
        os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        Staged(tmp, target, path).discard()
        raise
    Staged(tmp, target, path).commit()


def check_target(path: str) -> str:
    """The file a write to ``path`` replaces (a symlink's final target), checked: its folder
    exists, and it is missing or a regular file this process may write.

    Raises:
      IsADirectoryError, FileNotFoundError, PermissionError, OSError: as
        :func:`write_safetensors` says, naming ``path``.
    """
    target = os.path.realpath(path) if os.path.islink(path) else path
    if os.path.islink(target):  # realpath stops at a loop
        raise OSError(errno.ELOOP, "the symbolic link loops; it points at no file", path)
    try:
        info = os.stat(target)
    except FileNotFoundError:
        info = None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, "cannot write weights over a folder", path)
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, f"the folder {folder!r} does not exist", path)
    if info is None:
        return target
    kind = _KINDS.get(stat.S_IFMT(info.st_mode))
    if kind is not None or not stat.S_ISREG(info.st_mode):
        raise OSError(
            errno.EINVAL,
            f"refusing to write weights over {kind or 'a file that is not regular'}: saving "
            "replaces the file with a regular one; choose another path",
            path,
        )
    if not _writable(info):
        raise PermissionError(
            errno.EACCES,
            f"the file is read-only (mode {stat.S_IMODE(info.st_mode):o}) and is not replaced; "
            f"make it writable (chmod u+w {target}) or remove it first",
            path,
        )
    return target


def _writable(info: os.stat_result) -> bool:
    """Whether the permission bits let this process write the file. Root, who could write
    anything, still respects a file without any write bit: it was protected on purpose."""
    if not hasattr(os, "geteuid"):
        return bool(info.st_mode & stat.S_IWRITE)
    if os.geteuid() == 0:
        return bool(info.st_mode & 0o222)
    if info.st_uid == os.geteuid():
        return bool(info.st_mode & stat.S_IWUSR)
    if info.st_gid == os.getegid() or info.st_gid in os.getgroups():
        return bool(info.st_mode & stat.S_IWGRP)
    return bool(info.st_mode & stat.S_IWOTH)


def _temporary(path: str, target: str) -> tuple[int, str]:
    """``(fd, name)`` of a new temporary file beside ``target``, stale ones removed first."""
    folder, base = os.path.split(os.path.abspath(target))
    remove_stale(folder, base)
    try:
        return tempfile.mkstemp(dir=folder, prefix=f".{base}.", suffix=".tmp")
    except PermissionError as e:
        raise PermissionError(e.errno, f"the folder {folder!r} is not writable", path) from None


def remove_stale(folder: str, base: str) -> list[str]:
    """Remove the temporary files that killed writes of ``folder/base`` left: regular files
    named ``.{base}.<random>.tmp`` (this writer's pattern) last modified before this process
    imported the module. Returns their names.

    Args:
      folder, base: the target's folder and file name (e.g. ``"ckpt"``, ``"m.safetensors"``);
        errors reading the folder or removing a file are ignored.
    """
    pattern = re.compile(re.escape(f".{base}.") + r"[a-z0-9_]{8}\.tmp")
    removed = []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if not pattern.fullmatch(entry.name):
                continue
            with contextlib.suppress(OSError):
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(info.st_mode) and info.st_mtime < _IMPORTED:
                    os.unlink(entry.path)
                    removed.append(entry.name)
    return removed


def _write_all(fd: int, data: Any) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _sync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable (not on Windows; some filesystems refuse)."""
    if hasattr(os, "O_DIRECTORY"):
        with contextlib.suppress(OSError):
            dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def _items(tensors: Any, metadata: Any) -> list[tuple[str, np.ndarray]]:
    """``(name, array)`` in file order (C order, little-endian), every argument checked."""
    if not isinstance(tensors, Mapping):
        raise TypeError(f"tensors must be a dict of name -> NumPy array, got {type(tensors)}")
    if metadata is not None and (
        not isinstance(metadata, Mapping)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise TypeError(f"metadata must map str to str, got {metadata!r}")
    if metadata is not None and integrity.KEY in metadata:
        raise ValueError(
            f"metadata may not use the name {integrity.KEY!r}: write_safetensors records the "
            "tensors' checksums under it"
        )
    items = []
    for name, a in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise TypeError(f"tensor names must be strings other than '__metadata__', got {name!r}")
        if not isinstance(a, np.ndarray) or a.dtype.str[1:] not in CODES:
            got = f"dtype {a.dtype}" if isinstance(a, np.ndarray) else type(a).__name__
            raise TypeError(
                f"tensors[{name!r}] must be a NumPy array of a safetensors dtype "
                f"({', '.join(d.name for d in DTYPES.values())}), got {got}"
            )
        items.append((name, np.asarray(a, dtype=a.dtype.newbyteorder("<"), order="C")))
    items.sort(key=lambda item: -item[1].dtype.itemsize)  # stable: names keep their order
    return items


def _header(items: list, metadata: Mapping[str, str] | None, checksums: str) -> bytes:
    """The JSON header of ``items`` (in this order), padded to a multiple of 8 bytes."""
    header: dict[str, Any] = {"__metadata__": {**(metadata or {}), integrity.KEY: checksums}}
    offset = 0
    for name, a in items:
        header[name] = {
            "dtype": CODES[a.dtype.str[1:]],
            "shape": list(a.shape),
            "data_offsets": [offset, offset + a.nbytes],
        }
        offset += a.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    return raw + b" " * (-len(raw) % 8)


def _mode(path: str) -> int:
    """The existing file's permission bits, else those a new file gets (0666 less umask)."""
    with contextlib.suppress(OSError):
        return stat.S_IMODE(os.stat(path).st_mode)
    mask = os.umask(0o022)  # the only portable way to read the umask
    os.umask(mask)
    return 0o666 & ~mask
