"""What :func:`wframe.transfer.from_torch` reads: a ``state_dict``, a ``torch.nn.Module`` or a
``.safetensors`` file, as host NumPy arrays grouped by module, each entry checked to hold values
that can be copied as they are.

torch is never imported here: tensors are recognised by their methods. Refused with a
``TypeError`` naming the entry: sparse tensors (``t.to_dense()`` first), tensors on the
``meta`` device (shapes without values), quantized tensors (``t.dequantize()``), objects that
are not arrays of numbers; and, once paired with a layer, entries that are not floating-point
(:func:`dtype_problem`: integers, booleans and complex numbers would change in a cast).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from wframe.saving import io
from wframe.saving.values import short

__all__ = ["dtype_problem", "path_of", "torch_groups"]


def _host(key: str, v: Any) -> np.ndarray:
    """A host copy of the entry ``key``: ``Tensor.numpy()`` (and ``np.asarray`` of a NumPy
    array) share memory with the source, and a model on numpy would then change with the torch
    twin. Floating dtypes NumPy lacks (bfloat16, float8) become float32, exactly; complex32
    becomes complex64 (refused with the other dtypes that cannot be weights, by
    :func:`dtype_problem`).

    Raises:
      TypeError: naming ``key``, for what holds no values to copy: a sparse, meta or quantized
        tensor, or an object that is no array of numbers.
    """
    if hasattr(v, "detach"):  # a torch tensor, converted without importing torch
        why = _no_values(v)
        if why:
            raise TypeError(f"from_torch: the state_dict entry {short(key)!r} is {why}")
        v = v.detach().cpu()
        if v.is_floating_point() and str(v.dtype) not in _NUMPY_FLOATS:
            v = v.float()  # bfloat16, float8: every value exact in float32
        elif str(v.dtype) == "torch.complex32":
            v = v.cfloat()
        try:
            v = v.numpy()
        except TypeError:  # a dtype NumPy cannot hold
            raise TypeError(
                f"from_torch: the state_dict entry {short(key)!r} has dtype {v.dtype}, which "
                "NumPy cannot hold; weights are floating-point (t.float())"
            ) from None
    try:
        a = np.array(v, copy=True)
    except (TypeError, ValueError) as e:  # a ragged list, say
        raise TypeError(f"from_torch: the state_dict entry {short(key)!r}: {e}") from None
    if a.dtype.kind not in "biufc":
        raise TypeError(
            f"from_torch: the state_dict entry {short(key)!r} is a {type(v).__name__} "
            f"({short(v)}), not a tensor or array of numbers"
        )
    return a


_NUMPY_FLOATS = ("torch.float16", "torch.float32", "torch.float64")


def _no_values(t: Any) -> str | None:
    """Why the torch tensor ``t`` has no values to copy as they are, or ``None``."""
    if str(t.layout) != "torch.strided":
        return f"a {str(t.layout).removeprefix('torch.')} (sparse) tensor; pass t.to_dense()"
    if getattr(t, "is_meta", False) or str(t.device) == "meta":
        return (
            "on the 'meta' device, which holds shapes but no values (a model made with "
            "device='meta' or an empty-weights context): load its real weights first"
        )
    if getattr(t, "is_quantized", False):
        return f"a quantized tensor ({t.dtype}); pass t.dequantize() for its float values"
    return None


def _natural(key: str) -> list:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", key)]


def torch_groups(source: Any) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """``({module prefix: {key: host array}}, {prefix: module})``, in module order."""
    modules, ordered = {}, True
    if callable(getattr(source, "state_dict", None)) and hasattr(source, "named_modules"):
        modules, source = dict(source.named_modules()), source.state_dict()
    if isinstance(source, (str, os.PathLike)):
        source, ordered = io.read_safetensors(source)[0], False  # safetensors sorts its names
    if not isinstance(source, Mapping):
        raise TypeError(
            "from_torch: expected a state_dict (a dict of tensors or arrays), a .safetensors "
            f"path or a torch.nn.Module, got {type(source).__name__}"
        )
    odd = [k for k in source if not isinstance(k, str)]
    if odd:
        raise TypeError(f"from_torch: state_dict keys must be str, got {short(odd)}")
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key in source if ordered else sorted(source, key=_natural):
        prefix, _, leaf = key.rpartition(".")
        groups.setdefault(prefix, {})[leaf] = _host(key, source[key])
    # nn.MultiheadAttention keeps its output projection in a submodule "out_proj"
    for prefix in [p for p in groups if p == "out_proj" or p.endswith(".out_proj")]:
        owner = groups.get(prefix.removesuffix("out_proj").removesuffix("."))
        if owner is not None and {"in_proj_weight", "q_proj_weight"} & set(owner):
            owner.update({f"out_proj.{k}": a for k, a in groups.pop(prefix).items()})
    return groups, modules


def dtype_problem(key: str, a: np.ndarray, layer: str) -> str | None:
    """Why the entry ``key`` cannot be a weight of the layer ``layer`` by its dtype, or
    ``None``: only floating-point values copy as they are (a cast of integers, booleans or
    complex numbers would change them silently)."""
    if a.dtype.kind == "f":
        return None
    if a.dtype.kind == "c":
        fix = "wframe's weights are real; pass t.real (or t.abs()) if that is what is meant"
    else:
        fix = "an index, mask or quantized tensor is no weight; t.float() if its values are"
    return f"{short(key)!r} for {layer!r} is {a.dtype}, not floating-point: {fix}"


def path_of(source: Any) -> str | None:
    """The path of a file source (``None`` for a ``state_dict`` or a module)."""
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
