"""NumPy backend: jit is the identity, gradients are the layers' hand-written backprop."""

from __future__ import annotations

import numpy

from wframe.backends.base import Backend


class NumpyBackend(Backend):
    # NumPy >= 2.1 implements the array API in its main namespace; array_api_compat's wrappers
    # around it cost up to a microsecond a call, which small models feel.
    name = "numpy"
    xp = numpy
