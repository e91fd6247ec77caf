"""Safetensors files, read and written safely (the format; a model's weights are
:mod:`wframe.saving.weights`).

Writes go to a temporary file in the same folder, fsync, ``os.replace``: a crash leaves the old
file or the new one, never a torn one (a killed writer may leave a ``.name.*.tmp`` file, which
nothing reads). Reads check the whole header against the file size before allocating anything,
never unpickle, and raise one :class:`WeightsFileError` listing every problem.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import stat
import struct
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from wframe.saving.formats import check_suffix, foreign_fixes, looks_like

FORMAT_VERSION = "1"
STATE_PREFIX, MASK_PREFIX = "@state/", "@mask/"
MAX_HEADER = 100_000_000  # bytes, the safetensors library's own limit
_MAX_BYTES = 2**63 - 1

# safetensors dtype -> NumPy dtype, little-endian as the format stores them
_DTYPES = {
    "BOOL": "|b1",
    "U8": "|u1",
    "I8": "|i1",
    "U16": "<u2",
    "I16": "<i2",
    "F16": "<f2",
    "U32": "<u4",
    "I32": "<i4",
    "F32": "<f4",
    "U64": "<u8",
    "I64": "<i8",
    "F64": "<f8",
    "C64": "<c8",
}
_CODES = {np.dtype(v).str[1:]: k for k, v in _DTYPES.items()}
_NO_NUMPY = ("BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4")


class WeightsFileError(ValueError):
    """A weights file whose content is broken or does not fit the model.

    The message lists every problem found, one per line, then the options that would loosen
    the check; ``path`` and ``problems`` hold the same.
    """

    def __init__(self, message: str, path: str | None = None, problems: tuple[str, ...] = ()):
        super().__init__(message)
        self.path, self.problems = path, list(problems)


def file_error(heading: str, path: str, problems: list[str], fixes=()) -> WeightsFileError:
    """The :class:`WeightsFileError` listing ``problems`` (and the ``fixes`` that apply)."""
    lines = [heading, *(f"  {p}" for p in problems), *sorted(fixes)]
    return WeightsFileError("\n".join(lines), path, tuple(problems))


def _not_safetensors(path: str, problems: list[str]) -> WeightsFileError:
    return file_error(f"{path!r} is not a safetensors file:", path, problems)


# ----------------------------------------------------------------------------- writing
def write_safetensors(
    path: str | os.PathLike,
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``tensors`` (and text ``metadata``) as a safetensors file, atomically.

    The format of ``safetensors.numpy.save`` (tensors by decreasing item size, so each is
    aligned), streamed array by array rather than joined in memory, into a temporary file
    that is fsynced and renamed over ``path``; after a crash ``path`` is the old or new file.

    Raises:
      FileNotFoundError, PermissionError, IsADirectoryError: the folder is missing, is not
        writable, or ``path`` is a folder (the message names ``path``).
      TypeError: a key, array or metadata value of the wrong type.
    """
    path = os.fspath(path)
    check_suffix(path)
    header, arrays = _layout(tensors, metadata)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "cannot write weights over a folder", path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, f"the folder {folder!r} does not exist", path)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    except PermissionError as e:
        raise PermissionError(e.errno, f"the folder {folder!r} is not writable", path) from None
    try:
        if hasattr(os, "fchmod"):  # mkstemp creates 0600; give the file the usual mode
            os.fchmod(fd, _mode(path))
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(header)))
            f.write(header)
            for a in arrays:
                f.write(a.reshape(-1).view(np.uint8).data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (not on Windows)
        with contextlib.suppress(OSError):  # some filesystems refuse to fsync a folder
            dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def _layout(tensors: Any, metadata: Any) -> tuple[bytes, list[np.ndarray]]:
    """The padded JSON header and the arrays in file order (C order, little-endian)."""
    if not isinstance(tensors, Mapping):
        raise TypeError(f"tensors must be a dict of name -> NumPy array, got {type(tensors)}")
    header: dict[str, Any] = {}
    if metadata is not None:
        if not isinstance(metadata, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise TypeError(f"metadata must map str to str, got {metadata!r}")
        header["__metadata__"] = dict(metadata)
    items = []
    for name, a in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise TypeError(f"tensor names must be strings other than '__metadata__', got {name!r}")
        if not isinstance(a, np.ndarray) or a.dtype.str[1:] not in _CODES:
            got = f"dtype {a.dtype}" if isinstance(a, np.ndarray) else type(a).__name__
            raise TypeError(
                f"tensors[{name!r}] must be a NumPy array of a safetensors dtype "
                f"({', '.join(np.dtype(v).name for v in _DTYPES.values())}), got {got}"
            )
        items.append((name, np.asarray(a, dtype=a.dtype.newbyteorder("<"), order="C")))
    items.sort(key=lambda item: -item[1].dtype.itemsize)  # stable: names keep their order
    offset, arrays = 0, []
    for name, a in items:
        code = _CODES[a.dtype.str[1:]]
        header[name] = {
            "dtype": code,
            "shape": list(a.shape),
            "data_offsets": [offset, offset + a.nbytes],
        }
        offset += a.nbytes
        arrays.append(a)
    raw = json.dumps(header, separators=(",", ":")).encode()
    return raw + b" " * (-len(raw) % 8), arrays


def _mode(path: str) -> int:
    """The existing file's permission bits, else those a new file gets (0666 less umask)."""
    with contextlib.suppress(OSError):
        return stat.S_IMODE(os.stat(path).st_mode)
    mask = os.umask(0o022)  # the only portable way to read the umask
    os.umask(mask)
    return 0o666 & ~mask


# ----------------------------------------------------------------------------- reading
def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file after checking all of it: ``(tensors, metadata)``.

    The header is parsed here and checked against the file's size before anything is
    allocated: known dtypes, shapes of ints >= 0, offsets that tile the data buffer exactly (no
    overlap, gap or trailing bytes, as the safetensors library requires). Arrays are read
    straight into new writable arrays: at most the file's size is allocated.

    Raises:
      WeightsFileError: listing every problem with the content.
      FileNotFoundError, IsADirectoryError, PermissionError: ``path`` cannot be read.
    """
    with _open(path) as (f, path, size):
        start, layout, metadata = _read_header(f, path, size)
        tensors = {}
        for name, (dtype, shape, begin, end) in layout.items():
            a = np.empty(shape, dtype)
            f.seek(start + begin)
            if f.readinto(a.reshape(-1).view(np.uint8).data) != end - begin:
                raise _not_safetensors(
                    path,
                    [f"the file ended while reading {name!r} (was it changed during the read?)"],
                )
            tensors[name] = a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))
    return tensors, metadata


class Header(NamedTuple):
    """A safetensors file's checked header: where its data starts, each tensor's
    ``(dtype, shape, begin, end)`` (offsets within the data buffer) and the text metadata."""

    path: str
    start: int
    layout: dict[str, tuple[np.dtype, tuple[int, ...], int, int]]
    metadata: dict[str, str]

    def shapes(self) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        """``{name: (dtype, shape)}`` of every tensor, as a loader compares them with a model."""
        return {name: (e[0], e[1]) for name, e in self.layout.items()}


def read_header(path: str | os.PathLike) -> Header:
    """The header of a safetensors file, checked as :func:`read_safetensors` checks it, without
    reading any tensor: loaders compare it with the model before allocating anything."""
    with _open(path) as (f, path, size):
        return Header(path, *_read_header(f, path, size))


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors file, from its header alone (checked as
    :func:`read_safetensors` checks it; no tensor is read)."""
    return read_header(path).metadata


@contextlib.contextmanager
def _open(path: str | os.PathLike) -> Iterator[tuple[Any, str, int]]:
    """``(file, path, size)`` of a regular file opened for reading (a folder, pipe or
    device is refused before anything is read)."""
    path = os.fspath(path)
    info = os.stat(path)
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, "expected a safetensors file, got a folder", path)
    if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
        raise _not_safetensors(path, ["it is not a regular file (a pipe, socket or device)"])
    with open(path, "rb") as f:
        yield f, path, os.fstat(f.fileno()).st_size


def _read_header(f: Any, path: str, size: int) -> tuple[int, dict[str, tuple], dict[str, str]]:
    """``(data start, {name: (dtype, shape, begin, end)}, metadata)``, all checked."""
    n, header = _header_json(f, path, size)
    problems: list[str] = []
    metadata = header.pop("__metadata__", None)
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        problems.append(f"__metadata__ must map strings to strings, got {_short(metadata)}")
        metadata = {}
    buffer = size - 8 - n
    layout = {
        name: e
        for name, entry in header.items()
        if (e := _entry(name, entry, buffer, problems)) is not None
    }
    entries_ok = len(layout) == len(header)  # else coverage is unknown
    problems += _coverage_problems(layout, buffer, entries_ok)
    if problems:
        raise _not_safetensors(path, problems)
    return 8 + n, layout, metadata


def _header_json(f: Any, path: str, size: int) -> tuple[int, dict]:
    """``(header length, header object)``: the 8-byte length and the JSON it announces."""
    prefix = f.read(8)

    def fail(reason: str, foreign: list[str] | None = None) -> WeightsFileError:
        # Another framework's file (its bytes announce no plausible header) is named as
        # such, with what to do, not by the nonsense its bytes make as a header length.
        if foreign:
            return file_error(
                f"{path!r} is not a safetensors file:",
                path,
                [looks_like(prefix).removeprefix("; ")],
                foreign,
            )
        return _not_safetensors(path, [reason + looks_like(prefix)])

    if size == 0:
        raise fail(
            "the file is empty (0 bytes); a safetensors file starts with an 8-byte header length"
        )
    if len(prefix) < 8:
        raise fail(f"the file has only {size} bytes, fewer than the 8-byte header length")
    (n,) = struct.unpack("<Q", prefix)
    if n > min(MAX_HEADER, size - 8):
        limit = f"; headers are limited to {MAX_HEADER} bytes" if n > MAX_HEADER else ""
        raise fail(
            f"the first 8 bytes give a header length of {n} bytes but the file has {size}{limit}",
            foreign_fixes(prefix),
        )
    try:
        text = f.read(n).decode("utf-8")
    except UnicodeDecodeError as e:
        raise fail(f"the header is not UTF-8 text ({e.reason} at byte {8 + e.start})") from None
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as e:
        raise fail(f"the header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise fail(f"the header is a JSON {_json_type(header)}, expected an object of tensors")
    return n, header


def _coverage_problems(layout: dict[str, tuple], buffer: int, entries_ok: bool) -> list[str]:
    """Tensors that overlap, and (when every entry is valid) data bytes that no tensor covers."""
    problems: list[str] = []
    cursor, last = 0, None
    for begin, end, name in sorted((e[2], e[3], k) for k, e in layout.items()):
        if begin < cursor:
            problems.append(
                f"tensors {last!r} and {name!r} overlap: bytes [{begin}, "
                f"{min(end, cursor)}) of the data buffer belong to both"
            )
        elif begin > cursor and entries_ok:
            problems.append(
                f"bytes [{cursor}, {begin}) of the data buffer belong to no tensor "
                f"(a gap before {name!r})"
            )
        if end > cursor:
            cursor, last = end, name
    if entries_ok and cursor < buffer:
        problems.append(
            f"the data buffer has {buffer} bytes but the tensors end at byte "
            f"{cursor}: {buffer - cursor} trailing bytes"
        )
    return problems


def _entry(name: str, entry: Any, buffer: int, problems: list[str]) -> tuple | None:
    """``(dtype, shape, begin, end)`` of one header entry, or ``None`` with its problems."""
    where, before = f"tensor {name!r}", len(problems)
    if not isinstance(entry, dict):
        problems.append(
            f"{where}: expected an object with dtype, shape and data_offsets, got "
            f"JSON {_json_type(entry)} {_short(entry)}"
        )
        return None
    lacking = [k for k in ("dtype", "shape", "data_offsets") if k not in entry]
    if lacking:
        problems.append(f"{where}: missing {', '.join(map(repr, lacking))}")
        return None
    code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    dtype = np.dtype(_DTYPES[code]) if isinstance(code, str) and code in _DTYPES else None
    if code in _NO_NUMPY:
        problems.append(f"{where}: dtype {code} has no NumPy equivalent; convert the file to F32")
    elif dtype is None:
        problems.append(f"{where}: unknown dtype {_short(code)}; expected one of {list(_DTYPES)}")
    if not _ints(shape) or any(d < 0 for d in shape) or len(shape) > 64:
        problems.append(
            f"{where}: shape must be a list of at most 64 ints >= 0, got {_short(shape)}"
        )
    elif dtype is not None and math.prod(d for d in shape if d) * dtype.itemsize > _MAX_BYTES:
        problems.append(f"{where}: shape {shape} is too large for any array")
    if not _ints(offsets) or len(offsets) != 2:
        problems.append(
            f"{where}: data_offsets must be two ints [begin, end], got {_short(offsets)}"
        )
    elif not 0 <= offsets[0] <= offsets[1] <= buffer:
        past = " (past the end of the data buffer)" if offsets[1] > buffer else ""
        problems.append(
            f"{where}: data_offsets {offsets} must satisfy 0 <= begin <= end <= "
            f"{buffer}, the data buffer's size{past}"
        )
    if len(problems) > before:
        return None
    begin, end = offsets
    need = math.prod(shape) * dtype.itemsize
    if end - begin != need:
        problems.append(
            f"{where}: data_offsets {offsets} hold {end - begin} bytes but shape "
            f"{shape} of {code} needs {need}"
        )
        return None
    return dtype, tuple(shape), begin, end


def _ints(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in x)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"duplicate key {twice!r}")
    return out


def _json_type(x: Any) -> str:
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(x), "number")


def _short(x: Any, limit: int = 80) -> str:
    text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."
