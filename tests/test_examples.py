"""The examples reach their promised test accuracy on numpy and on jax."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import wframe as wf

EXAMPLES = Path(__file__).parent.parent / "examples"
TARGETS = {
    "train_digits.py": 0.95,
    "cnn_digits.py": 0.97,
    "rnn_digits.py": 0.93,
    "residual_digits.py": 0.95,
}


@pytest.mark.parametrize("backend_name", ["numpy", "jax"])
@pytest.mark.parametrize("script", sorted(TARGETS))
def test_example_reaches_its_accuracy(script, backend_name):
    pytest.importorskip("sklearn")
    if backend_name not in wf.available():
        pytest.skip(f"backend {backend_name!r} unavailable")
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--verbose", "0"],
        env={**os.environ, "WFRAME_BACKEND": backend_name},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    match = re.search(rf"backend {backend_name}: test accuracy (\S+)", out.stdout)
    assert match, out.stdout
    assert float(match.group(1)) >= TARGETS[script]
