"""A model's weights on disk: :func:`save_weights` and :func:`load_weights` over the
safetensors files of :mod:`wframe.saving.io`.

Keys of a weights file: params under their flat names (``"block_0/dense_1/W"``), state under
``"@state/"`` + its flat name (``"@state/batch_norm_0/mean"``), pruning masks under ``"@mask/"``
+ the param's name (booleans). ``save_weights`` refuses names that start with ``@``, so the
namespaces cannot collide; other ``@`` prefixes are left to other wframe files (checkpoints) and
ignored by :func:`load_weights`. The metadata holds ``format`` (``"wframe"``),
``format_version``, ``wframe_version``, ``dtype``, ``backend`` and ``config`` (JSON). A load
checks everything against the model before it assigns anything.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from wframe.backends import to_numpy
from wframe.saving.config import ConfigError, model_config
from wframe.saving.io import (
    FORMAT_VERSION,
    MASK_PREFIX,
    STATE_PREFIX,
    file_error,
    read_safetensors,
    write_safetensors,
)
from wframe.tree import flatten, map_at


def save_weights(model: Any, path: str | os.PathLike) -> None:
    """Write a built model's params, state and masks to a safetensors file, atomically.

    Keys follow the module's scheme (``"dense_0/W"``, ``"@state/..."``, ``"@mask/..."``); the
    metadata records the format, wframe's version, the model's dtype and its config.
    """
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
    write_safetensors(path, tensors, _metadata(model))


def _metadata(model: Any) -> dict[str, str]:
    try:
        config = model_config(model)
    except ConfigError:  # weights save even when the architecture cannot (user code)
        config = {}
    return {
        "format": "wframe",
        "format_version": FORMAT_VERSION,
        "wframe_version": _version(),
        "dtype": model.dtype,
        "backend": model.backend.name,
        "config": json.dumps(config),
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
) -> None:
    """Load a weights file into a built model by name, every check passing before any change.

    Args:
      model: a built :class:`~wframe.Sequential`.
      path: a file written by :func:`save_weights` (or any safetensors file with fitting names).
      strict: refuse names the model has and the file lacks, and the reverse; ``False`` loads
        the names both have and keeps the model's values for the rest.
      skip_mismatch: skip (with a warning) arrays whose shapes differ instead of refusing.
      rename: ``{"old": "new"}`` or a callable applied to the file's names (without the
        ``@state/``/``@mask/`` prefix) first; a dict key also renames every name under it
        (``{"block_0": "block_1"}``), and must match some name in the file.
      dtype: cast the file's floating arrays to this dtype, which must be the model's;
        without it a float64 file does not load into a float32 model (or the reverse).
      allow_nonfinite: load NaN and inf values instead of refusing them.

    Masks in the file replace the model's (with ``strict=False``, the model keeps its masks of
    params the file has none for); a file without masks leaves the model's masks alone.

    Raises:
      WeightsFileError: listing every problem with the file or its fit to the model; the
        model is then unchanged.
    """
    flags = {"strict": strict, "skip_mismatch": skip_mismatch, "allow_nonfinite": allow_nonfinite}
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
    tensors, metadata = read_safetensors(path)
    plan = _plan(
        model,
        tensors,
        metadata,
        path,
        strict=bool(strict),
        dtype=dtype,
        skip=bool(skip_mismatch),
        rename=rename,
        finite=not allow_nonfinite,
    )
    # Everything is on the backend before the first assignment, so only the setters' own
    # checks can fail after it; they undo what was done.
    put = {
        space: {n: _const(model.backend.asarray(a)) for n, a in plan[space].items()}
        for space in ("params", "state")
    }
    old = (model.params, model.state, model.masks)
    try:
        model.params = map_at(model.params, put["params"])
        model.state = map_at(model.state, put["state"])
        if plan["masks"] is not None:
            model.masks = plan["masks"]
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


def _plan(model, tensors, metadata, path, *, strict, skip, rename, dtype, finite) -> dict:
    """The checked host arrays to load, ``{"params": ..., "state": ..., "masks": ...}``."""
    problems: list[str] = []
    fixes: set[str] = set()
    version = metadata.get("format_version", FORMAT_VERSION)
    if metadata.get("format") == "wframe" and version != FORMAT_VERSION:
        problems.append(
            f"the file has wframe format version {version!r}; this wframe reads "
            f"version {FORMAT_VERSION!r} (upgrade wframe)"
        )
    spaces = _spaces(tensors)
    if rename is not None:
        spaces = _renamed(spaces, rename, list(tensors), problems)
    params = dict(flatten(model.params))
    have = {"params": params, "state": dict(flatten(model.state)), "masks": params}
    out: dict[str, Any] = {"params": {}, "state": {}, "masks": {}}
    skipped: list[str] = []
    check = _Check(model.dtype, dtype, finite, problems, fixes)
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
            a, ref, key = file[name], ours[name], prefix + name
            if tuple(a.shape) != tuple(ref.shape):
                line = f"size mismatch for {key}: file has {a.shape}, model has {tuple(ref.shape)}"
                (skipped if skip else problems).append(line)
                if not skip:
                    fixes.add("skip_mismatch=True skips arrays whose shapes differ, with a warning")
                continue
            a = check.mask(a, key) if space == "masks" else check.values(a, ref, key)
            if a is not None:
                out[space][name] = a
    if not problems and not any(out.values()):
        problems.append(
            f"no array to load: the file's names {_names(list(tensors))} match none "
            f"of the model's {_names(list(have['params']))}"
        )
    if problems:
        raise file_error(f"cannot load {path!r} into {model.label}:", path, problems, fixes)
    if skipped:
        warnings.warn(
            "load_weights skipped arrays whose shapes differ (skip_mismatch=True):\n  "
            + "\n  ".join(skipped),
            UserWarning,
            stacklevel=3,
        )
    masks = None
    if out["masks"]:
        kept = {} if strict else {n: m for n, m in (model.masks or {}).items()}
        masks = {**kept, **out["masks"]}
    return {"params": out["params"], "state": out["state"], "masks": masks}


def _spaces(tensors: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """The file's arrays by namespace, names without their prefix (other ``@`` namespaces
    belong to other file kinds and are left out)."""
    spaces: dict[str, dict[str, np.ndarray]] = {"params": {}, "state": {}, "masks": {}}
    for key, a in tensors.items():
        if key.startswith(STATE_PREFIX):
            spaces["state"][key[len(STATE_PREFIX) :]] = a
        elif key.startswith(MASK_PREFIX):
            spaces["masks"][key[len(MASK_PREFIX) :]] = a
        elif not key.startswith("@"):
            spaces["params"][key] = a
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
        if self.finite and a.dtype.kind in "fc" and not np.isfinite(a).all():
            bad = np.argwhere(~np.isfinite(a))
            at = tuple(int(i) for i in bad[0])
            self.problems.append(
                f"non-finite values in {key}: {len(bad)} NaN or inf (first at index {at}: {a[at]})"
            )
            self.fixes.add("allow_nonfinite=True loads NaN and inf values")
            return None
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


def _const(a: Any) -> Callable[[Any], Any]:
    return lambda _: a


def _names(names: list[str], limit: int = 20) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{names[:limit]}{more}"
