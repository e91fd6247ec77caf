"""Type aliases used in public signatures."""

from __future__ import annotations

from typing import Any

import numpy as np

Array = Any
"""An array of the active backend (numpy.ndarray, cupy.ndarray, jax.Array) or a tracer."""
Params = dict[str, Any]
"""Nested dict of arrays: ``{"dense_0": {"W": ..., "b": ...}}``."""
Grads = Params
State = Params
Shape = tuple[int | None, ...]
Key = int | np.random.SeedSequence
Namespace = Any
