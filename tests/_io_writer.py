"""Writer process for tests/test_io_kill.py (not a test): ``python tests/_io_writer.py PATH``.

For each line read on stdin it forks one writer, prints the writer's pid, waits for it to die
and prints its exit code (``-9`` once the test has killed it). A writer rewrites PATH with
versions A and B in turn, forever. Imports only NumPy and wframe.io (never jax), and forks so
that each kill costs milliseconds instead of an interpreter start.
"""

from __future__ import annotations

import os
import sys
import traceback

import numpy as np

from wframe.saving.io import write_safetensors


def version(tag: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors and metadata of version ``tag`` ("A": 2.4 MB, "B": 3.6 MB); every byte of
    the data tells the versions apart, and so do the shapes and the metadata."""
    n = 400_000 if tag == "A" else 600_000
    sign = 1 if tag == "A" else -1
    return (
        {
            "w": np.full(n, 1.0 if tag == "A" else 2.0, np.float32),
            "i": sign * np.arange(n // 4, dtype=np.int64),
            "tag": np.frombuffer(tag.encode() * 8, np.uint8).copy(),
        },
        {"version": tag},
    )


def main(path: str) -> None:
    versions = [version("A"), version("B")]
    for _ in sys.stdin:
        pid = os.fork()
        if pid == 0:
            try:
                for i in range(10**9):
                    write_safetensors(path, *versions[i % 2])
            except BaseException:
                traceback.print_exc()
            os._exit(1)
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
