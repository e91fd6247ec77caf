"""What a model config (or a model and an input shape) will hold, derived without allocating:
the name, dtype and shape of every param and state array, checked against a file's header
before a loader trusts the file.

A loader reads the header (:func:`wframe.saving.io.read_header`), bounds the config against it
(:func:`file_config`: at most :func:`max_layers` layers for the file's tensor count), runs the
model's ``init`` under :func:`wframe.placeholders.shape_only` with the file's data bytes as the
budget (every initializer returns a zero-memory placeholder, and the first array past the
budget stops it), and compares the arrays it would make with the file's
(:func:`check_model`). Only a file that passes is built and read: a 3 kB file whose config
declares 27 GB of weights, or thousands of layers, is refused in milliseconds, and a model is
never refused because an input dimension (a 64x64 image, 500 time steps) is larger than its
weights.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from wframe.placeholders import BudgetExceeded, is_placeholder, shape_only
from wframe.saving import io
from wframe.saving.config import ConfigError, model_from_config
from wframe.tree import flatten

__all__ = [
    "LAYERS_PER_TENSOR",
    "MAX_LISTED",
    "check_model",
    "check_config",
    "check_filled",
    "data_bytes",
    "decode",
    "expected_arrays",
    "file_config",
    "max_layers",
    "mismatches",
]

#: A config may describe at most ``LAYERS_PER_TENSOR * tensors + FREE_LAYERS`` layers.
LAYERS_PER_TENSOR, FREE_LAYERS = 8, 64
#: Mismatches listed in an error (the rest are counted).
MAX_LISTED = 10
_BUILD_ERRORS = (TypeError, ValueError, KeyError, IndexError, OverflowError, RecursionError)
_REFIT = (
    "the file's config and arrays disagree (a damaged or edited file): save the model again "
    "with wf.save_model, or build it in code and load what fits with "
    "model.load_weights(path, strict=False)"
)

Expected = dict[str, tuple[np.dtype, tuple[int, ...]]]


def max_layers(tensors: int) -> int:
    """The most layers (``{"class": ...}`` objects and graph nodes) a config may describe for
    a file of ``tensors`` tensors: ``8 * tensors + 64``.

    Every layer with weights has at least one tensor in the file (Dense 2, BatchNorm 4, LSTM
    3), so a file of ``k`` tensors describes at most ``k`` of them; the parameterless layers
    around them (Activation, Dropout, Flatten, pooling, Reshape, merges), regularizer objects,
    nested chains and the calls of a graph come on top: 8 per tensor is several times what
    real architectures use (a ResNet-50 graph has about one call per tensor), and 64 more
    leave room for a front of parameterless layers.
    """
    return LAYERS_PER_TENSOR * int(tensors) + FREE_LAYERS


def data_bytes(header: io.Header) -> int:
    """The bytes of tensor data a file holds (what its params and state can take at most)."""
    return sum(end - begin for _, _, begin, end in header.layout.values())


def file_config(header: io.Header) -> dict[str, Any] | None:
    """The model config in a file's metadata (``None``: it has none), parsed and bounded
    before anything is decoded.

    Raises:
      WeightsFileError: the config is not JSON, or describes more layers than
        :func:`max_layers` allows for the file's tensors.
    """
    raw = header.metadata.get("config")
    if raw is None:
        return None
    count = [0]

    def counted(pairs: list) -> dict:
        out = dict(pairs)
        nodes = out.get("nodes")
        count[0] += ("class" in out) + (len(nodes) if isinstance(nodes, list) else 0)
        return out

    try:
        config = json.loads(raw, object_pairs_hook=counted)
    except (ValueError, RecursionError) as e:
        raise _error(header.path, f"the model config is not valid JSON: {e}") from None
    tensors, limit = len(header.layout), max_layers(len(header.layout))
    if count[0] > limit:
        raise _error(
            header.path,
            f"the model config describes {count[0]} layers and graph calls, more than the "
            f"{limit} that a file of {tensors} tensors can hold ({LAYERS_PER_TENSOR} per tensor "
            f"+ {FREE_LAYERS}); it does not describe these weights",
            _REFIT,
        )
    return config


def expected_arrays(model: Any, input_shape: Any = None, *, budget_bytes: int | None = None):
    """``{flat name: (dtype, shape)}`` of the params and (under ``"@state/"``) the state that
    ``model`` holds, or would hold once built for ``input_shape``, without allocating them.

    Args:
      model: a model (``wf.Sequential``, a graph ``wf.Model``), built or not.
      input_shape: the shape to build for (``(None, 64, 64, 3)``); ``None`` for a built model.
      budget_bytes: raise :class:`~wframe.placeholders.BudgetExceeded` as soon as the arrays
        take more than this many bytes.

    Raises:
      ValueError, TypeError: the model does not fit ``input_shape`` (its layers say why).
      BudgetExceeded: the arrays pass ``budget_bytes``.
    """
    if model.built:
        if input_shape is not None and model.build_shape(_tuples(input_shape)) != model.input_shape:
            raise ValueError(
                f"{model.label} is built for inputs {model.input_shape}, got {input_shape}"
            )
        params, state = model.params, model.state
    else:
        if input_shape is None:
            raise ValueError(f"{model.label} is not built: pass the input_shape to build for")
        with shape_only(budget_bytes):
            shape = model.build_shape(_tuples(input_shape))
            params, state, _ = model.init(model.seed, shape, dtype=model.dtype)
    out: Expected = {}
    for prefix, tree in (("", params), (io.STATE_PREFIX, state)):
        for name, a in flatten(tree):
            out[prefix + name] = (np.dtype(str(a.dtype)), tuple(int(d) for d in a.shape))
    if budget_bytes is not None:  # also counts what no initializer made (a built model's)
        total = 0
        for dt, shape in out.values():
            total += _nbytes(shape, dt)
            if total > budget_bytes:
                raise BudgetExceeded(total, budget_bytes, shape, dt)
    return out


def _nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    n = dtype.itemsize
    for d in shape:
        n *= d
    return n


def mismatches(expected: Expected, found: Expected, limit: int = MAX_LISTED) -> list[str]:
    """What differs between the arrays a model makes and a file's params and ``@state/``
    entries (other ``@`` namespaces, masks and optimizer state, are not compared), one line
    each, the first ``limit`` and then how many more."""
    ours = {
        k: v for k, v in found.items() if not k.startswith("@") or k.startswith(io.STATE_PREFIX)
    }
    lines = []
    for name, (dt, shape) in expected.items():
        got = ours.get(name)
        if got is None:
            lines.append(f"{name}: the model makes {_what(dt, shape)}, the file has no such array")
        elif (np.dtype(got[0]), tuple(got[1])) != (dt, shape):
            lines.append(
                f"{name}: the model makes {_what(dt, shape)}, the file holds {_what(*got)}"
            )
    lines += [
        f"{name}: the file holds {_what(*ours[name])}, which the model does not make"
        for name in ours
        if name not in expected
    ]
    if len(lines) > limit:
        lines = [*lines[:limit], f"... and {len(lines) - limit} more"]
    return lines


def check_model(
    model: Any,
    input_shape: Any,
    found: Expected,
    path: str,
    *,
    budget_bytes: int,
    heading: str | None = None,
    fix: str = _REFIT,
) -> None:
    """Refuse a file whose arrays are not those ``model`` makes for ``input_shape``, before
    anything is allocated.

    Args:
      model: the model to fill (unbuilt: its arrays are derived under ``shape_only``).
      input_shape: the shape the file says the model was built for.
      found: the file's ``{name: (dtype, shape)}`` (``io.read_header(path).shapes()``).
      path: the file, for the message.
      budget_bytes: the file's data bytes: a model asking for more cannot be its model.
      heading: the error's first line (default: ``cannot load {path!r}:``).
      fix: what the user can do, the message's last line.

    Raises:
      WeightsFileError: the model cannot be built for ``input_shape``, its arrays take more
        than ``budget_bytes``, or they differ from the file's (the first :data:`MAX_LISTED`
        differences named).
    """
    heading = heading or f"cannot load {path!r}:"
    try:
        want = expected_arrays(model, input_shape, budget_bytes=budget_bytes)
    except BudgetExceeded as e:
        raise io.file_error(heading, path, [_over(e)], [fix]) from None
    except _BUILD_ERRORS as e:
        problem = f"the model cannot be built for input_shape {input_shape}: {e}"
        raise io.file_error(heading, path, [problem], [fix]) from None
    problems = mismatches(want, found)
    if problems:
        raise io.file_error(heading, path, ["its arrays are not the model's:", *problems], [fix])


def check_config(config: dict[str, Any], header: io.Header) -> Any:
    """Decode ``config`` (a whole-model config from ``header``'s file) under ``shape_only``
    and check the model it describes against the file: returns the checked build shape.

    Raises:
      WeightsFileError: the config is malformed, has no input_shape, names an unregistered
        class, or describes arrays other than the file's.
    """
    path, budget = header.path, data_bytes(header)
    shape = config.get("input_shape") if isinstance(config, dict) else None
    if shape is not None and not isinstance(shape, list):
        raise _error(path, f"cannot rebuild the model: input_shape must be a list, got {shape!r}")
    heading = f"cannot load {path!r}:"
    with shape_only(budget):  # a graph builds as it is decoded: placeholders, budgeted
        try:
            model = decode(config, path)
        except BudgetExceeded as e:
            raise io.file_error(heading, path, [_over(e)], [_REFIT]) from None
        if shape is None and not model.built:
            raise _error(path, "the model config has no input_shape, so the model cannot be built")
        check_model(model, shape, header.shapes(), path, budget_bytes=budget, heading=heading)
    return _tuples(shape) if shape is not None else model.input_shape


def decode(config: Any, path: str) -> Any:
    """The model ``config`` describes, unbuilt but for graphs (they build as they are made);
    its ``input_shape`` is left for the caller.

    Raises:
      WeightsFileError: naming ``path`` and what in the config is wrong.
    """
    if isinstance(config, dict):
        config = {k: v for k, v in config.items() if k != "input_shape"}
    try:
        return model_from_config(config)
    except (ConfigError, *_BUILD_ERRORS) as e:
        raise _error(path, f"cannot rebuild the model from its config: {e}") from e


def check_filled(model: Any, path: str) -> None:
    """Raise if a placeholder is left in ``model`` after a load (a loader's own bug: every
    array must have come from the file)."""
    left = [
        prefix + name
        for prefix, tree in (("", model.params), (io.STATE_PREFIX, model.state))
        for name, a in flatten(tree)
        if is_placeholder(a)
    ]
    if left:
        raise _error(path, f"the file gave no values for {left[:MAX_LISTED]}")


def _over(e: BudgetExceeded) -> str:
    return (
        f"the model would hold more than {e.budget} bytes of arrays ({e.total} bytes by the "
        f"array of shape {e.shape} and dtype {e.dtype.name}), but the file holds {e.budget} "
        "bytes of data: it does not describe these weights"
    )


def _error(path: str, problem: str, fix: str | None = None) -> io.WeightsFileError:
    return io.file_error(f"cannot load {path!r}:", path, [problem], [fix] if fix else [])


def _what(dtype: Any, shape: Any) -> str:
    return f"{np.dtype(dtype).name} {tuple(shape)}"


def _tuples(shape: Any) -> Any:
    """A JSON shape (lists, nested for several inputs) as tuples."""
    return tuple(_tuples(s) if isinstance(s, list) else s for s in shape)
