"""What the packed (sparse) tensors of a file must satisfy before wframe unpacks them (the
format is :mod:`wframe.saving.sparse_pack`'s): the ``"sparse"`` metadata entry against the
header, before any data is read (:func:`entries`), and the packed data once read
(:func:`check_data`). Every problem is a :class:`~wframe.saving.errors.WeightsFileError`
naming the file and the tensor.
"""

from __future__ import annotations

import json
import math
from typing import Any, NamedTuple, NoReturn

import numpy as np

from wframe.saving.errors import file_error, no_duplicates, short
from wframe.saving.header import DTYPES
from wframe.saving.reader import Header

PREFIX = "@sparse/"  #: the namespace of packed tensors' parts
KEY = "sparse"  #: the metadata entry describing them
MASK_PREFIX = "@mask/"  # as wframe.saving.io.MASK_PREFIX (io imports nothing of this module)
MAX_EXPANSION = 64  #: a packed tensor unpacks to at most this many times its packed bytes
FLOATS = ("F16", "F32", "F64")
ENCODINGS = ("bitmask", "indices")
_FIELDS = {"shape", "dtype", "encoding"}
_CODE_OF = {DTYPES[c]: c for c in FLOATS}


class Entry(NamedTuple):
    """One packed tensor as the metadata declares it (checked against the header)."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    encoding: str
    mask: bool  # its pattern is its pruning mask ("@mask/<name>" restored from it)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def values_key(self) -> str:
        return f"{PREFIX}{self.name}/values"

    @property
    def where_key(self) -> str:
        return f"{PREFIX}{self.name}/{self.encoding}"


def entries(header: Header) -> dict[str, Entry]:
    """The packed tensors a file declares (``{}``: none), checked against its header before
    any data is read (see the module).

    Raises:
      WeightsFileError: naming the file and every problem.
    """
    raw = header.metadata.get(KEY)
    stray = [k for k in header.layout if k.startswith(PREFIX)]
    if raw is None:
        if stray:
            _fail(header, [f"it holds packed tensors {short(stray)} but no {KEY!r} metadata"])
        return {}
    try:
        declared = json.loads(raw, object_pairs_hook=no_duplicates)
    except (TypeError, ValueError, RecursionError) as e:
        _fail(header, [f"the {KEY!r} metadata entry is not valid JSON ({e})"])
    if not isinstance(declared, dict):
        _fail(header, [f"the {KEY!r} metadata entry must be a JSON object, got {short(declared)}"])
    problems: list[str] = []
    out = {}
    for name, spec in declared.items():
        entry = _entry(name, spec, header, problems)
        if entry is not None:
            out[name] = entry
    used = {k for e in out.values() for k in (e.values_key, e.where_key)}
    unused = [k for k in stray if k not in used]
    if unused and not problems:
        problems.append(f"packed tensors {short(unused)} belong to no entry of {KEY!r}")
    if problems:
        _fail(header, problems)
    return out


def _entry(name: Any, spec: Any, header: Header, problems: list[str]) -> Entry | None:
    """One declared tensor checked against the header (problems appended), or ``None``."""
    where, before = f"packed tensor {short(name)}", len(problems)
    if not isinstance(spec, dict) or not _FIELDS <= set(spec) <= _FIELDS | {"mask"}:
        problems.append(
            f"{where}: expected an object with shape, dtype, encoding, got {short(spec)}"
        )
        return None
    shape, code, encoding, mask = spec["shape"], spec["dtype"], spec["encoding"], spec.get("mask")
    if not isinstance(shape, list) or len(shape) > 64 or not all(_natural(d) for d in shape):
        problems.append(f"{where}: shape must be a list of ints >= 0, got {short(shape)}")
    if code not in FLOATS:
        problems.append(f"{where}: dtype must be one of {list(FLOATS)}, got {short(code)}")
    if encoding not in ENCODINGS:
        problems.append(
            f"{where}: encoding must be one of {list(ENCODINGS)}, got {short(encoding)}"
        )
    if mask is not None and mask is not True:
        problems.append(f"{where}: 'mask' must be true when present, got {short(mask)}")
    if (
        name.startswith(PREFIX)
        or name in header.layout
        or mask
        and MASK_PREFIX + name in header.layout
    ):
        problems.append(f"{where}: the file also holds it (or its mask) as a dense tensor")
    if len(problems) > before:
        return None
    entry = Entry(name, DTYPES[code], tuple(shape), encoding, bool(mask))
    return entry if _parts_fit(entry, header, problems) else None


def _parts_fit(entry: Entry, header: Header, problems: list[str]) -> bool:
    """Whether the header's parts of ``entry`` are what it declares (else problems appended)."""
    name, code, encoding, shape = entry.name, _CODE_OF[entry.dtype], entry.encoding, entry.shape
    where, before = f"packed tensor {short(name)}", len(problems)
    layout, n = header.layout, entry.size
    parts = [layout.get(entry.values_key), layout.get(entry.where_key)]
    other = f"{PREFIX}{name}/{ENCODINGS[encoding == 'bitmask']}"
    if parts[0] is None or parts[1] is None or other in layout:
        problems.append(
            f"{where}: the file must hold {entry.values_key!r} and {entry.where_key!r} (and not "
            f"{other!r})"
        )
        return False
    (vdt, vshape, *_), (wdt, wshape, *_) = parts
    k = vshape[0] if len(vshape) == 1 else -1
    if vdt != entry.dtype or k < 0 or k > n:
        problems.append(
            f"{where}: its values must be 1-D {code} of at most {n} elements, got "
            f"{vdt.name} {vshape}"
        )
    elif encoding == "bitmask" and (wdt != np.uint8 or wshape != (-(-n // 8),)):
        problems.append(
            f"{where}: its bitmask must be U8 of shape ({-(-n // 8)},) for {n} elements, got "
            f"{wdt.name} {wshape}"
        )
    elif encoding == "indices" and (wdt not in (np.int32, np.int64) or wshape != (k,)):
        problems.append(
            f"{where}: its indices must be I32 or I64 of shape ({k},), got {wdt.name} {wshape}"
        )
    elif n * entry.dtype.itemsize > MAX_EXPANSION * (
        k * vdt.itemsize + math.prod(wshape) * wdt.itemsize
    ):
        problems.append(
            f"{where}: shape {list(shape)} declares more than {MAX_EXPANSION} times the bytes "
            "it packs (wframe never writes that)"
        )
    return len(problems) == before


def check_data(header: Header, entry: Entry, values: np.ndarray, where: np.ndarray) -> None:
    """The packed data of ``entry`` checked before anything is unpacked (see the module)."""
    n, k, problem = entry.size, values.shape[0], None
    if entry.encoding == "bitmask":
        ones = int(np.bitwise_count(where).sum(dtype=np.int64))
        pad = 8 * where.size - n
        if ones != k:
            problem = f"{k} values but its bitmask has {ones} bits set"
        elif pad and int(where[-1]) & ((1 << pad) - 1):
            problem = f"the {pad} pad bits past its {n} elements are not zero"
    elif k and (int(where[0]) < 0 or int(where[-1]) >= n):
        problem = f"its indices must lie in [0, {n}), got {int(where.min())} to {int(where.max())}"
    elif k > 1 and not bool(np.all(where[1:] > where[:-1])):
        at = int(np.argmin(where[1:] > where[:-1])) + 1
        problem = f"its indices must be strictly increasing (at position {at}: {int(where[at])})"
    if problem is not None:
        _fail(header, [f"packed tensor {entry.name!r}: {problem}"])


def _natural(d: Any) -> bool:
    return isinstance(d, int) and not isinstance(d, bool) and d >= 0


def _fail(header: Header, problems: list[str]) -> NoReturn:
    raise file_error(f"{header.path!r} has broken packed (sparse) tensors:", header.path, problems)
