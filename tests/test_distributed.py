"""Data parallelism on JAX: a fresh process with 4 forced CPU devices trains with
wf.distributed.DataParallel and must equal single-device training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import wframe as wf

SCRIPT = Path(__file__).parent / "_dp_script.py"


@pytest.fixture(scope="module")
def results():
    if "jax" not in wf.available():
        pytest.skip("jax unavailable")
    pytest.importorskip("sklearn")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True,
                         text=True, timeout=300, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model", ["mlp", "cnn"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("spe", ["1", "epoch"])
def test_twenty_data_parallel_steps_equal_single_device(results, model, optimizer, spe):
    run = results[f"{model}/{optimizer}/{spe}"]
    assert results["devices"] == 4
    assert run["max_diff"] < 1e-5  # with Dropout: the masks are the single-device ones
    np.testing.assert_allclose(run["loss"][0], run["loss"][1], rtol=1e-5)
    assert run["replicated"]  # params whole on each of the 4 devices


def test_the_step_is_partitioned_by_xla(results):
    assert results["all_reduce"]  # the gradient all-reduce XLA inserted


def test_digits_epoch_reaches_the_same_accuracy(results):
    single, multi = results["digits_accuracy"]
    assert abs(single - multi) < 1e-6 and single > 0.85


def test_batches_that_do_not_divide_are_refused(results):
    assert results["indivisible"].startswith(
        "fit: with 4 devices every batch must divide evenly over them, but the last batch of 14 "
        "examples (78 % 16) do not"
    )


def test_data_parallel_needs_a_jax_model(jax):
    x, y = np.zeros((8, 2), np.float32), np.zeros(8, int)
    with wf.use_backend("numpy"):
        model = wf.Sequential([wf.layers.Dense(2)])
        with pytest.raises(ValueError, match="needs a model on the jax backend, but it lives on "
                           "'numpy'"):  # fmt: skip
            model.fit(x, y, verbose=0, strategy=wf.distributed.DataParallel())
    with pytest.raises(TypeError, match="strategy must be a wf.distributed.DataParallel"):
        model.fit(x, y, verbose=0, strategy="mirrored")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_on_loopback_train_as_one_device(jax):
    """jax.distributed over 127.0.0.1: 2 processes x 2 CPU devices, 20 data-parallel steps,
    equal to single-process training; both processes always reaped."""
    pytest.importorskip("jax")
    script = Path(__file__).parent / "_mh_script.py"
    port = str(_free_port())
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [subprocess.Popen([sys.executable, str(script), port, str(i)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]  # fmt: skip
    try:
        outs = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    runs = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert [r["processes"] for r in runs] == [2, 2] and runs[0]["devices"] == 4
    assert [r["writer"] for r in runs] == [True, False]
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((80, 6)).astype(np.float32), rng.integers(0, 3, 80)
    with wf.use_backend("jax"):
        model = wf.Sequential([wf.layers.Dense(16, activation="relu"), wf.layers.Dropout(0.3),
                               wf.layers.Dense(3)], seed=2)  # fmt: skip
        model.fit(x, y, epochs=4, batch_size=16, optimizer="adam", verbose=0)
    for run in runs:
        for name, value in run["params"].items():
            layer, param = name.split("/")
            np.testing.assert_allclose(value, np.asarray(model.params[layer][param]), rtol=1e-5,
                                       atol=1e-6)  # fmt: skip


def test_a_two_by_two_data_by_model_mesh_gives_the_same_result(results):
    run = results["model_parallel"]
    assert run["split"] and run["max_diff"] < 1e-5  # dense_0/W split over "model"
    assert results["bad_rule"].startswith(
        "ModelParallel: rule P(None, 'model') for 'dense_1/W' splits axis 1 in 2, but the param "
        "has shape (16, 3)"
    )
