"""Communicators for :class:`~wframe.distributed.NcclDataParallel`: NCCL among the GPUs of one
machine (``cupy.cuda.nccl``), and a TCP one for CPU runs and tests; plus their rendezvous.

A communicator has ``rank``, ``size``, ``all_reduce(a) -> sum over ranks`` and
``broadcast(a, root=0) -> root's a``, on arrays of its backend (the result may be ``a`` itself,
overwritten). Ranks and the rendezvous address come from the variables torchrun and
``python -m wframe.distributed.launch`` set: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from typing import Any

import numpy as np

from wframe.backends import backend_of


def env_ranks() -> tuple[int, int, int, str, int]:
    """``(rank, size, local_rank, master_addr, master_port)`` from the environment (one
    process of rank 0 when ``WORLD_SIZE`` is unset)."""
    env = os.environ
    size, rank = int(env.get("WORLD_SIZE", "1")), int(env.get("RANK", "0"))
    local = int(env.get("LOCAL_RANK", str(rank)))
    if not 0 <= rank < size:
        raise ValueError(f"RANK={rank} must be in [0, WORLD_SIZE={size})")
    port = env.get("MASTER_PORT")
    if size > 1 and not port:
        raise ValueError(
            f"WORLD_SIZE={size} needs MASTER_ADDR and MASTER_PORT (where rank 0 listens); start "
            "the processes with python -m wframe.distributed.launch --nproc N script.py, or "
            "torchrun, which set them"
        )
    return rank, size, local, env.get("MASTER_ADDR", "127.0.0.1"), int(port or 0)


# ------------------------------------------------------------------------- rendezvous over TCP
def connect(rank: int, size: int, addr: str, port: int, timeout: float) -> list[socket.socket]:
    """Sockets between rank 0 and every other rank: rank 0 listens on ``(addr, port)`` and gets
    one per peer (ordered by rank, 1..size-1); the others connect, retrying until ``timeout``
    seconds have passed, and get the one to rank 0."""
    if rank == 0:
        peers: dict[int, socket.socket] = {}
        with socket.create_server((addr, port)) as server:
            server.settimeout(timeout)
            while len(peers) < size - 1:
                try:
                    conn, _ = server.accept()
                except TimeoutError as e:
                    raise TimeoutError(
                        f"rank 0: {len(peers)} of {size - 1} ranks connected to {addr}:{port} "
                        f"within {timeout} s"
                    ) from e
                _tune(conn, timeout)
                peers[struct.unpack("!i", _recv_exact(conn, 4))[0]] = conn
        return [peers[r] for r in range(1, size)]
    deadline = time.monotonic() + timeout
    while True:
        try:
            left = max(deadline - time.monotonic(), 1.0)
            conn = socket.create_connection((addr, port), timeout=left)
            break
        except OSError as e:  # rank 0 not listening yet
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"rank {rank}: no rank 0 at {addr}:{port} within {timeout} s"
                ) from e
            time.sleep(0.05)
    _tune(conn, timeout)
    conn.sendall(struct.pack("!i", rank))
    return [conn]


def _tune(conn: socket.socket, timeout: float) -> None:
    conn.settimeout(timeout)  # a rank that died fails the others instead of hanging them
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small messages, no batching


def send(conn: socket.socket, payload: bytes | memoryview) -> None:
    """One message: its length (8 bytes) and its bytes."""
    conn.sendall(struct.pack("!q", len(payload)))
    conn.sendall(payload)


def recv(conn: socket.socket) -> bytearray:
    """The next message's bytes."""
    (n,) = struct.unpack("!q", _recv_exact(conn, 8))
    return _recv_exact(conn, n)


def _recv_exact(conn: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = conn.recv_into(view[got:])
        if not k:
            raise ConnectionError("a rank closed its connection (did it fail? see its output)")
        got += k
    return buf


# ------------------------------------------------------------------------- communicators
class TcpComm:
    """Collectives over TCP through rank 0 (a star: rank 0 sums in rank order and sends the
    total back, so every rank gets the same bits). For CPU runs and tests of
    :class:`~wframe.distributed.NcclDataParallel`; arrays go through the host.

    Args:
      rank, size: this process's rank and the number of ranks.
      addr, port: where rank 0 listens.
      timeout: seconds to wait for the other ranks, at the rendezvous and at each message.
    """

    def __init__(
        self, rank: int, size: int, addr: str = "127.0.0.1", port: int = 0, timeout: float = 300.0
    ):
        self.rank, self.size = rank, size
        self._socks = connect(rank, size, addr, port, timeout) if size > 1 else []

    @classmethod
    def from_env(cls, timeout: float = 300.0) -> TcpComm:
        rank, size, _, addr, port = env_ranks()
        return cls(rank, size, addr, port, timeout)

    def __repr__(self) -> str:
        return f"TcpComm(rank {self.rank} of {self.size})"

    def all_reduce(self, a: Any) -> Any:
        if self.size == 1:
            return a
        host = _to_host(a)
        if self.rank == 0:
            total = host
            for conn in self._socks:
                total = total + _from_bytes(recv(conn), host)
            for conn in self._socks:
                send(conn, memoryview(np.ascontiguousarray(total)).cast("B"))
        else:
            send(self._socks[0], memoryview(np.ascontiguousarray(host)).cast("B"))
            total = _from_bytes(recv(self._socks[0]), host)
        return _like(a, total)

    def broadcast(self, a: Any, root: int = 0) -> Any:
        if root != 0:
            raise ValueError(f"TcpComm broadcasts from rank 0 only, got root={root}")
        if self.size == 1:
            return a
        host = _to_host(a)
        if self.rank == 0:
            for conn in self._socks:
                send(conn, memoryview(np.ascontiguousarray(host)).cast("B"))
            return a
        return _like(a, _from_bytes(recv(self._socks[0]), host))

    def close(self) -> None:
        for conn in self._socks:
            conn.close()
        self._socks = []


def _to_host(a: Any) -> np.ndarray:

    return np.asarray(backend_of(a).to_numpy(a))


def _from_bytes(buf: bytearray, like: np.ndarray) -> np.ndarray:
    if len(buf) != like.nbytes:
        raise ValueError(
            f"ranks disagree: got {len(buf)} bytes for an array of {like.nbytes} bytes "
            f"({like.dtype}{list(like.shape)}); every rank must run the same model and steps"
        )
    return np.frombuffer(buf, dtype=like.dtype).reshape(like.shape)


def _like(a: Any, host: np.ndarray) -> Any:

    return host if isinstance(a, np.ndarray | np.generic) else backend_of(a).asarray(host)


class NcclComm:
    """NCCL collectives among one process per GPU (``cupy.cuda.nccl.NcclCommunicator``), on
    CuPy arrays and the current stream. Not yet run on GPUs: written against CuPy's documented
    API (``get_unique_id``, ``NcclCommunicator(ndev, commId, rank)``, ``allReduce``,
    ``broadcast``) and tested only through its CPU-side rendezvous.

    Args:
      rank, size: this process's rank and the number of ranks.
      unique_id: :func:`cupy.cuda.nccl.get_unique_id` of rank 0, the same on every rank.
      device: this process's GPU (made current before the communicator is created).
    """

    def __init__(self, rank: int, size: int, unique_id: Any, device: int):
        import cupy
        from cupy.cuda import nccl

        cupy.cuda.Device(device).use()  # NCCL binds the communicator to the current device
        self.rank, self.size, self.device = rank, size, device
        self._cupy, self._nccl = cupy, nccl
        self._comm = nccl.NcclCommunicator(size, unique_id, rank)

    @classmethod
    def from_env(cls, timeout: float = 300.0) -> NcclComm:
        """This process's communicator: GPU ``LOCAL_RANK`` made current, rank 0's unique id
        sent to the other ranks over TCP (``MASTER_ADDR:MASTER_PORT``)."""
        try:
            import cupy
        except ImportError as e:
            raise ImportError(
                "NcclDataParallel's NCCL communicator needs cupy (pip install 'wframe[cuda12]'); "
                "on CPU use NcclDataParallel(comm='tcp')"
            ) from e
        if not getattr(cupy.cuda, "nccl_enabled", False):
            raise RuntimeError(
                "cupy finds no NCCL library (cupy.cuda.nccl_enabled is False); install it "
                "(pip install nvidia-nccl-cu12) or use NcclDataParallel(comm='tcp')"
            )
        from cupy.cuda import nccl

        rank, size, local, addr, port = env_ranks()
        count = cupy.cuda.runtime.getDeviceCount()
        if local >= count:
            raise ValueError(
                f"LOCAL_RANK={local} but this machine has {count} GPUs visible; "
                "start at most one process per GPU"
            )
        cupy.cuda.Device(local).use()
        if size == 1:
            return cls(rank, size, nccl.get_unique_id(), local)
        socks = connect(rank, size, addr, port, timeout)
        try:
            if rank == 0:
                uid = nccl.get_unique_id()
                # A tuple of C chars (-128..127) in CuPy <= 13, bytes in later versions.
                message = json.dumps({"bytes": isinstance(uid, bytes), "id": list(uid)})
                for conn in socks:
                    send(conn, message.encode())
            else:
                got = json.loads(recv(socks[0]).decode())
                uid = bytes(got["id"]) if got["bytes"] else tuple(got["id"])
        finally:
            for conn in socks:
                conn.close()
        return cls(rank, size, uid, local)

    def __repr__(self) -> str:
        return f"NcclComm(rank {self.rank} of {self.size}, GPU {self.device})"

    def _call(self, a: Any) -> tuple[Any, int, int]:
        types = {
            "e": "NCCL_FLOAT16",
            "f": "NCCL_FLOAT32",
            "d": "NCCL_FLOAT64",
            "i": "NCCL_INT32",
            "l": "NCCL_INT64",
            "q": "NCCL_INT64",
            "B": "NCCL_UINT8",
        }
        name = types.get(a.dtype.char)
        if name is None:
            raise TypeError(f"NcclComm: no NCCL type for dtype {a.dtype}")
        return a, getattr(self._nccl, name), self._cupy.cuda.get_current_stream().ptr

    def all_reduce(self, a: Any) -> Any:
        a, dtype, stream = self._call(self._cupy.ascontiguousarray(a))
        self._comm.allReduce(a.data.ptr, a.data.ptr, a.size, dtype, self._nccl.NCCL_SUM, stream)
        return a

    def broadcast(self, a: Any, root: int = 0) -> Any:
        a, dtype, stream = self._call(self._cupy.array(a, copy=True, order="C"))
        self._comm.broadcast(a.data.ptr, a.data.ptr, a.size, dtype, root, stream)
        return a

    def close(self) -> None:
        self._comm.destroy()
