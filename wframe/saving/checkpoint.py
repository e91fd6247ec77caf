"""Training checkpoints: everything ``fit`` needs to go on exactly where it stopped, in one file.

A checkpoint is one safetensors file (written atomically by
:func:`wframe.saving.io.write_safetensors`) holding the params, the layer state, the pruning masks
and every leaf of the optimizer state, with the model's life counters (``model.epochs``,
``model.steps``) and seed in its metadata. Those counters and the seed are the whole random position
of training: epoch ``e`` of a model's life always shuffles the same way and step ``s`` always draws
the same dropout masks, so a model that loads a checkpoint and fits on continues bit for bit as if
it had never stopped.

Tensor names extend :mod:`wframe.saving.io`'s weights files, so ``model.load_weights`` and
``wf.load_model`` read a checkpoint too (they ignore the optimizer state): params under their
flat names (``"dense_0/W"``), state under ``"@state/"``, masks under ``"@mask/"`` (booleans), and
the optimizer state under ``"@opt/"`` plus the leaf's path in the optimizer's own structure,
NamedTuple field names included (``"@opt/inner_state/0/mu/dense_0/W"`` for a named ``adam``),
and a ``mixed_float16`` model's dynamic loss scale under ``"@loss_scale/scale"`` and
``"@loss_scale/counter"``.
Mostly-zero float tensors (pruned kernels and their moments) are stored packed under
``"@sparse/"`` (:mod:`wframe.saving.sparse_pack`) and read back as the dense arrays they were.
Python numbers in the optimizer state are stored as 0-d arrays and come back as the type the
optimizer's ``init`` gives. The metadata holds ``format`` (``"wframe.checkpoint"``),
``format_version``, ``epochs``, ``steps``, ``seed``, ``optimizer`` (the name it was given by, or
empty), ``opt_state`` (``"present"``/``"absent"``), ``frozen`` (JSON list), ``dtype``,
``input_shape`` (JSON), ``backend`` and, where the model can be described, ``config`` (as
:mod:`wframe.saving.config` writes it).

:func:`save` and :func:`read` see a model through its public surface only; the model's
``load_checkpoint`` commits what :func:`read` returns.
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple, NoReturn

import numpy as np

from wframe import assigned
from wframe import optimizers as optimizers_mod
from wframe.optimizers.checks import check_opt_state, check_optimizer
from wframe.placeholders import shape_only
from wframe.saving import checkpoint_meta, compile_config, expected, io, shards, sparse_pack
from wframe.saving.config import ConfigError, model_config
from wframe.saving.errors import capped
from wframe.saving.values import check_values, short
from wframe.tree import flatten, split, tree_map
from wframe.types import TrainState

FORMAT = "wframe.checkpoint"
VERSION = "1"
PARAMS, STATE, MASKS, OPT = "", io.STATE_PREFIX, io.MASK_PREFIX, "@opt/"
SCALE = "@loss_scale/"
#: metadata entries :func:`save` writes itself (``extra`` may not use these names)
RESERVED = (
    "format",
    "format_version",
    "epochs",
    "steps",
    "seed",
    "optimizer",
    "opt_state",
    "frozen",
    "dtype",
    "input_shape",
    "backend",
    "config",
    "compile",
    "resume_epoch",
    "resume_batch",
    "kind",
    sparse_pack.KEY,
)


def save(
    model: Any,
    path: str | os.PathLike,
    *,
    resume_at: tuple[int, int] | None = None,
    extra: dict[str, str] | None = None,
    kind: str = "checkpoint",
    max_shard_size: Any = None,
    sparse: Any = "auto",
) -> None:
    """Write ``model``'s params, state, masks, optimizer state and counters to ``path``.

    Args:
      model: a built :class:`~wframe.Sequential`.
      path: the file to write (replaced atomically: a crash leaves the old file or the new one).
      resume_at: ``(epoch, batches done in it)`` where a ``fit`` interrupted now should go on
        (``BackupAndRestore`` within an epoch); loading the file sets ``model.resume_at``.
      extra: more string metadata to store (e.g. where a callback stood); read back by
        :func:`load`, which returns the whole metadata.
      kind: the metadata's ``kind``: ``"checkpoint"``, or ``"model"`` for
        :func:`~wframe.saving.model_file.save_model` (the same content, a config required).
      max_shard_size: as :func:`~wframe.saving.weights.save_weights`'s: shards and an index
        beside ``path`` when the data exceeds it.
      sparse: as :func:`~wframe.saving.weights.save_weights`'s: mostly-zero float kernels
        (and optimizer moments) stored packed (:mod:`wframe.saving.sparse_pack`).
    """
    model.require_built("checkpoint.save")
    sparse_pack.check_mode(sparse, "checkpoint.save")
    clash = sorted(set(extra or {}) & set(RESERVED))
    if clash:
        raise ValueError(f"checkpoint.save: extra may not use the reserved names {clash}")
    arrays = model.train_state  # one step's arrays, even while another thread trains
    host = model.backend.to_host((arrays.params, arrays.state, arrays.masks, arrays.opt_state))
    params, state, masks, opt_state = host
    masks = {name: m != 0 for name, m in (masks or {}).items()}  # booleans, as io writes them
    tensors: dict[str, np.ndarray] = {}
    for prefix, tree in ((PARAMS, params), (STATE, state), (MASKS, masks)):
        for name, a in flatten(tree):
            if name.startswith("@"):
                raise ValueError(
                    f"checkpoint.save: the name {name!r} starts with '@', kept for "
                    "the file's namespaces; rename the layer"
                )
            tensors[prefix + name] = np.asarray(a, order="C")
    for name, leaf in flatten(opt_state):
        a = np.asarray(leaf)  # Python numbers become 0-d arrays
        if a.dtype.kind not in "biuf":
            raise TypeError(
                f"checkpoint.save: optimizer state leaf '{name}' is a {type(leaf).__name__} "
                f"of dtype {a.dtype}; only numeric arrays and Python numbers can be stored"
            )
        tensors[OPT + name] = np.asarray(a, order="C")
    for name, a in flatten(model.backend.to_host(arrays.loss_scale)):
        tensors[SCALE + name] = np.asarray(a)
    metadata = {
        "format": FORMAT,
        "kind": kind,
        "format_version": VERSION,
        "epochs": str(model.epochs),
        "steps": str(model.steps),
        "seed": str(model.seed),
        "optimizer": model.optimizer_name or "",
        "opt_state": "absent" if model.opt_state is None else "present",
        "frozen": json.dumps(sorted(model.frozen)),
        "dtype": model.dtype,
        "input_shape": json.dumps(list(model.input_shape)),
        "backend": model.backend.name,
        **_config(model),
        "compile": compile_config.compile_config(model),
        **({} if resume_at is None else _resume_metadata(resume_at)),
        **(extra or {}),
    }
    limit = None if max_shard_size is None else shards.parse_size(max_shard_size)
    tensors, packed = sparse_pack.pack(tensors, sparse)
    shards.save(path, tensors, {**metadata, **packed}, limit)


def _config(model: Any) -> dict[str, str]:
    """``{"config": JSON}`` as weights files have it, or ``{}`` for a model with a layer that a
    file cannot describe (a checkpoint needs no config: it loads into a model built in code)."""
    try:
        return {"config": json.dumps(model_config(model))}
    except ConfigError:
        return {}


def _resume_metadata(resume_at: tuple[int, int]) -> dict[str, str]:
    epoch, batch = (int(v) for v in resume_at)
    return {"resume_epoch": str(epoch), "resume_batch": str(batch)}


class Restored(NamedTuple):
    """What :func:`read` found in a checkpoint, checked against the model: its arrays, frozen
    set, optimizer (and the name it was given by), counters, seed, where an interrupted
    ``fit`` goes on (``None``: at an epoch's start) and the file's metadata.

    Attributes:
      arrays: the :class:`~wframe.types.TrainState` (params, state, optimizer state, masks,
        loss scale) on the model's backend, for the model to commit.
      frozen: the flat names of the params frozen when it was saved.
      optimizer, optimizer_name: the model's optimizer, or the one the file names (rebuilt
        from its name) for a model without one; the name is ``None`` for an object.
      steps, epochs: the training counters (updates taken, epochs finished).
      seed: the seed that picks the next ``fit``'s shuffles and dropout masks.
      resume_at: ``(epoch, batches done in it)`` where an interrupted ``fit`` goes on, or
        ``None``.
      metadata: every string the file's header holds, ``extra`` included.
    """

    arrays: TrainState
    frozen: frozenset[str]
    optimizer: Any
    optimizer_name: str | None
    steps: int
    epochs: int
    seed: int
    resume_at: tuple[int, int] | None
    metadata: dict[str, str]


def load(model: Any, path: str | os.PathLike, *, allow_nonfinite: bool = False) -> dict[str, str]:
    """Restore the checkpoint at ``path`` into ``model`` (``model.load_checkpoint(path)``:
    everything checked first) and return the file's metadata.

    Args:
      model: the model to restore into (an unbuilt one is built for the recorded input shape).
      path: the checkpoint :func:`save` wrote.
      allow_nonfinite: accept NaN and inf values, as :func:`read`'s.
    """
    model.load_checkpoint(path, allow_nonfinite=allow_nonfinite)
    return io.read_metadata(path)


#: What a malformed file can make the checks and conversions of a load raise, turned into a
#: WeightsFileError naming the file (a shape too large to allocate included).
_CONTENT_ERRORS = (ValueError, KeyError, IndexError, TypeError, OverflowError, MemoryError)


def read(model: Any, path: str | os.PathLike, *, allow_nonfinite: bool = False) -> Restored:
    """What :func:`save` wrote, checked against ``model``, for ``model.load_checkpoint`` to
    commit (this changes nothing in the model but building an unbuilt one).

    The metadata is parsed strictly first (:mod:`wframe.saving.checkpoint_meta`: counters,
    seed, where an interrupted ``fit`` goes on, frozen set, input shape). Params, state and
    masks are checked against the model's (names, shapes, dtypes) and the optimizer state
    against the template ``model.optimizer.init(trainable params)``, leaf by leaf (the frozen
    set is the checkpoint's: the optimizer state is made for the others), and every value by
    :func:`wframe.saving.values.check_values` (no NaN or inf, no negative variance, step count
    or learning rate); every problem is reported in one
    :class:`~wframe.saving.io.WeightsFileError`. The arrays land on the model's backend,
    whichever backend saved them.

    Besides the arrays, the model gets the checkpoint's counters (``epochs``, ``steps``) and
    ``seed``, which pick the shuffles and dropout masks of the next ``fit``. An unbuilt model is
    built for the input shape the checkpoint records. A model without an optimizer gets the one
    the checkpoint names (an optimizer given by name); for an optimizer given as an object, call
    ``model.compile(optimizer=...)`` with the same optimizer first.

    Args:
      model: the model to check the file against.
      path: the checkpoint.
      allow_nonfinite: accept NaN and inf values (to debug a diverged run); the other value
        checks stay.

    Raises:
      wframe.saving.io.WeightsFileError: the file is not a valid checkpoint or does not fit
        the model (also for what a malformed file makes a conversion raise: a ``ValueError``,
        ``KeyError``, ``MemoryError``... becomes one, naming the file, the original chained).
      TypeError: ``allow_nonfinite`` is not a bool.
    """
    if not isinstance(allow_nonfinite, (bool, np.bool_)):
        raise TypeError(
            f"checkpoint: allow_nonfinite must be True or False, got {allow_nonfinite!r}"
        )
    path = os.fspath(path)
    try:
        return _read(model, path, bool(allow_nonfinite))
    except io.WeightsFileError:
        raise
    except _CONTENT_ERRORS as e:
        _fail(path, f"{type(e).__name__}: {short(str(e), 1000)}", label=model.label)


def _read(model: Any, path: str, allow_nonfinite: bool) -> Restored:
    tensors, meta = io.read_safetensors(path)
    tensors = sparse_pack.unpack(tensors, meta, path, lazy=True)  # unpacked once they fit
    if meta.get("format") != FORMAT:
        found = meta.get("format")
        _fail(
            path,
            f"it is not a wframe checkpoint (metadata format={short(repr(found))}, expected "
            f"{FORMAT!r}); a weights file loads with model.load_weights",
        )
    if meta.get("format_version") != VERSION:
        _fail(
            path,
            f"checkpoint format version {short(repr(meta.get('format_version')))}; this "
            f"wframe reads version {VERSION!r}",
        )
    fields, problems = checkpoint_meta.parse(meta)
    if fields is None:
        _fail(path, *problems)
    frozen = fields.frozen
    arrays, optimizer, name = _arrays(
        model, path, tensors, meta, frozen, allow_nonfinite=allow_nonfinite
    )
    return Restored(
        arrays,
        frozen,
        optimizer,
        name,
        fields.steps,
        fields.epochs,
        fields.seed,
        fields.resume_at,
        dict(meta),
    )


def _fail(path: str, *problems: str, label: str = "") -> NoReturn:
    heading = f"cannot load checkpoint {path!r}{f' into {label}' if label else ''}:"
    lines = [heading, *capped(problems)]  # (the error's ``problems`` keeps them all)
    raise io.WeightsFileError("\n  ".join(lines), path, problems)


def _arrays(
    model: Any,
    path: str,
    tensors: dict,
    meta: dict,
    frozen: frozenset,
    *,
    allow_nonfinite: bool = False,
) -> tuple:
    """``(arrays, optimizer, optimizer name)`` of the checkpoint, checked against ``model``."""
    if not model.built:
        try:
            shape = tuple(json.loads(meta["input_shape"]))
        except (KeyError, ValueError, TypeError) as e:
            _fail(path, f"the model is not built and the metadata has no valid input_shape ({e!r})")
        # The file's arrays must be those the model makes for its input shape (derived
        # without allocating, at most the file's data bytes) before anything is built.
        budget = sum(a.nbytes for a in tensors.values())
        found = {k: (a.dtype, tuple(a.shape)) for k, a in tensors.items()}
        heading = f"cannot load checkpoint {path!r} into {model.label}:"
        fix = "build the model in code for the input shape it was trained on, then load"
        expected.check_model(
            model, shape, found, path, budget_bytes=budget, heading=heading, fix=fix
        )
        with shape_only(budget):  # placeholders: the checkpoint's arrays replace them all
            model.build(shape)
    backend = model.backend
    fill = _Filler(tensors, backend, [], set(), allow_nonfinite=allow_nonfinite)
    params = fill(model.params, PARAMS, "param")
    state = fill(model.state, STATE, "state")
    stored = {k[len(MASKS) :]: a for k, a in tensors.items() if k.startswith(MASKS)}
    fill.used.update(MASKS + k for k in stored)
    stored = _unpacked_masks(stored, model.params, fill.problems)
    masks = None
    try:
        masks = assigned.check_masks(stored, model.params, backend) or None
    except (TypeError, ValueError) as e:
        fill.problems.append(str(e))
    optimizer, name, opt_state = _optimizer(model, path, meta, frozen, fill)
    loss_scale, scaler = None, model.policy.loss_scale
    if scaler is not None and any(k.startswith(SCALE) for k in tensors):
        loss_scale = fill(scaler.init(backend), SCALE, "loss scale")
    elif scaler is None:  # a mixed_float16 checkpoint resumed without loss scaling
        fill.used.update(k for k in tensors if k.startswith(SCALE))
    unexpected = sorted(k for k in tensors if k not in fill.used)
    if unexpected:
        fill.problems.append(f"unexpected tensors {unexpected}")
    if fill.problems:
        _fail(path, *fill.problems, label=model.label)
    if scaler is not None and loss_scale is None:  # a float32 model's checkpoint
        loss_scale = model.loss_scale
    return TrainState(params, state, opt_state, masks, loss_scale), optimizer, name


def _unpacked_masks(stored: dict, params: Any, problems: list[str]) -> dict:
    """``stored`` with its packed masks unpacked, each only once its declared shape is its
    param's (a mismatch is a problem, and nothing is allocated for it)."""
    flat, out = dict(flatten(params)), {}
    for name, a in stored.items():
        ref = flat.get(name)
        if isinstance(a, sparse_pack.Packed) and (ref is None or a.shape != tuple(ref.shape)):
            has = "no such param" if ref is None else f"a param of shape {tuple(ref.shape)}"
            problems.append(f"mask {MASKS + name!r} of shape {a.shape}: the model has {has}")
            continue
        out[name] = sparse_pack.dense(a)
    return out


def _optimizer(model: Any, path: str, meta: dict, frozen: frozenset, fill: _Filler) -> tuple:
    """``(optimizer, name, opt_state)``: the model's optimizer (or the one the file names)
    and the stored state checked against its ``init`` of the params not in ``frozen``."""
    optimizer, name, opt_state = model.optimizer, model.optimizer_name, None
    unknown = sorted(frozen - {n for n, _ in flatten(model.params)})
    if unknown:
        fill.problems.append(f"frozen params the model does not have: {unknown}")
        fill.used.update(k for k in fill.tensors if k.startswith(OPT))  # no template for them
        return optimizer, name, opt_state
    if meta.get("opt_state") != "present":
        return optimizer, name, opt_state
    if optimizer is None:
        name = meta.get("optimizer") or None
        if name is None:
            _fail(
                path,
                "it holds the state of an optimizer given as an object, which the "
                "file cannot rebuild: call model.compile(optimizer=...) with that "
                "optimizer before loading",
                label=model.label,
            )
        optimizer = optimizers_mod.get(name)
    check_optimizer(optimizer, model.backend)
    trainable = split(model.params, frozen)[0] if frozen else model.params
    template = optimizer.init(trainable)
    if OPT + "hyperparams/learning_rate" in fill.tensors and (
        optimizers_mod.find_injected_state(template) is None
    ):  # a named optimizer's state that a learning-rate callback made settable
        try:
            template = optimizers_mod.with_settable_learning_rate(optimizer, template, trainable)
        except TypeError:  # not this optimizer's: the mismatched keys are reported below
            pass
    check_opt_state(template, model.backend)
    return optimizer, name, fill(template, OPT, "optimizer state")


class _Filler(NamedTuple):
    """Stored arrays checked against template leaves (names, shapes, dtypes, then values:
    :func:`~wframe.saving.values.check_values`): every problem is collected, every tensor
    taken is marked used."""

    tensors: dict
    backend: Any
    problems: list[str]
    used: set[str]
    allow_nonfinite: bool = False

    def __call__(self, template: Any, prefix: str, what: str) -> Any:
        """``template`` with each leaf replaced by the stored ``prefix + its flat name``."""
        leaves = iter([self.take(prefix + name, ref, what) for name, ref in flatten(template)])
        return tree_map(lambda _: next(leaves), template)

    def take(self, name: str, ref: Any, what: str) -> Any:
        """The stored array ``name`` checked against the template leaf ``ref``."""
        a = self.tensors.get(name)
        if a is None:
            self.problems.append(f"missing {what} {name!r}")
            return ref
        self.used.add(name)
        if not hasattr(ref, "shape"):  # a Python number in an optimizer state
            if a.shape != ():
                self.problems.append(f"{what} {name!r}: expected a scalar, got shape {a.shape}")
                return ref
            return ref if self.refused(name, a) else type(ref)(a.item())
        want = (tuple(ref.shape), np.dtype(str(ref.dtype)))
        if (a.shape, a.dtype) != want:
            self.problems.append(
                f"{what} {name!r}: expected shape {want[0]} and dtype {want[1]}, "
                f"got shape {a.shape} and dtype {a.dtype}"
            )
            return ref
        a = sparse_pack.dense(a)  # a packed array is allocated only once its shape fits
        return ref if self.refused(name, a) else self.backend.asarray(a)

    def refused(self, name: str, a: np.ndarray) -> bool:
        """Whether the values of ``a`` are refused (the problems recorded)."""
        found = check_values(name, a, allow_nonfinite=self.allow_nonfinite)
        self.problems.extend(found)
        return bool(found)
