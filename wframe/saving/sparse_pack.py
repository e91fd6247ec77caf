"""Sparse tensors in wframe files: a mostly-zero float kernel stored as its nonzero values
plus where they go, as ordinary safetensors tensors that any reader sees.

**Format.** A tensor ``name`` (``"dense_0/W"``, ``"@opt/0/mu/dense_0/W"``) that is packed
is absent from the file under its own name; instead the file holds

- ``"@sparse/<name>/values"``: its nonzero elements in C order, 1-D, the tensor's dtype;
- ``"@sparse/<name>/bitmask"``: ``np.packbits`` of the nonzero pattern (U8, ``ceil(n / 8)``
  bytes, the first element in the most significant bit, pad bits zero), or
  ``"@sparse/<name>/indices"``: the flat C-order positions of the values (I32, or I64 past
  ``2**31 - 1`` elements, strictly increasing), whichever is smaller (ties, and indices
  that would unpack to more than ``MAX_EXPANSION`` times their bytes: the bitmask);

and the metadata entry ``"sparse"`` maps each packed name to
``{"shape": [...], "dtype": "F32", "encoding": "bitmask" | "indices"}``, plus ``"mask":
true`` when the tensor's pruning mask is its pattern (below). "Nonzero" means a nonzero bit
pattern, so ``-0.0`` and NaN payloads are values and the dense array comes back bit for bit.

**Masks.** A pruned param's mask (``"@mask/<name>"``, booleans) is written as a tensor of its
own only where it is not the param's pattern. The pattern packed is ``mask | (W != 0)``;
where that equals the mask (the usual case: pruning keeps masked weights at exactly zero; a
kept weight that is exactly zero is stored as a value), the mask tensor is dropped and
``"mask": true`` says that the pattern restores it. Otherwise the mask tensor stays, exact.
This is the smallest exact choice: a separate boolean mask costs a byte per element, more
than twice the packed values of a 90%-sparse float32 kernel.

**Which tensors** (:func:`pack`): float (F16, F32, F64) tensors of at least two dims:
kernels, and their optimizer moments in checkpoints. ``sparse="auto"`` packs those of at least
:data:`MIN_SIZE` elements whose pattern is more than half zeros; ``True`` every one;
``False`` none (the file is exactly what it was before this format existed).

**Reading** (:func:`shapes`, :func:`read`, :func:`unpack`): the metadata entry is checked
against the header before anything is read (:mod:`wframe.saving.sparse_checks`: known names,
a float dtype, the values' dtype and length, the bitmask's length ``ceil(n / 8)``, indices of
an integer dtype and the values' length, no name both packed and dense, at most
``MAX_EXPANSION`` (64) times the packed bytes when unpacked); loaders compare the declared
shapes and dtypes with the model; the packed data, once read (and its checksums verified), is
checked (values count equals the bitmask's popcount, pad bits zero, indices strictly
increasing within range) before the dense array is allocated. Every problem is a
:class:`~wframe.saving.errors.WeightsFileError` naming the file and the tensor.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from wframe.saving.header import CODES
from wframe.saving.reader import Header, read_tensors
from wframe.saving.sparse_checks import (
    KEY,
    MASK_PREFIX,
    MAX_EXPANSION,
    PREFIX,
    Entry,
    check_data,
    entries,
)

__all__ = ["KEY", "PREFIX", "Entry", "Packed", "check_mode", "declared", "dense", "entries"]
__all__ += ["pack", "read", "shapes", "unpack"]

MODES = ("auto", True, False)
THRESHOLD = 0.5  #: ``"auto"`` packs a tensor whose pattern has more than this fraction of zeros
MIN_SIZE = 256  #: ``"auto"`` leaves smaller tensors dense: their header entries cost more


class Packed(NamedTuple):
    """A packed tensor read but not unpacked: its ``shape``, ``dtype`` and ``nbytes`` are the
    dense array's (``part="mask"``: its boolean mask's), so that a loader compares them with
    the model first; :meth:`dense` allocates and fills the array."""

    entry: Entry
    values: np.ndarray
    where: np.ndarray
    part: str = "dense"

    @property
    def shape(self) -> tuple[int, ...]:
        return self.entry.shape

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(bool) if self.part == "mask" else self.entry.dtype

    @property
    def nbytes(self) -> int:
        return self.entry.size * self.dtype.itemsize

    def dense(self) -> np.ndarray:
        """The dense array (or mask), bit for bit as it was saved."""
        n, support = self.entry.size, self.where
        if self.entry.encoding == "bitmask":
            support = np.unpackbits(self.where, count=n).view(bool)
        if self.part == "mask":
            out = np.zeros(n, bool)
            out[support] = True
            return out.reshape(self.entry.shape)
        out = np.zeros(n, self.values.dtype)
        uint = np.dtype(f"u{self.values.dtype.itemsize}")
        out.view(uint)[support] = self.values.view(uint)  # bits, NaN payloads included
        return out.reshape(self.entry.shape)


def dense(a: Any) -> Any:
    """``a`` unpacked if it is :class:`Packed`, else ``a`` itself."""
    return a.dense() if isinstance(a, Packed) else a


# ----------------------------------------------------------------------------- writing
def check_mode(sparse: Any, what: str) -> Any:
    """``sparse`` checked: ``"auto"``, ``True`` or ``False``.

    Raises:
      ValueError: naming ``what`` and the value.
    """
    if not any(sparse is m or (isinstance(sparse, str) and sparse == m) for m in MODES):
        raise ValueError(
            f"{what}: sparse must be 'auto', True or False, got {sparse!r} ('auto' packs float "
            f"kernels more than {THRESHOLD:.0%} zeros; True packs every float kernel)"
        )
    return sparse


def pack(tensors: Mapping[str, np.ndarray], sparse: Any = "auto") -> tuple[dict, dict[str, str]]:
    """``(tensors, metadata)`` to write: ``tensors`` with the tensors ``sparse`` selects
    replaced by their packed parts (and masks their pattern restores left out), and the
    metadata entry describing them (``{}`` when nothing is packed). See the module."""
    check_mode(sparse, "pack")
    if sparse is False:
        return dict(tensors), {}
    packed: dict[str, tuple[dict, dict[str, np.ndarray]]] = {}
    for name, a in tensors.items():
        if _candidate(name, a):
            got = _pack_one(a, tensors.get(MASK_PREFIX + name), sparse)
            if got is not None:
                packed[name] = got
    if not packed:
        return dict(tensors), {}
    dropped = {MASK_PREFIX + n for n, (entry, _) in packed.items() if entry.get("mask")}
    out: dict[str, np.ndarray] = {}
    for name, a in tensors.items():
        if name in packed:
            out.update((f"{PREFIX}{name}/{part}", v) for part, v in packed[name][1].items())
        elif name not in dropped:
            out[name] = a
    described = {name: entry for name, (entry, _) in packed.items()}
    return out, {KEY: json.dumps(described, separators=(",", ":"), ensure_ascii=False)}


def _candidate(name: str, a: Any) -> bool:
    return (
        not name.startswith(MASK_PREFIX)
        and isinstance(a, np.ndarray)
        and a.dtype.kind == "f"
        and a.dtype.str[1:] in CODES
        and a.ndim >= 2
        and a.size > 0
    )


def _pack_one(a: np.ndarray, mask: Any, sparse: Any) -> tuple[dict, dict] | None:
    """``(metadata entry, {part: array})`` of one tensor, or ``None`` to keep it dense."""
    flat = np.ascontiguousarray(a).reshape(-1)
    n = flat.size
    support = flat.view(f"u{flat.dtype.itemsize}") != 0  # -0.0 and NaN are values
    m = None if mask is None or np.shape(mask) != a.shape else np.asarray(mask).reshape(-1) != 0
    if m is not None:
        support |= m
    k = int(np.count_nonzero(support))
    if sparse == "auto" and (n < MIN_SIZE or n - k <= THRESHOLD * n):
        return None
    entry: dict[str, Any] = {"shape": list(a.shape), "dtype": CODES[flat.dtype.str[1:]]}
    index = np.dtype(np.int32 if n <= np.iinfo(np.int32).max else np.int64)
    indices_bytes, bitmask_bytes = k * index.itemsize, -(-n // 8)
    within = n * flat.dtype.itemsize <= MAX_EXPANSION * k * (flat.dtype.itemsize + index.itemsize)
    if indices_bytes < bitmask_bytes and within:
        entry["encoding"], where = "indices", np.flatnonzero(support).astype(index)
    else:
        entry["encoding"], where = "bitmask", np.packbits(support)
    if m is not None and np.array_equal(support, m):
        entry["mask"] = True
    return entry, {"values": flat[support], entry["encoding"]: where}


# ----------------------------------------------------------------------------- reading
def shapes(header: Header) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """``{name: (dtype, shape)}`` of the file's tensors as a loader sees them: packed ones
    under their own names with their declared dense shapes (and ``"@mask/<name>"`` where the
    pattern is the mask), their parts left out."""
    packed = entries(header)
    out = {k: (e[0], e[1]) for k, e in header.layout.items() if not k.startswith(PREFIX)}
    for name, e in packed.items():
        out[name] = (e.dtype, e.shape)
        if e.mask:
            out[MASK_PREFIX + name] = (np.dtype(bool), e.shape)
    return out


def declared(header: Header) -> Header:
    """``header`` as the dense file would have it (:func:`shapes`, with byte ranges of the
    dense sizes), for the checks that compare a file with a model and bound it by its bytes
    (:mod:`wframe.saving.expected`); never read data through it (its stamp refuses)."""
    if not entries(header):
        return header
    layout, offset = {}, 0
    for name, (dtype, shape) in shapes(header).items():
        size = math.prod(shape) * dtype.itemsize
        layout[name] = (dtype, shape, offset, offset + size)
        offset += size
    return header._replace(layout=layout, checksums=None, parts=(), stamp=(-1,))


def read(
    header: Header, names: Iterable[str] | None = None, *, verify: bool = True
) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, dense array)`` for ``names`` (default: all of :func:`shapes`), each packed
    tensor read, checked and unpacked before the next is read.

    Raises:
      WeightsFileError: as :func:`entries` and the packed data's checks say, or a checksum.
      KeyError: a name the file does not hold.
    """
    packed = entries(header)
    names = list(shapes(header) if names is None else names)
    plain, wanted = [], {}  # wanted: {packed name: (dense wanted?, mask wanted?)}
    for name in names:
        base = name[len(MASK_PREFIX) :] if name.startswith(MASK_PREFIX) else None
        if name in packed:
            wanted[name] = (True, wanted.get(name, (False, False))[1])
        elif base in packed and packed[base].mask:
            wanted[base] = (wanted.get(base, (False, False))[0], True)
        else:
            plain.append(name)
    yield from read_tensors(header, plain, verify=verify)
    for name, (values, mask) in wanted.items():
        p = _read_packed(header, packed[name], verify)
        if values:
            yield name, p.dense()
        if mask:
            yield MASK_PREFIX + name, p._replace(part="mask").dense()


def unpack(
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str],
    path: str,
    *,
    names: Iterable[str] | None = None,
    lazy: bool = False,
) -> dict[str, Any]:
    """The tensors a loader sees, from those :func:`wframe.saving.reader.read_safetensors`
    read from ``path`` (with their ``metadata``): packed ones under their own names (and
    ``"@mask/<name>"`` where the pattern is the mask), checked, then unpacked, or with
    ``lazy`` as :class:`Packed` (the caller compares their shapes first); ``names``, given,
    keeps only those.

    Raises:
      WeightsFileError: as :func:`entries` and the packed data's checks say.
    """
    layout = {k: (a.dtype, tuple(a.shape), 0, a.nbytes) for k, a in tensors.items()}
    header = Header(path, 0, layout, dict(metadata))
    packed = entries(header)
    out: dict[str, Any] = {k: a for k, a in tensors.items() if not k.startswith(PREFIX)}
    for name, entry in packed.items():
        p = _checked(header, entry, tensors[entry.values_key], tensors[entry.where_key])
        out[name] = p
        if entry.mask:
            out[MASK_PREFIX + name] = p._replace(part="mask")
    if names is not None:
        out = {k: out[k] for k in names}
    return out if lazy else {k: dense(a) for k, a in out.items()}


def _read_packed(header: Header, entry: Entry, verify: bool) -> Packed:
    """The parts of one packed tensor, read (checksums verified) and checked."""
    parts = dict(read_tensors(header, [entry.values_key, entry.where_key], verify=verify))
    return _checked(header, entry, parts[entry.values_key], parts[entry.where_key])


def _checked(header: Header, entry: Entry, values: np.ndarray, where: np.ndarray) -> Packed:
    check_data(header, entry, values, where)
    return Packed(entry, values, where)
