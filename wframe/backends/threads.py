"""How many BLAS threads the host's matrix products use inside wframe's own calls.

NumPy's BLAS runs every product on all cores and spins waiting for the other threads; when the
cores are shared (another process, a test worker, a data loader), a small model's step then waits
far longer than it computes. Measured on a 2-core VM, 90 Adam steps of a 40-100-100-10 MLP at
batch 100: 0.052 s idle with any thread count; beside two busy processes 0.20 s with the default
threads and 0.078 s with one. Big products do gain from threads (two 1024-wide layers at batch
256: one thread 1.44x slower idle; 512-wide at batch 128: 1.12x; 256-wide at 64: 1.04x).

The policy, for each ``fit``, ``evaluate`` and ``predict`` on the host (the numpy backend): one
thread when the work of a batch (params x batch rows) is under :data:`SMALL_WORK`, else BLAS's
own setting. ``WFRAME_NUM_THREADS=n`` (or ``auto``) and :func:`num_threads` override it. The
limit holds only inside those calls: the user's own NumPy code keeps its setting. Without
threadpoolctl nothing is limited.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from collections.abc import Iterator

try:
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover - threadpoolctl is a dependency; tolerate its absence
    ThreadpoolController = None

#: Params x batch rows under which a step's products run on one BLAS thread.
SMALL_WORK = 1e8
_override: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "wframe_threads", default=None
)
_blas = None  # threadpoolctl's controllers of the loaded BLAS libraries (found once)
_lock = threading.Lock()
_depth = 0  # calls inside the limit now
_restore: list = []  # (library, its threads before the first of them) for those changed


def _env() -> int | None:
    value = os.environ.get("WFRAME_NUM_THREADS", "auto").strip().lower()
    if value in ("", "auto"):
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(
            f"WFRAME_NUM_THREADS must be a positive int or 'auto', got {value!r}; unset it "
            "for the default policy"
        )
    return n


def threads_for(work: float) -> int | None:
    """The BLAS threads for a call whose batches cost ``work`` (params x rows): the
    :func:`num_threads` override, else ``WFRAME_NUM_THREADS``, else 1 for small work and
    ``None`` (BLAS's own setting) for big work."""
    n = _override.get()
    if n is not None:
        return n
    n = _env()
    if n is not None:
        return n
    return 1 if work < SMALL_WORK else None


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Within the block, wframe's host calls use ``n`` BLAS threads (``None``: the policy).

    Args:
      n: the BLAS threads of wframe's own host calls in the block (a positive int), or
        ``None`` for the policy (one thread for small work, the cores for large). The user's
        setting outside wframe's calls is never changed.

    Raises:
      ValueError: ``n`` is not a positive int or ``None``.
    """
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(f"num_threads: n must be a positive int or None, got {n!r}")
    token = _override.set(n)
    try:
        yield
    finally:
        _override.reset(token)


@contextlib.contextmanager
def limited(work: float) -> Iterator[None]:
    """The BLAS thread limit of :func:`threads_for` around a call (nothing for ``None``).

    The limit is process-wide (BLAS has one setting), so calls that overlap (``predict`` from
    threads while another ``fit`` runs) share it: the first to enter sets it, the last to leave
    restores what was there before, whatever order they end in. Each library's count is read
    and set directly (threadpoolctl's own ``limit`` gathers every library's full info first:
    7 of the 12 us this took around each ``predict``).
    """
    global _blas, _depth, _restore
    n = threads_for(work)
    if n is None or ThreadpoolController is None:
        yield
        return
    with _lock:
        if _depth == 0:
            if _blas is None:  # scans the loaded libraries once
                _blas = ThreadpoolController().select(user_api="blas").lib_controllers
            _restore = [(lib, was) for lib in _blas if (was := lib.get_num_threads()) != n]
            for lib, _ in _restore:
                lib.set_num_threads(n)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for lib, was in _restore:
                    lib.set_num_threads(was)
                _restore = []
