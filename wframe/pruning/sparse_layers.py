"""Inference-only layers whose kernels are sparse: what :func:`wframe.pruning.sparsify` puts in
place of a pruned ``Dense``, ``Conv2D`` or ``Conv1D``.

Each wraps the dense layer's description (``layer``, so its units, activation, bias and
geometry stay as they were) and holds the kernel as the CSR arrays of its transpose: ``data``
(the nonzero values), ``indices`` (their input positions, int32) and ``indptr`` (where each
output's entries start, int32), plus the bias ``b``. ``nnz``, the number of stored values, is
part of the description, so a model file rebuilds the param shapes from its config and
``save_model``/``load_model`` work as for any model. The product is the backend's
:meth:`~wframe.backends.Backend.sparse_matmul` (SciPy on NumPy, cuSPARSE on CuPy,
``jax.experimental.sparse`` on JAX); a convolution is the backend's im2col followed by it.

These layers do not train: ``fit`` (any forward with ``train=True``) raises, and so does a
backward pass. Train the dense pruned model and sparsify it again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from wframe import activations
from wframe.backends import array_namespace, backend_of, get_backend
from wframe.layers import registry
from wframe.layers.base import Layer
from wframe.layers.conv import Conv2D
from wframe.layers.conv1d import Conv1D
from wframe.layers.dense import Dense
from wframe.placeholders import active, placeholder


def csr_of(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(data, indices, indptr)`` of the CSR of ``kernel.T`` for a 2-D ``kernel`` (in, out)
    on the host: every entry that is not exactly zero is stored (NaN included)."""
    t = np.ascontiguousarray(np.asarray(kernel).T)
    stored = t != 0
    indptr = np.zeros(t.shape[0] + 1, np.int32)
    np.cumsum(np.count_nonzero(stored, axis=1), out=indptr[1:])
    return t[stored], np.nonzero(stored)[1].astype(np.int32), indptr


@dataclass(frozen=True)
class SparseKernel(Layer):
    """The common part of :class:`SparseDense`, :class:`SparseConv2D` and
    :class:`SparseConv1D` (see the module docstring).

    Args:
      layer: the dense layer this one computes like (its name is this layer's name).
      nnz: the number of stored kernel values.
      name: ``None`` (default) takes ``layer``'s name; another name renames ``layer`` too.
    """

    layer: Layer
    nnz: int = 0

    #: The dense layer class this one replaces.
    wraps: ClassVar[type] = Layer

    def __post_init__(self):
        if type(self.layer) is not self.wraps:
            raise TypeError(
                f"{type(self).__name__} wraps a {self.wraps.__name__} layer, got "
                f"{type(self.layer).__name__} {self.layer!r}"
            )
        if self.name is None:
            object.__setattr__(self, "name", self.layer.name)
        elif self.layer.name != self.name:  # renamed by a container: the wrapped one follows
            object.__setattr__(self, "layer", self.layer.named(self.name))
        nnz = self.nnz
        if isinstance(nnz, bool) or not isinstance(nnz, (int, np.integer)) or nnz < 0:
            raise ValueError(f"{self.label}: nnz must be an int >= 0, got {nnz!r}")
        object.__setattr__(self, "nnz", int(nnz))
        act = activations.get(self.layer.activation, self.label)
        object.__setattr__(self, "_activation", act)

    def init(self, key, in_shape, *, dtype="float32"):
        out_shape = self.out_shape(tuple(in_shape))
        rows, _ = self._rows_cols(in_shape)
        shapes = {"data": ((self.nnz,), dtype), "indices": ((self.nnz,), "int32")}
        shapes["indptr"] = ((rows + 1,), "int32")
        if self.layer.use_bias:
            shapes["b"] = ((rows,), dtype)
        if active():  # a loader checking a file: shapes only
            return {k: placeholder(s, d) for k, (s, d) in shapes.items()}, {}, out_shape
        host = {k: np.zeros(s, d) for k, (s, d) in shapes.items()}
        host["indptr"][-1] = self.nnz  # a valid CSR of zeros: every entry in the last row
        backend = get_backend()
        return {k: backend.asarray(a) for k, a in host.items()}, {}, out_shape

    def forward(self, params, state, x, *, train=False, key=None, vjp=True):
        if train:
            raise TypeError(
                f"{self.label} runs inference only (predict, evaluate): it was made by "
                "wf.pruning.sparsify and cannot train; fit the dense pruned model (masks keep "
                "it sparse) and sparsify it again"
            )
        z = self.product(params, x)
        y = activations.apply(self._activation, z, params.get("b"))[0]
        return y, state, (self._no_backprop if vjp else None)

    def _length(self, n: int, window: int, stride: int, dilation: int) -> int:
        """A convolution's output length on one axis of ``n`` steps."""
        span = (window - 1) * dilation + 1
        before, after = _pads(self.layer.padding, n, window, stride, dilation)
        if n + before + after < span:
            raise ValueError(
                f"{self.label}: the kernel spans {span} steps, more than the input's {n} with "
                f"padding={self.layer.padding!r}"
            )
        return (n + before + after - span) // stride + 1

    def _no_backprop(self, dy, input_grad=True, need=None):
        raise TypeError(
            f"{self.label} has no backward pass (an inference-only layer of "
            "wf.pruning.sparsify); take gradients through the dense pruned model"
        )

    def _rows_cols(self, in_shape) -> tuple[int, int]:
        """``(out, in)`` of the transposed 2-D kernel for inputs of ``in_shape``."""
        raise TypeError(f"{type(self).__name__} must define _rows_cols(in_shape)")

    def out_shape(self, in_shape: tuple) -> tuple:
        """The output shape for inputs of ``in_shape`` (computed, not drawn: a loader's
        shape check counts every array an ``init`` asks for)."""
        raise TypeError(f"{type(self).__name__} must define out_shape(in_shape)")

    def product(self, params, x):
        """``x`` through the sparse kernel, before bias and activation."""
        raise TypeError(f"{type(self).__name__} must define product(params, x)")

    def kernel_matmul(self, params, x2):
        """``x2`` (rows, in) @ the kernel, on ``x2``'s backend."""
        backend = backend_of(x2, params["data"])
        parts = (params["data"], params["indices"], params["indptr"])
        return backend.sparse_matmul(x2, *parts, (params["indptr"].shape[0] - 1, x2.shape[1]))

    def sparse_params(self, params: dict, kernel: np.ndarray) -> dict:
        """This layer's params on the backend of ``params`` (the dense layer's): the CSR
        arrays of ``kernel`` (the dense ``W`` on the host) and the dense bias."""
        backend = backend_of(params["W"])
        two_d = np.reshape(kernel, (-1, kernel.shape[-1]))
        data, indices, indptr = csr_of(two_d)
        if data.size != self.nnz:
            raise ValueError(f"{self.label}: nnz={self.nnz}, but the kernel holds {data.size}")
        out = {"data": backend.asarray(data), "indices": backend.asarray(indices)}
        out["indptr"] = backend.asarray(indptr)
        if self.layer.use_bias:
            out["b"] = params["b"]
        return out


@dataclass(frozen=True)
class SparseDense(SparseKernel):
    """A :class:`~wframe.layers.Dense` whose ``W`` is stored and multiplied as CSR.

    Args:
      layer: the :class:`~wframe.layers.Dense` this one computes like.
      nnz: the number of stored kernel values.
      name: ``None`` (default) takes ``layer``'s name; another name renames ``layer`` too.
    """

    wraps: ClassVar[type] = Dense

    def _rows_cols(self, in_shape):
        return self.layer.units, in_shape[-1]

    def out_shape(self, in_shape):
        if len(in_shape) < 2 or in_shape[-1] is None:
            raise ValueError(
                f"{self.label} expects inputs (batch, ..., features) of rank >= 2 with a "
                f"known number of features, got shape {in_shape}"
            )
        return (*in_shape[:-1], self.layer.units)

    def product(self, params, x):
        xp = array_namespace(x)
        lead = tuple(x.shape[:-1])
        x2 = x if x.ndim == 2 else xp.reshape(x, (math.prod(lead), x.shape[-1]))
        z = self.kernel_matmul(params, x2)
        return z if x.ndim == 2 else xp.reshape(z, (*lead, z.shape[-1]))


@dataclass(frozen=True)
class SparseConv2D(SparseKernel):
    """A :class:`~wframe.layers.Conv2D` run as im2col and a sparse product.

    Args:
      layer: the :class:`~wframe.layers.Conv2D` this one computes like.
      nnz: the number of stored kernel values.
      name: ``None`` (default) takes ``layer``'s name; another name renames ``layer`` too.
    """

    wraps: ClassVar[type] = Conv2D

    def _rows_cols(self, in_shape):
        kh, kw = self.layer.kernel_size
        return self.layer.filters, kh * kw * in_shape[-1]

    def out_shape(self, in_shape):
        self.expect_rank(in_shape, 4, "(batch, height, width, channels)")
        conv = self.layer
        sizes = (in_shape[1:3], conv.kernel_size, conv.strides, conv.dilation_rate)
        hw = (self._length(*g) for g in zip(*sizes, strict=True))
        return (in_shape[0], *hw, conv.filters)

    def product(self, params, x):
        if x.ndim != 4:
            raise ValueError(
                f"{self.label} expects 4-D inputs (batch, height, width, channels), got array "
                f"of shape {tuple(x.shape)}"
            )
        conv = self.layer
        pads = tuple(
            _pads(conv.padding, n, k, s, d)
            for n, k, s, d in zip(
                x.shape[1:3], conv.kernel_size, conv.strides, conv.dilation_rate, strict=True
            )
        )
        return _conv(self, params, x, conv.kernel_size, conv.strides, pads, conv.dilation_rate)


@dataclass(frozen=True)
class SparseConv1D(SparseKernel):
    """A :class:`~wframe.layers.Conv1D` run as im2col (a height-1 image) and a sparse
    product.

    Args:
      layer: the :class:`~wframe.layers.Conv1D` this one computes like.
      nnz: the number of stored kernel values.
      name: ``None`` (default) takes ``layer``'s name; another name renames ``layer`` too.
    """

    wraps: ClassVar[type] = Conv1D

    def _rows_cols(self, in_shape):
        return self.layer.filters, self.layer.kernel_size[0] * in_shape[-1]

    def out_shape(self, in_shape):
        self.expect_rank(in_shape, 3, "(batch, steps, channels)")
        conv = self.layer
        k, s, d = conv.kernel_size[0], conv.strides[0], conv.dilation_rate[0]
        return (in_shape[0], self._length(in_shape[1], k, s, d), conv.filters)

    def product(self, params, x):
        if x.ndim != 3:
            raise ValueError(
                f"{self.label} expects 3-D inputs (batch, steps, channels), got array of "
                f"shape {tuple(x.shape)}"
            )
        conv = self.layer
        k, s, d = conv.kernel_size[0], conv.strides[0], conv.dilation_rate[0]
        xp = array_namespace(x)
        image = xp.reshape(x, (x.shape[0], 1, *x.shape[1:]))
        pads = ((0, 0), _pads(conv.padding, x.shape[1], k, s, d))
        z = _conv(self, params, image, (1, k), (1, s), pads, (1, d))
        return xp.reshape(z, (z.shape[0], *z.shape[2:]))


def _pads(padding: str, n: int, window: int, stride: int, dilation: int) -> tuple[int, int]:
    """The layers' padding rule on one axis (TensorFlow's "same": output ``ceil(n / stride)``,
    the odd pad at the end; "causal": all of it at the start)."""
    span = (window - 1) * dilation + 1
    if padding == "valid":
        return (0, 0)
    if padding == "causal":
        return (span - 1, 0)
    total = max((-(-n // stride) - 1) * stride + span - n, 0)
    return (total // 2, total - total // 2)


def _conv(layer: SparseKernel, params: dict, x: Any, window, strides, pads, dilation) -> Any:
    """NHWC ``x`` convolved with the sparse kernel: im2col, one sparse product, reshape."""
    xp = array_namespace(x)
    cols = backend_of(x).im2col(x, tuple(window), tuple(strides), pads, tuple(dilation))
    n, ho, wo, k = cols.shape
    z = layer.kernel_matmul(params, xp.reshape(cols, (n * ho * wo, k)))
    return xp.reshape(z, (n, ho, wo, z.shape[-1]))


#: The sparse layer class of each dense one.
SPARSE_OF: dict[type, type] = {Dense: SparseDense, Conv2D: SparseConv2D, Conv1D: SparseConv1D}

for _cls in SPARSE_OF.values():
    registry.register(_cls)
