"""Input and label checks, moving data to the model's backend once, batch sizes and orders.

Everything here runs on the host before anything is compiled, so the compiled steps stay free
of checks. Errors name the argument, the expected and the received value, and the fix.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np

from wframe.backends import Backend, backend_of, to_numpy
from wframe.types import Array, Shape


def as_int(value: Any, what: str, *, minimum: int = 1, allow_none: bool = False) -> int | None:
    """``value`` as a Python int (NumPy integers accepted) that is at least ``minimum``.

    Args:
      value, what: the number (a bool is refused) and how errors name it (``"fit: epochs"``).
      minimum, allow_none: the least value allowed (default 1); let ``None`` through.
    """
    if value is None and allow_none:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{what} must be an int >= {minimum}, got {type(value).__name__} {value!r}"
        ) from None
    if number < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}, got {number}")
    return number


def input_shape(shape: Any) -> Shape:
    """A build shape ``(None, features...)`` from a tuple or list; the batch axis may be any.

    Args:
      shape: the user's ``input_shape``, batch axis first; a bare int is refused.
    """
    if isinstance(shape, (int, np.integer)) or not isinstance(shape, (tuple, list)):
        raise TypeError(
            f"input_shape must be a tuple with the batch axis first, e.g. (None, {shape}) for "
            f"{shape} features, got {type(shape).__name__} {shape!r}"
        )
    if len(shape) < 2:
        raise ValueError(
            f"input_shape must have a batch axis and at least one more, e.g. (None, 64); got "
            f"{tuple(shape)}"
        )
    rest = tuple(as_int(d, f"input_shape[{i + 1}]") for i, d in enumerate(shape[1:]))
    return (None, *rest)


def check_finite(a: Any, what: str, dtype: str | None = None) -> None:
    """Refuse NaN or inf in ``a``, and values that overflow ``dtype`` once cast (checked on
    ``a``'s own dtype, before any cast: 1e39 in float64 data is an overflow, not an inf).

    Args:
      a, what: a NumPy or backend array (non-float ones pass) and its name in errors.
      dtype: the model dtype it will be cast to; ``None`` skips the overflow check.
    """
    if isinstance(a, np.ndarray):
        if not np.issubdtype(a.dtype, np.floating) or not a.size:
            return
        # The extremes, NaN where there is one (two passes, no temporaries: 31 -> 14 us on
        # the digits' 1437 x 64 floats, where isfinite().all() and abs().max() took two more).
        lo, hi = (float(r(a, axis=None)) for r in (np.minimum.reduce, np.maximum.reduce))
        ok = math.isfinite(lo) and math.isfinite(hi)
        top = max(-lo, hi) if ok else 0.0
    else:
        xp = backend_of(a).xp
        if not xp.isdtype(a.dtype, "real floating"):
            return
        ok = bool(xp.all(xp.isfinite(a)))
        top = float(xp.max(xp.abs(a))) if ok and a.size else 0.0
    if not ok:
        host = to_numpy(a)
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(host))[0])
        raise ValueError(
            f"{what} contains NaN or inf (first at index {bad}: {host[bad]}); clean the data "
            "before training"
        )
    if dtype is not None:
        _refuse_overflow(top, what, dtype)


def _refuse_overflow(top: float, what: str, dtype: str) -> None:
    if top > float(np.finfo(dtype).max):
        raise ValueError(
            f"{what} holds values up to {top:.3g}, which overflow the model dtype {dtype} "
            f"(max {float(np.finfo(dtype).max):.3g}); rescale the data or use a float64 model"
        )


def check_range(host: np.ndarray, what: str, dtype: str) -> None:
    """Refuse finite values of ``host`` that a cast to the float ``dtype`` would make inf
    (NaN and inf themselves pass: data that are not checked for them keep them).

    Args:
      host, what, dtype: the NumPy data, its name in errors, and the target dtype.
    """
    narrows = host.dtype.kind == "f" and host.dtype.itemsize > np.dtype(dtype).itemsize
    if narrows and host.size and np.dtype(dtype).kind == "f":
        top = float(np.max(np.abs(host), initial=0.0, where=np.isfinite(host)))
        _refuse_overflow(top, what, dtype)


def host_array(a: Any, what: str, *, strict: bool = True) -> Any:
    """``a`` as the checks here take it, converted once where it comes from another library:
    a torch tensor (``detach().cpu()``, copied), a pandas DataFrame or Series (``to_numpy``),
    anything else with ``__array__``, the array interface or DLPack, as a NumPy array. NumPy
    arrays, arrays of a backend (any array-API array) and nested sequences of numbers stay as
    they are; anything else is a ``TypeError`` naming ``what``, the type and what is accepted
    (not ``strict``: returned as it is).

    Args:
      a, what, strict: the data, its name in errors, and whether to refuse other types.
    """
    if isinstance(a, (np.ndarray, list, tuple, int, float, complex, np.generic)):
        return a
    lib = type(a).__module__.partition(".")[0]
    if lib == "torch" and hasattr(a, "detach"):
        t = a.detach().cpu()
        return (t.float() if str(t.dtype) == "torch.bfloat16" else t).numpy().copy()
    if lib == "pandas" and hasattr(a, "to_numpy"):
        return a.to_numpy()
    if hasattr(a, "shape") and hasattr(a, "dtype"):
        return a  # an array of a backend: checked against the model's where it is used
    if hasattr(a, "__array__") or hasattr(a, "__array_interface__"):
        return np.asarray(a)
    if hasattr(a, "__dlpack__"):
        return np.from_dlpack(a)
    if not strict:
        return a
    if a is None:
        fix = "the labels, or x as an iterable of (x, y) batches" if what[:1] == "y" else "an array"
        raise TypeError(f"{what} is None; pass {fix}")
    kind = type(a).__qualname__
    kind = kind if type(a).__module__ == "builtins" else f"{type(a).__module__}.{kind}"
    raise TypeError(
        f"{what} must be an array (NumPy, the model's backend's, or anything NumPy converts: "
        f"a torch tensor, a pandas DataFrame, an object with __array__ or DLPack), a list or "
        f"dict of them per input, or (for x) an iterable of (x, y) batches; got "
        f"{kind}{_dataset_hint(a)}"
    )


def _dataset_hint(a: Any) -> str:
    """A map-style dataset (torch's ``Dataset``) gives examples, not batches: say so."""
    if hasattr(a, "__getitem__") and hasattr(a, "__len__"):
        return "; a dataset of single examples goes in a DataLoader(dataset, batch_size=32)"
    return ""


def inputs(
    x: Any, backend: Backend, dtype: str, what: str = "x", *, finite: bool = False, put: Any = None
):
    """``x`` as an array of ``backend`` in ``dtype``; NumPy input is moved, never copied twice.

    Args:
      x: a NumPy array, nested sequence, or an array of ``backend``.
      backend: the model's backend.
      dtype: the model dtype.
      what: the argument name for error messages.
      finite: also refuse NaN, inf and values that overflow ``dtype`` (training data).
      put: ``put(host, dtype)`` moves checked NumPy data (default ``backend.asarray``).
    """
    x = host_array(x, what)
    if isinstance(x, np.ndarray) or not hasattr(x, "shape"):
        host = np.asarray(x)
        if not (np.issubdtype(host.dtype, np.number) or host.dtype == np.bool_):
            raise TypeError(f"{what} must be a numeric array, got dtype {host.dtype}")
        refuse_complex(host.dtype, what)
        _check_ids(host.dtype, dtype, what)
        if host.ndim == 0:
            raise ValueError(f"{what} must have a batch axis, got a scalar {host!r}")
        if finite:
            check_finite(host, what, dtype)
        else:  # a cast never turns a finite value into inf silently
            check_range(host, what, dtype)
        return (put or backend.asarray)(host, dtype=dtype)
    owner = backend_of(x)
    if owner is not backend:
        raise TypeError(
            f"{what} is an array of backend '{owner.name}' but the model lives on "
            f"'{backend.name}'; pass NumPy data, or move the model with "
            f"model.to_backend('{owner.name}')"
        )
    if x.ndim == 0:
        raise ValueError(f"{what} must have a batch axis, got a scalar")
    refuse_complex(x.dtype, what)
    _check_ids(np.dtype(str(x.dtype)) if str(x.dtype) != "bfloat16" else x.dtype, dtype, what)
    if finite:
        check_finite(x, what, dtype)
    target = backend.dtype(dtype)
    return x if x.dtype == target else backend.xp.astype(x, target)


def refuse_complex(dtype: Any, what: str) -> None:
    """Refuse complex data: a cast to the model's real dtype would drop the imaginary parts
    silently.

    Args:
      dtype, what: the data's dtype (NumPy's or a backend's) and its name in errors.
    """
    if getattr(dtype, "kind", "") == "c" or "complex" in str(dtype):
        raise TypeError(
            f"{what} holds complex numbers (dtype {dtype}); a model takes real values, and a "
            f"cast would drop the imaginary parts: pass {what.split('[')[0]}.real, abs(...), or "
            "the real and imaginary parts as separate features"
        )


def _check_ids(got: Any, dtype: str, what: str) -> None:
    """Refuse non-integer data for an integer input (token ids are never cast from floats)."""
    if np.dtype(dtype).kind in "iu" and getattr(got, "kind", "f") not in "iu":
        raise TypeError(
            f"{what} must hold integer ids (the model's input is {dtype}), got dtype {got}; "
            f"convert it with {what.split('[')[0]}.astype('int32') if the values are ids"
        )


def labels(
    y: Any,
    n: int,
    pred_shape: Shape,
    loss: Any,
    backend: Backend,
    dtype: str,
    what: str = "y",
    put: Any = None,
) -> Array:
    """Labels checked on the host against ``loss`` and predictions of ``pred_shape``, moved by
    ``put(host, dtype)`` (default ``backend.asarray``).

    Args:
      y, what: the labels (anything :func:`host_array` takes) and their name in errors.
      n, pred_shape: the number of examples of ``x`` and the model's output shape.
      loss: the loss object, whose ``check`` and ``label_dtype`` validate and type them.
      backend, dtype, put: the model's backend and dtype, and how to move them there.
    """
    y = host_array(y, what)
    host = to_numpy(y) if hasattr(y, "shape") and not isinstance(y, np.ndarray) else np.asarray(y)
    refuse_complex(host.dtype, what)
    if host.ndim == 0 or host.shape[0] != n:
        raise ValueError(
            f"{what} must have one row per example ({n} rows, like x), got shape {host.shape}"
        )
    check_finite(host, what)
    host = loss.check((n, *pred_shape[1:]), host)
    label_dtype = loss.label_dtype(host, dtype)
    check_range(np.asarray(host), what, label_dtype)
    return (put or backend.asarray)(host, dtype=label_dtype)


def pair(data: Any, what: str) -> tuple[Any, Any]:
    """``(x, y)`` from ``validation_data`` or a clear error.

    Args:
      data, what: the user's tuple (or list) of two and the argument's name in errors.
    """
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        got = (
            f"a {type(data).__name__} of length {len(data)}"
            if isinstance(data, (tuple, list))
            else type(data).__name__
        )
        raise ValueError(f"{what} must be a tuple (x_val, y_val), got {got}")
    return data[0], data[1]


def default_batch(out_elements: int, rows: int) -> int:
    """Rows per inference batch: activations of about 4M elements, between 32 and 4096.

    Args:
      out_elements, rows: elements of one example's activations, and the rows to predict.
    """
    size = 2 ** int(math.log2(max(1, 4_000_000 // max(1, out_elements))))
    return max(32, min(4096, size, max(rows, 1)))


def fit_options(
    *, epochs, batch_size, initial_epoch, seed, steps_per_execution, verbose, shuffle, callbacks
) -> dict[str, Any]:
    """``fit``'s plain arguments checked and normalized (NumPy integers accepted;
    ``batch_size=None`` is 32, ``shuffle=None`` True and ``verbose="auto"`` 1, as Keras).

    Args:
      epochs, batch_size, initial_epoch, seed, steps_per_execution, verbose, shuffle: as in fit.
      callbacks: as in ``fit``; one callback is made a list of one.
    """
    if steps_per_execution != "epoch":
        steps_per_execution = as_int(
            steps_per_execution, "fit: steps_per_execution ('epoch' or an int)"
        )
    verbose = 1 if verbose == "auto" else verbose  # Keras 3's default: a progress bar
    if verbose not in (0, 1, 2, True, False):
        raise ValueError(f"fit: verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
    shuffle = True if shuffle is None else shuffle  # None: True (an iterable keeps its order)
    if not isinstance(shuffle, (bool, np.bool_)):
        raise TypeError(f"fit: shuffle must be True or False, got {shuffle!r}")
    if callbacks is not None and not isinstance(callbacks, (list, tuple)):
        callbacks = [callbacks]  # one callback: a list of one (CallbackList checks the type)
    return {
        "epochs": as_int(epochs, "fit: epochs", minimum=0),
        "batch_size": 32 if batch_size is None else as_int(batch_size, "fit: batch_size"),
        "initial_epoch": as_int(initial_epoch, "fit: initial_epoch", minimum=0),
        "seed": as_int(seed, "fit: seed", minimum=0, allow_none=True),
        "steps_per_execution": steps_per_execution,
        "verbose": int(verbose),
        "shuffle": bool(shuffle),
        "callbacks": callbacks,
    }


def shape_of(x: Any, what: str) -> tuple:
    """The shape of an array or nested sequence; a ValueError for a scalar (a TypeError for
    what is no array, as :func:`host_array` says).

    Args:
      x, what: the data and its name in errors.
    """
    x = host_array(x, what)
    shape = tuple(x.shape) if hasattr(x, "shape") else tuple(np.shape(x))
    if not shape:
        raise ValueError(f"{what} must have a batch axis, got a scalar")
    return shape
