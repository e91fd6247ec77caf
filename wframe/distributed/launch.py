"""``python -m wframe.distributed.launch --nproc N script.py [args]``: N processes of a script
on this machine, one per GPU, for :class:`~wframe.distributed.NcclDataParallel`.

Each process gets torchrun's variables: ``RANK`` and ``LOCAL_RANK`` (0..N-1), ``WORLD_SIZE``
and ``LOCAL_WORLD_SIZE`` (N), ``MASTER_ADDR`` and ``MASTER_PORT`` (where rank 0 listens for
the rendezvous; a free port unless given). When one process fails, the others are stopped
(SIGTERM, then SIGKILL after ``--grace`` seconds) and the launcher exits with its status; every
process is always reaped.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time


def free_port(addr: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS's pick)."""
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def launch(
    script: list[str],
    nproc: int,
    *,
    addr: str = "127.0.0.1",
    port: int | None = None,
    grace: float = 5.0,
) -> int:
    """Run ``python *script`` in ``nproc`` processes; the first non-zero exit status, else 0."""
    port = port or free_port(addr)
    procs = []
    for rank in range(nproc):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(nproc),
            "LOCAL_WORLD_SIZE": str(nproc),
            "MASTER_ADDR": addr,
            "MASTER_PORT": str(port),
        }
        procs.append(subprocess.Popen([sys.executable, *script], env=env))
    status = 0
    try:
        while True:
            codes = [p.poll() for p in procs]  # every process's, each time
            failed = [c for c in codes if c not in (None, 0)]
            if failed or None not in codes:
                status = failed[0] if failed else 0
                break
            time.sleep(0.05)
    except KeyboardInterrupt:
        status = 130
    finally:
        _stop(procs, grace)
    return status


def _stop(procs: list[subprocess.Popen], grace: float) -> None:
    """Terminate what still runs, kill what outlives ``grace`` seconds, reap all."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wframe.distributed.launch",
        description="Run a script in N processes (one per GPU) with torchrun's variables.",
    )
    parser.add_argument("--nproc", type=int, required=True, help="processes (GPUs) to start")
    parser.add_argument("--master-addr", default="127.0.0.1", help="where rank 0 listens")
    parser.add_argument("--master-port", type=int, default=None, help="default: a free port")
    parser.add_argument(
        "--grace", type=float, default=5.0, help="seconds the others get to stop after one fails"
    )
    parser.add_argument("script", help="the Python script every process runs")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the script's arguments")
    args = parser.parse_args(argv)
    if args.nproc < 1:
        parser.error(f"--nproc must be at least 1, got {args.nproc}")
    return launch(
        [args.script, *args.args],
        args.nproc,
        addr=args.master_addr,
        port=args.master_port,
        grace=args.grace,
    )


if __name__ == "__main__":
    sys.exit(main())
