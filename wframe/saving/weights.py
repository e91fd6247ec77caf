"""A model's weights on disk: :func:`save_weights` and :func:`load_weights` over the
safetensors files of :mod:`wframe.saving.io`.

Keys of a weights file: params under their flat names (``"block_0/dense_1/W"``), state under
``"@state/"`` + its flat name (``"@state/batch_norm_0/mean"``), pruning masks under ``"@mask/"``
+ the param's name (booleans). ``save_weights`` refuses names that start with ``@``, so the
namespaces cannot collide; other ``@`` prefixes are left to other wframe files (checkpoints) and
ignored by :func:`load_weights`. Mostly-zero float kernels are stored packed under ``"@sparse/"``
(:mod:`wframe.saving.sparse_pack`) and loaded as the dense arrays they were. The metadata holds
``format`` (``"wframe"``), ``kind`` (``"weights"``), ``format_version``, ``wframe_version``,
``dtype`` and ``backend``, ``sparse`` where tensors are packed, and the tensors' checksums
(:mod:`wframe.saving.integrity`); no architecture (a whole model is
:func:`wframe.saving.model_file.save_model`'s file). Files of older wframe versions held the
config too, and still load everywhere.

A load reads the header first and checks the model against it (names, shapes, dtypes) before
reading any data; then it streams each array straight into a new array, verifies its checksum
and values and moves it to the backend, one at a time (no second host copy of the file); the
model's arrays are replaced only once every array has passed. A model larger than
``max_shard_size`` is saved as shards plus an index (:mod:`wframe.saving.shards`).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from wframe.backends import to_numpy
from wframe.saving import shards, sparse_pack
from wframe.saving.io import (
    FORMAT_VERSION,
    MASK_PREFIX,
    STATE_PREFIX,
    Header,
    file_error,
    read_header,
)
from wframe.saving.values import check_values
from wframe.tree import flatten, map_at


def save_weights(
    model: Any, path: str | os.PathLike, *, max_shard_size: Any = None, sparse: Any = "auto"
) -> None:
    """Write a built model's params, state and masks to a safetensors file, atomically.

    Keys follow the module's scheme (``"dense_0/W"``, ``"@state/..."``, ``"@mask/..."``); the
    metadata records the format, ``kind="weights"``, wframe's version, the model's dtype and
    the tensors' checksums; no architecture (that is ``wf.save_model``'s file).

    Args:
      model: a built model.
      path: the file to write (``"m.safetensors"``).
      max_shard_size: ``None`` (one file), or bytes as an int or a string (``"2GB"``,
        ``"500MB"``): when the data exceeds it, shards ``m-00001-of-00003.safetensors`` ...
        and the index ``m.safetensors.index.json`` are written beside ``path`` (the Hugging
        Face layout; every wframe loader reads the index, or ``path`` itself).
      sparse: ``"auto"`` stores float kernels whose zeros (pruned or not) are more than half
        of them packed: their nonzero values and a bitmask or indices, restored bit for bit
        (masks too) by every wframe loader (:mod:`wframe.saving.sparse_pack`); ``True``
        packs every float kernel, ``False`` none.

    Raises:
      ValueError: a name starting with ``@`` or repeated, a bad ``max_shard_size`` or
        ``sparse``.
      OSError: the target cannot be written (see :func:`wframe.saving.io.write_safetensors`).
    """
    limit = None if max_shard_size is None else shards.parse_size(max_shard_size)
    sparse_pack.check_mode(sparse, "save_weights")
    tensors: dict[str, np.ndarray] = {}
    masks = {name: m != 0 for name, m in (model.masks or {}).items()}
    trees = (("", model.params), (STATE_PREFIX, model.state), (MASK_PREFIX, masks))
    for prefix, tree in trees:
        for name, a in flatten(tree):
            if name.startswith("@") or prefix + name in tensors:
                why = "starts with '@', kept for" if name.startswith("@") else "repeats a name in"
                raise ValueError(
                    f"save_weights: the name {name!r} {why} the file's keys; rename the layer"
                )
            tensors[prefix + name] = np.asarray(to_numpy(a))
    tensors, packed = sparse_pack.pack(tensors, sparse)
    shards.save(path, tensors, {**_metadata(model), **packed}, limit)


def _metadata(model: Any) -> dict[str, str]:
    """A weights file's metadata: no architecture (that is :func:`save_model`'s), so that the
    file says what it is: ``kind`` ``"weights"``."""
    return {
        "format": "wframe",
        "kind": "weights",
        "format_version": FORMAT_VERSION,
        "wframe_version": _version(),
        "dtype": model.dtype,
        "backend": model.backend.name,
    }


def _version() -> str:
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        return importlib.metadata.version("wframe")
    return "unknown"


def load_weights(
    model: Any,
    path: str | os.PathLike,
    *,
    strict: bool = True,
    skip_mismatch: bool = False,
    rename: Mapping[str, str] | Callable[[str], str] | None = None,
    dtype: Any = None,
    allow_nonfinite: bool = False,
    verify: bool = True,
) -> None:
    """Load a weights file into a built model by name, every check passing before any change.

    Args:
      model: a built :class:`~wframe.Sequential`.
      path: a file written by :func:`save_weights` (or any safetensors file with fitting
        names), or a shard index (or the ``path`` a sharded save was given).
      strict: refuse names the model has and the file lacks, and the reverse; ``False`` loads
        the names both have and keeps the model's values for the rest.
      skip_mismatch: skip (with a warning) arrays whose shapes differ instead of refusing.
      rename: ``{"old": "new"}`` or a callable applied to the file's names (without the
        ``@state/``/``@mask/`` prefix) first; a dict key also renames every name under it
        (``{"block_0": "block_1"}``), and must match some name in the file.
      dtype: cast the file's floating arrays to this dtype, which must be the model's;
        without it a float64 file does not load into a float32 model (or the reverse).
      allow_nonfinite: load NaN and inf values instead of refusing them.
      verify: check each array against the checksum the file records (a file without
        checksums, written by another tool, loads unchecked); ``False`` skips the check.

    Masks in the file replace the model's (with ``strict=False``, the model keeps its masks of
    params the file has none for); a file without masks leaves the model's masks alone.

    Raises:
      WeightsFileError: listing every problem with the file or its fit to the model; the
        model is then unchanged.
    """
    flags = {
        "strict": strict,
        "skip_mismatch": skip_mismatch,
        "allow_nonfinite": allow_nonfinite,
        "verify": verify,
    }
    _check_options(flags, rename)
    if not model.built:
        raise RuntimeError(
            f"load_weights: {model.label} has no params yet; build the model first "
            "(model.build((None, features)) with the input shape it was saved with) or use "
            "wf.load_model(path)"
        )
    if dtype is not None and np.dtype(dtype).name != model.dtype:
        raise ValueError(
            f"load_weights: dtype={dtype!r} must be the model's dtype {model.dtype!r} (the "
            "file's floating arrays are cast to it); for another dtype build a model with it"
        )
    path = os.fspath(path)
    header = read_header(path, verify=bool(verify))
    check = _Check(model.dtype, dtype, not allow_nonfinite, [], set())
    plan = _plan(model, header, check, strict=bool(strict), skip=bool(skip_mismatch), rename=rename)
    put = _stream(model, header, plan, path, check, strict=bool(strict), verify=bool(verify))
    if plan.skipped:
        warnings.warn(
            "load_weights skipped arrays whose shapes differ (skip_mismatch=True):\n  "
            + "\n  ".join(plan.skipped),
            UserWarning,
            stacklevel=2,
        )
    old = (model.params, model.state, model.masks)
    try:
        model.params = map_at(model.params, put["params"])
        model.state = map_at(model.state, put["state"])
        if put["masks"] is not None:
            model.masks = put["masks"]
    except BaseException:
        model.params, model.state, model.masks = old
        raise


def _check_options(flags: dict[str, Any], rename: Any) -> None:
    for flag, value in flags.items():
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"load_weights: {flag} must be True or False, got {value!r}")
    if isinstance(rename, Mapping):
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in rename.items()):
            raise TypeError(f"load_weights: rename must map str to str, got {rename!r}")
    elif rename is not None and not callable(rename):
        raise TypeError(f"load_weights: rename must be a dict or a callable, got {rename!r}")


class _Spec(NamedTuple):
    """A file array as its header describes it: its key in the file, dtype and shape."""

    key: str
    dtype: np.dtype
    shape: tuple[int, ...]


class _Plan(NamedTuple):
    """Which file array goes where: ``{file key: (space, name, model array, key shown)}``,
    and the lines of arrays skipped for their shape."""

    wanted: dict[str, tuple[str, str, Any, str]]
    skipped: list[str]


def _plan(model, header: Header, check: _Check, *, strict, skip, rename) -> _Plan:
    """The file's arrays matched with the model's from the header alone (names, shapes,
    dtypes): every mismatch is refused here, before any data is read."""
    problems, fixes, metadata = check.problems, check.fixes, header.metadata
    version = metadata.get("format_version", FORMAT_VERSION)
    if metadata.get("format") == "wframe" and version != FORMAT_VERSION:
        problems.append(
            f"the file has wframe format version {version!r}; this wframe reads "
            f"version {FORMAT_VERSION!r} (upgrade wframe)"
        )
    spaces = _spaces(header)
    if rename is not None:
        spaces = _renamed(spaces, rename, list(header.layout), problems)
    params = dict(flatten(model.params))
    have = {"params": params, "state": dict(flatten(model.state)), "masks": params}
    plan = _Plan({}, [])
    for space, prefix in (("params", ""), ("state", STATE_PREFIX), ("masks", MASK_PREFIX)):
        file, ours = spaces[space], have[space]
        missing = [] if space == "masks" else [prefix + n for n in ours if n not in file]
        unexpected = [prefix + n for n in file if n not in ours]
        if strict and (missing or unexpected):
            problems += [
                f"{what} in the file: {_names(names)}"
                for what, names in (("missing", missing), ("unexpected", unexpected))
                if names
            ]
            fixes.add("strict=False loads the names both have and keeps the others' values")
            if missing and unexpected:
                fixes.add("rename={'name in file': 'name in model'} matches renamed layers")
        for name in (n for n in file if n in ours):
            spec, ref, key = file[name], ours[name], prefix + name
            if spec.shape != tuple(ref.shape):
                line = f"size mismatch for {key}: file has {spec.shape}, model has {ref.shape}"
                (plan.skipped if skip else problems).append(line)
                if not skip:
                    fixes.add("skip_mismatch=True skips arrays whose shapes differ, with a warning")
            elif space == "masks" or check.dtype_ok(spec.dtype, ref, key):
                plan.wanted[spec.key] = (space, name, ref, key)
    if not problems and not plan.wanted:
        problems.append(
            f"no array to load: the file's names {_names(list(header.layout))} match none "
            f"of the model's {_names(list(have['params']))}"
        )
    if problems:
        raise file_error(
            f"cannot load {header.path!r} into {model.label}:", header.path, problems, fixes
        )
    return plan


def _stream(model, header: Header, plan: _Plan, path: str, check: _Check, *, strict, verify):
    """``{"params": {name: setter}, "state": ..., "masks": host masks or None}``: each array
    read straight into a new array, verified, checked and moved to the backend before the
    next is read (so at most one host copy at a time beyond the backend's)."""
    out: dict[str, Any] = {"params": {}, "state": {}, "masks": {}}
    for file_key, a in sparse_pack.read(header, plan.wanted, verify=verify):
        space, name, ref, key = plan.wanted[file_key]
        if space == "masks":
            out["masks"][name] = check.mask(a, key)
            continue
        a = check.values(a, ref, key)
        if a is not None:
            out[space][name] = _const(model.backend.asarray(a))
        del a  # the host copy goes before the next array is read (a backend copied it)
    if check.problems:
        raise file_error(
            f"cannot load {path!r} into {model.label}:", path, check.problems, check.fixes
        )
    masks = None
    if out["masks"]:
        kept = {} if strict else {n: m for n, m in (model.masks or {}).items()}
        masks = {**kept, **out["masks"]}
    return {"params": out["params"], "state": out["state"], "masks": masks}


def _spaces(header: Header) -> dict[str, dict[str, _Spec]]:
    """The file's arrays by namespace, names without their prefix (other ``@`` namespaces
    belong to other file kinds and are left out)."""
    spaces: dict[str, dict[str, _Spec]] = {"params": {}, "state": {}, "masks": {}}
    for key, (dtype, shape) in sparse_pack.shapes(header).items():  # packed: as declared
        if key.startswith(STATE_PREFIX):
            spaces["state"][key[len(STATE_PREFIX) :]] = _Spec(key, dtype, shape)
        elif key.startswith(MASK_PREFIX):
            spaces["masks"][key[len(MASK_PREFIX) :]] = _Spec(key, dtype, shape)
        elif not key.startswith("@"):
            spaces["params"][key] = _Spec(key, dtype, shape)
    return spaces


class _Check(NamedTuple):
    """Checks of one file array against the model's (its shape already matches): each
    returns the array to load, or ``None`` after recording the problem and its fix."""

    model_dtype: str
    dtype: Any  # load_weights(dtype=...): floating arrays cast to it
    finite: bool
    problems: list[str]
    fixes: set[str]

    def mask(self, a: np.ndarray, key: str) -> np.ndarray | None:
        if not np.isin(a, (0, 1)).all():
            self.problems.append(f"{key} holds values other than 0 and 1")
        return a

    def dtype_ok(self, dtype: np.dtype, ref: Any, key: str) -> bool:
        """Whether a file array of ``dtype`` can load into ``ref`` (the same dtype, or both
        floating with ``dtype=`` given), from the header alone."""
        want = np.dtype(str(ref.dtype))
        if dtype == want or self.dtype is not None and dtype.kind == want.kind == "f":
            return True
        self.problems.append(f"dtype mismatch for {key}: file has {dtype}, model has {want}")
        if dtype.kind == want.kind == "f":
            self.fixes.add(f"dtype={self.model_dtype!r} casts the file's floating arrays")
        return False

    def values(self, a: np.ndarray, ref: Any, key: str) -> np.ndarray | None:
        want = np.dtype(str(ref.dtype))
        if a.dtype != want and self.dtype is not None and a.dtype.kind == want.kind == "f":
            with np.errstate(over="ignore"):  # overflow to inf is reported just below
                a = a.astype(want)
        if a.dtype != want:
            self.problems.append(f"dtype mismatch for {key}: file has {a.dtype}, model has {want}")
            if a.dtype.kind == want.kind == "f":
                self.fixes.add(f"dtype={self.model_dtype!r} casts the file's floating arrays")
            return None
        if self.finite and a.dtype.kind in "fc" and not _all_finite(a):
            bad = np.argwhere(~np.isfinite(a))
            at = tuple(int(i) for i in bad[0])
            self.problems.append(
                f"non-finite values in {key}: {len(bad)} NaN or inf (first at index {at}: {a[at]})"
            )
            self.fixes.add("allow_nonfinite=True loads NaN and inf values")
            return None
        self.problems.extend(check_values(key, a, allow_nonfinite=True))  # negative variances
        return a


def _renamed(spaces: dict, rename: Any, keys: list[str], problems: list[str]) -> dict:
    """``spaces`` with ``rename`` applied to every name; unused dict keys are problems."""
    used: set[str] = set()

    def new_name(name: str) -> str:
        if not isinstance(rename, Mapping):
            got = rename(name)
            if not isinstance(got, str):
                raise TypeError(f"load_weights: rename({name!r}) must return a str, got {got!r}")
            return got
        parts = name.split("/")
        heads = ("/".join(parts[:k]) for k in range(len(parts), 0, -1))  # longest first
        head = next((h for h in heads if h in rename), None)
        if head is None:
            return name
        used.add(head)
        return rename[head] + name[len(head) :]

    out: dict[str, dict] = {space: {} for space in spaces}
    for space, file in spaces.items():
        for name, a in file.items():
            new = new_name(name)
            if new in out[space]:
                problems.append(f"rename maps two names of the file to {new!r}")
            out[space][new] = a
    unused = [k for k in rename if k not in used] if isinstance(rename, Mapping) else []
    if unused:
        problems.append(
            f"rename names {_names(unused)}, which are not in the file; its names "
            f"are {_names(keys)}"
        )
    return out


def _all_finite(a: np.ndarray, chunk: int = 1 << 18) -> bool:
    """``np.isfinite(a).all()`` without a boolean array the size of ``a``."""
    flat = a.reshape(-1)
    return all(np.isfinite(flat[i : i + chunk]).all() for i in range(0, flat.size, chunk))


def _const(a: Any) -> Callable[[Any], Any]:
    return lambda _: a


def _names(names: list[str], limit: int = 20) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{names[:limit]}{more}"
