"""CuPy backend: arrays on an NVIDIA GPU, the same hand-written backprop as NumPy."""

from __future__ import annotations

import importlib.util

from wframe.backends.base import Backend


class CupyBackend(Backend):
    name = "cupy"
    install = "pip install 'wframe[cuda12]' (or 'wframe[cuda13]' for CUDA 13)"

    @classmethod
    def is_available(cls):
        if importlib.util.find_spec("cupy") is None:
            return False, f"cupy is not installed; install it with: {cls.install}"
        try:
            import cupy

            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # CUDA driver/runtime errors have no common base class
            return False, f"cupy cannot reach a CUDA device: {type(e).__name__}: {e}"
        if count == 0:
            return False, "cupy found no CUDA device"
        return True, ""

    def __init__(self):
        import array_api_compat.cupy as xp
        import cupy

        self._cupy = cupy
        self.xp = xp

    @property
    def device(self):
        return f"cuda:{self._cupy.cuda.Device().id}"

    def to_numpy(self, a):
        return self._cupy.asnumpy(a)

    def synchronize(self, x=None):
        self._cupy.cuda.get_current_stream().synchronize()
        return x
