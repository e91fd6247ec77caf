"""NumPy backend: jit is the identity, gradients are the layers' hand-written backprop."""

from __future__ import annotations

import numpy
from numpy.lib.stride_tricks import sliding_window_view

from wframe.backends.base import Backend


class NumpyBackend(Backend):
    # NumPy >= 2.1 implements the array API in its main namespace; array_api_compat's wrappers
    # around it cost up to a microsecond a call, which small models feel.
    name = "numpy"
    xp = numpy

    def im2col(self, x, window, strides, padding, dilation, *, fill=0.0):
        # A strided view of every window, copied once in the destination's order: about 5x
        # faster than stacking the kh*kw shifted slices (measured on 32x32x32x16, 3x3).
        if not isinstance(x, numpy.ndarray):  # e.g. array_api_strict arrays in the tests
            return super().im2col(x, window, strides, padding, dilation, fill=fill)
        (kh, kw), (sh, sw), (dh, dw) = window, strides, dilation
        if any(p for pair in padding for p in pair):
            x = numpy.pad(x, ((0, 0), *padding, (0, 0)), constant_values=fill)
        span = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
        view = sliding_window_view(x, span, axis=(1, 2))[:, ::sh, ::sw, :, ::dh, ::dw]
        n, ho, wo, c = view.shape[:4]
        return numpy.reshape(view.transpose(0, 1, 2, 4, 5, 3), (n, ho, wo, kh * kw * c))
