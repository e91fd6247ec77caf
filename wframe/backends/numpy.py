"""NumPy backend: jit is the identity, gradients are the layers' hand-written backprop."""

from __future__ import annotations

import array_api_compat.numpy as xp

from wframe.backends.base import Backend


class NumpyBackend(Backend):
    name = "numpy"
    xp = xp
