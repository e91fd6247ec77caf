"""Atomic writes under SIGKILL: a writer killed at a random moment while it rewrites a weights
file leaves exactly the previous version or the next one, never a torn file.

A killed writer may leave its temporary file (``.w.safetensors.*.tmp``) in the folder; that is
expected, and it is never read in place of the file nor in the way of later writes.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from _io_writer import version

from wframe.saving.io import read_safetensors, write_safetensors

KILLS = 50
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the writer forks (POSIX only)")


def check_exactly_one_version(path):
    tensors, metadata = read_safetensors(path)
    tag = metadata.get("version")
    assert tag in ("A", "B"), metadata
    expected, expected_metadata = version(tag)
    assert metadata == expected_metadata
    assert list(sorted(tensors)) == sorted(expected)
    for name, a in expected.items():
        assert tensors[name].dtype == a.dtype and tensors[name].shape == a.shape, name
        assert tensors[name].tobytes() == a.tobytes(), name
    return tag


def test_a_killed_writer_never_leaves_a_torn_file(tmp_path):
    path = tmp_path / "w.safetensors"
    env = dict(
        os.environ,
        OPENBLAS_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    rng = random.Random(0)
    seen: Counter[str] = Counter()
    start = time.monotonic()
    with subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "_io_writer.py"), str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    ) as server:
        pid = None
        try:
            for kill in range(KILLS):
                server.stdin.write("go\n")
                server.stdin.flush()
                pid = int(server.stdout.readline())
                if kill == 0:  # the first writer must finish one file before anything is read
                    deadline = time.monotonic() + 20
                    while not path.exists():
                        assert time.monotonic() < deadline, "the writer wrote no file in 20 s"
                        time.sleep(0.001)
                time.sleep(rng.uniform(0.0, 0.03))
                os.kill(pid, signal.SIGKILL)
                assert int(server.stdout.readline()) == -signal.SIGKILL  # killed, not crashed
                pid = None  # reaped: the number may be reused
                seen[check_exactly_one_version(path)] += 1
        finally:
            if pid is not None:  # a writer still running after a failed check
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            server.stdin.close()  # ends the server's loop
            server.wait(timeout=10)
    elapsed = time.monotonic() - start
    assert elapsed < 30, f"{KILLS} kills took {elapsed:.1f} s"
    assert seen["A"] and seen["B"], seen
    leftovers = sorted(set(os.listdir(tmp_path)) - {"w.safetensors"})
    assert all(n.startswith(".w.safetensors.") and n.endswith(".tmp") for n in leftovers)
    assert leftovers, "no kill landed in the middle of a write"
    # Later writes and reads go on as usual beside the leftovers.
    write_safetensors(path, {"x": np.arange(3)}, {"version": "C"})
    tensors, metadata = read_safetensors(path)
    assert metadata == {"version": "C"} and tensors["x"].tolist() == [0, 1, 2]
