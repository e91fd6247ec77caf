"""A safetensors file's header, parsed and checked against the file's size before anything is
allocated: known dtypes, shapes of ints >= 0, offsets that tile the data buffer exactly (no
overlap, gap or trailing bytes, as the safetensors library requires), no duplicate key.

Fast on huge headers (a legal 59 MB header of a million empty tensors): the JSON is parsed
with the garbage collector paused and objects kept as tuples of pairs (duplicates are then
checked by counting, not by a Python hook per object), and the common, well-formed header is
checked column by column with C-level ``map``/``set``/list comparisons; only when that finds
something wrong are the entries checked one by one, for the messages.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import struct
from collections.abc import Iterator
from functools import partial
from itertools import chain
from operator import eq, itemgetter, mul, sub
from typing import Any

import numpy as np

from wframe.saving.errors import WeightsFileError, json_type, not_safetensors, short
from wframe.saving.formats import foreign_fixes, looks_like

MAX_HEADER = 100_000_000  # bytes, the safetensors library's own limit
MAX_BYTES = 2**63 - 1

#: safetensors dtype -> NumPy dtype, little-endian as the format stores them
DTYPES = {
    code: np.dtype(s)
    for code, s in {
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
    }.items()
}
#: NumPy dtype string without byte order -> safetensors dtype
CODES = {d.str[1:]: code for code, d in DTYPES.items()}
NO_NUMPY = ("BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4")
_ITEMSIZE = {code: d.itemsize for code, d in DTYPES.items()}
_FIELDS = ("dtype", "shape", "data_offsets")


def read_layout(f: Any, path: str, size: int) -> tuple[int, dict[str, tuple], dict[str, str]]:
    """``(data start, {name: (dtype, shape, begin, end)}, metadata)`` of an open file, all
    checked (see the module); one :class:`WeightsFileError` lists every problem."""
    with _gc_paused():  # the parse's garbage is gone when the collector resumes
        return _parse(f, path, size)


def _parse(f: Any, path: str, size: int) -> tuple[int, dict[str, tuple], dict[str, str]]:
    n, pairs = _header_json(f, path, size)
    names = list(map(itemgetter(0), pairs))
    if len(set(names)) != len(names):
        raise _duplicate(path, names)
    problems: list[str] = []
    metadata: Any = {}
    if "__metadata__" in names:
        i = names.index("__metadata__")
        metadata = _objects(pairs[i][1], path)
        pairs, names = pairs[:i] + pairs[i + 1 :], names[:i] + names[i + 1 :]
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        problems.append(f"__metadata__ must map strings to strings, got {short(metadata)}")
        metadata = {}
    buffer = size - 8 - n
    layout = _fast_layout(names, pairs, buffer)
    if layout is None:
        layout = _checked_layout(pairs, buffer, problems, path)
    if problems:
        raise not_safetensors(path, problems)
    return 8 + n, layout, metadata


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Millions of fresh containers would trigger one full collection after another (JSON
    holds no cycles, so nothing is lost by pausing)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _header_json(f: Any, path: str, size: int) -> tuple[int, tuple]:
    """``(header length, header pairs)``: the 8-byte length and the JSON object it announces
    (objects as tuples of ``(key, value)`` pairs)."""
    prefix = f.read(8)

    def fail(reason: str, foreign: list[str] | None = None) -> WeightsFileError:
        # Another framework's file (its bytes announce no plausible header) is named as
        # such, with what to do, not by the nonsense its bytes make as a header length.
        if foreign:
            return not_safetensors(path, [looks_like(prefix).removeprefix("; ")], foreign)
        return not_safetensors(path, [reason + looks_like(prefix)])

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
        header = json.loads(text, object_pairs_hook=tuple)
    except (ValueError, RecursionError) as e:
        raise fail(f"the header is not valid JSON ({e})") from None
    if type(header) is not tuple:
        raise fail(f"the header is a JSON {json_type(header)}, expected an object of tensors")
    return n, header


def _duplicate(path: str, names: list[str]) -> WeightsFileError:
    seen: set[str] = set()
    twice = next(k for k in names if k in seen or seen.add(k))
    return not_safetensors(path, [f"the header is not valid JSON (duplicate key {twice!r})"])


def _objects(x: Any, path: str) -> Any:
    """``x`` with its objects (tuples of pairs) made dicts, refusing duplicate keys."""
    if type(x) is tuple:
        out = {k: _objects(v, path) for k, v in x}
        if len(out) != len(x):
            raise _duplicate(path, [k for k, _ in x])
        return out
    if type(x) is list:
        return [_objects(v, path) for v in x]
    return x


def _fast_layout(names: list[str], pairs: tuple, buffer: int) -> dict[str, tuple] | None:
    """The layout of a well-formed header whose tensors lie in the file in header order, each
    check done on whole columns; ``None`` where any check fails (the caller then checks
    entry by entry, for the messages)."""
    if not pairs:
        return {} if buffer == 0 else None
    if set(map(type, map(itemgetter(1), pairs))) != {tuple}:
        return None
    try:  # the (key, value) pairs of each field, entries of other lengths refused
        first, second, third = zip(*map(itemgetter(1), pairs), strict=True)
    except ValueError:
        return None
    if set(map(itemgetter(0), first)) != {"dtype"}:
        return None
    if set(map(itemgetter(0), second)) != {"shape"}:
        return None
    if set(map(itemgetter(0), third)) != {"data_offsets"}:
        return None
    codes = list(map(itemgetter(1), first))
    if set(map(type, codes)) != {str} or not set(codes) <= _ITEMSIZE.keys():
        return None
    shapes, offsets = list(map(itemgetter(1), second)), list(map(itemgetter(1), third))
    if set(map(type, chain(shapes, offsets))) != {list} or set(map(len, offsets)) != {2}:
        return None
    if max(map(len, shapes)) > 64 or not set(map(type, chain.from_iterable(shapes))) <= {int}:
        return None
    if min(chain.from_iterable(shapes), default=0) < 0:
        return None
    begins, ends = zip(*offsets, strict=True)
    if not set(map(type, chain(begins, ends))) <= {int}:
        return None
    # contiguous in header order from 0 to the buffer's end: no overlap, gap or tail
    if begins[0] != 0 or ends[-1] != buffer or begins[1:] != ends[:-1]:
        return None
    needs = map(mul, map(math.prod, shapes), map(_ITEMSIZE.__getitem__, codes))
    if not all(map(eq, map(sub, ends, begins), needs)):  # (so none is past the buffer either)
        return None
    zeros = [s for s in shapes if len(s) > 1 and 0 in s]  # may not multiply out past any size
    if zeros and max(map(math.prod, map(partial(filter, None), zeros))) > MAX_BYTES // 16:
        return None  # (16 >= any item size) the entries tell exactly
    dtypes = map(DTYPES.__getitem__, codes)
    values = list(zip(dtypes, map(tuple, shapes), begins, ends, strict=True))
    if len(values) > 10_000:  # equal entries share one tuple (a million empty tensors: one),
        shared: dict[tuple, tuple] = {}  # so that the resumed collector has little to scan
        values = map(shared.setdefault, values, values)
    return dict(zip(names, values, strict=True))


def _checked_layout(pairs: tuple, buffer: int, problems: list[str], path: str) -> dict:
    """The layout, entry by entry, every problem recorded with its message."""
    layout = {}
    for name, entry in pairs:
        e = _quick(entry, buffer)
        if e is None:
            e = _entry(name, _objects(entry, path), buffer, problems)
        if e is not None:
            layout[name] = e
    entries_ok = len(layout) == len(pairs)  # else coverage is unknown
    problems += _coverage_problems(layout, buffer, entries_ok)
    return layout


def _quick(entry: Any, buffer: int) -> tuple | None:
    """``(dtype, shape, begin, end)`` of a well-formed entry, else ``None`` (no message: the
    caller asks :func:`_entry` for them)."""
    if type(entry) is not tuple or len(entry) != 3:
        return None
    (k0, code), (k1, shape), (k2, offsets) = entry
    if k0 != "dtype" or k1 != "shape" or k2 != "data_offsets" or type(code) is not str:
        return None
    size = _ITEMSIZE.get(code)
    if size is None or type(shape) is not list or type(offsets) is not list or len(offsets) != 2:
        return None
    begin, end = offsets
    if type(begin) is not int or type(end) is not int or len(shape) > 64:
        return None
    for d in shape:
        if type(d) is not int or d < 0:
            return None
    if not 0 <= begin <= end <= buffer or end - begin != math.prod(shape) * size:
        return None
    if math.prod(filter(None, shape)) * size > MAX_BYTES:
        return None
    return DTYPES[code], tuple(shape), begin, end


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
            f"JSON {json_type(entry)} {short(entry)}"
        )
        return None
    lacking = [k for k in _FIELDS if k not in entry]
    if lacking:
        problems.append(f"{where}: missing {', '.join(map(repr, lacking))}")
        return None
    code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    dtype = DTYPES[code] if isinstance(code, str) and code in DTYPES else None
    if code in NO_NUMPY:
        problems.append(f"{where}: dtype {code} has no NumPy equivalent; convert the file to F32")
    elif dtype is None:
        problems.append(f"{where}: unknown dtype {short(code)}; expected one of {list(DTYPES)}")
    if not _ints(shape) or any(d < 0 for d in shape) or len(shape) > 64:
        problems.append(
            f"{where}: shape must be a list of at most 64 ints >= 0, got {short(shape)}"
        )
    elif dtype is not None and math.prod(d for d in shape if d) * dtype.itemsize > MAX_BYTES:
        problems.append(f"{where}: shape {shape} is too large for any array")
    if not _ints(offsets) or len(offsets) != 2:
        problems.append(
            f"{where}: data_offsets must be two ints [begin, end], got {short(offsets)}"
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
