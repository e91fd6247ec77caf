"""Host transfers of the CuPy backend: uploads staged through reused pinned buffers, and
several small arrays read back in one copy."""

from __future__ import annotations

import threading

import numpy as np

from wframe.tree import tree_leaves, tree_map

#: Uploads at least this large go through the two pinned buffers of STAGE_CHUNK bytes.
STAGE_BYTES = 1 << 18
STAGE_CHUNK = 32 << 20


class Stager:
    """Two page-locked buffers that uploads take turns in.

    The host data is converted straight into pinned memory (one host pass; ``cupy.asarray``
    converts, then copies into its own pinned staging buffer) chunk by chunk, each chunk copied
    asynchronously on the current stream; a buffer is reused once the copy out of it is done,
    so the conversion of a chunk overlaps the transfer of the previous one, and at most
    2 x STAGE_CHUNK bytes stay pinned.
    """

    def __init__(self, cupy):
        self._cp = cupy
        self._slots = [[None, 0, None], [None, 0, None]]  # [pinned memory, bytes, event]
        self._lock = threading.Lock()

    def upload(self, host: np.ndarray, dtype: np.dtype):
        cp = self._cp
        out = cp.empty(host.shape, dtype=dtype)
        src = np.ascontiguousarray(host).reshape(-1)
        step = max(1, STAGE_CHUNK // dtype.itemsize)
        with self._lock:
            for start in range(0, src.size, step):
                part = src[start : start + step]
                slot = self._slots.pop(0)
                self._slots.append(slot)
                if slot[2] is not None:
                    slot[2].synchronize()  # the previous copy out of this buffer is done
                nbytes = part.size * dtype.itemsize
                if slot[1] < nbytes:
                    slot[0], slot[1] = cp.cuda.alloc_pinned_memory(nbytes), nbytes
                np.copyto(np.frombuffer(slot[0], dtype, part.size), part, casting="unsafe")
                (out.data + start * dtype.itemsize).copy_from_host_async(slot[0].ptr, nbytes)
                slot[2] = cp.cuda.get_current_stream().record()
        return out


def to_host(cp, tree):
    """``tree`` with NumPy arrays: small CuPy leaves (the logs: a few scalars) in one copy per
    dtype instead of one synchronizing copy each; large ones on their own, not concatenated."""
    groups, host = {}, {}
    for leaf in tree_leaves(tree):
        if isinstance(leaf, cp.ndarray):
            if leaf.size > 1 << 16:
                host[id(leaf)] = leaf.get()
            else:
                groups.setdefault(leaf.dtype, {})[id(leaf)] = leaf
    for leaves in groups.values():
        flat = cp.concatenate([a.reshape(-1) for a in leaves.values()]).get()
        start = 0
        for key, a in leaves.items():
            host[key] = flat[start : start + a.size].reshape(a.shape)
            start += a.size
    return tree_map(lambda a: host[id(a)] if id(a) in host else np.asarray(a), tree)
