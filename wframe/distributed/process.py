"""Which process this is: joining a multi-process JAX run, and the one process that writes files."""

from __future__ import annotations

import os
from typing import Any

from wframe.backends.process import is_writer, set_group_rank

__all__ = ["initialize", "is_writer", "set_group_rank"]


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    **kwargs: Any,
) -> None:
    """Join a multi-process JAX run: :func:`jax.distributed.initialize`, before any JAX array.

    Arguments left ``None`` come from ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID`` when set, else JAX detects them (SLURM, Open MPI, Kubernetes, ...).
    On CPU the processes' collectives go through gloo. Then ``DataParallel()`` spans every
    process's devices; each process runs the same script with the same seed, on the same data
    or (``per_process_data=True``) on its own share.

    Args:
      coordinator_address: ``"host:port"`` of process 0's coordinator service.
      num_processes: how many processes the run has.
      process_id: this process's index, ``0`` to ``num_processes - 1``.
      **kwargs: passed on to :func:`jax.distributed.initialize` (e.g. ``local_device_ids``).
    """
    import jax

    env = os.environ
    coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and "JAX_NUM_PROCESSES" in env:
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and "JAX_PROCESS_ID" in env:
        process_id = int(env["JAX_PROCESS_ID"])
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        **kwargs,
    )
