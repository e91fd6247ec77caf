"""Which process this is in a multi-process run, and the one process that writes files."""

from __future__ import annotations

import sys

# The rank of this process in a NcclDataParallel group, once one is made (None: no group).
_group_rank: int | None = None


def set_group_rank(rank: int | None) -> None:
    """Record this process's rank in a process group (``None``: no group)."""
    global _group_rank
    _group_rank = rank


def is_writer() -> bool:
    """True in the process that writes files: process 0 of JAX's multi-process run or rank 0
    of a :class:`~wframe.distributed.NcclDataParallel` group (the only process otherwise)."""
    if _group_rank is not None:
        return _group_rank == 0
    jax = sys.modules.get("jax")  # a multi-process run has imported it; never import it here
    return jax is None or jax.process_index() == 0
