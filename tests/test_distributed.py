"""wframe.distributed: data (and model) parallelism on JAX in a fresh process with 4 forced
CPU devices and in two processes over loopback, each equal to single-device training, predict
and evaluate included; NcclDataParallel's logic on NumPy ranks over TCP, its launcher, and
(with 2 GPUs) NCCL itself."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import wframe as wf

SCRIPT = Path(__file__).parent / "_dp_script.py"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """The script's results, computed once per test session: the xdist workers that run this
    module's tests share them through a locked file (each run costs ~35 s of compilation)."""
    if "jax" not in wf.available():
        pytest.skip("jax unavailable")
    pytest.importorskip("sklearn")
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # this session's
    path = shared / "dp_results.json"
    with open(shared / "dp_results.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not path.exists():
            path.write_text(_run_script())
    return json.loads(path.read_text())


def _run_script() -> str:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run(
        [sys.executable, str(SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


# Each optimizer and steps_per_execution once on the MLP; the CNN (sharded convolutions) once,
# with adam over a whole epoch per call: each pair of fits costs ~5 s of compilation.
@pytest.mark.parametrize(
    ("model", "optimizer", "spe"),
    [("mlp", "sgd", "1"), ("mlp", "adam", "epoch"), ("cnn", "adam", "epoch")],
)
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


def test_predict_evaluate_and_validation_under_the_strategies_equal_single_device(results):
    run = results["inference"]
    # 83 rows over 4 devices, padded and masked: the unpadded results, to float32 rounding
    assert run["mlp"] < 1e-6 and run["cnn"] < 1e-6 and run["model_parallel"] < 1e-6
    assert run["history_keys"] == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert run["history"] < 1e-6  # fit's validation runs under the strategy too
    assert run["per_process"] < 1e-6  # per-process data in one process: the same training


def test_batches_that_do_not_divide_are_refused(results):
    assert results["indivisible"].startswith(
        "fit: with 4 devices every batch must divide evenly over them, but the last batch of 14 "
        "examples (78 % 16) do not"
    )
    assert results["indivisible"].endswith(
        "or DataParallel(..., drop_remainder=True) to leave each epoch's last partial batch out"
    )


def test_drop_remainder_leaves_the_last_partial_batch_out(results):
    run = results["drop_remainder"]
    assert run["max_diff"] < 1e-5  # 78 examples, unshuffled: the first 64 train, as alone
    assert run["steps"] == [8, 8]  # 4 full batches an epoch, 2 epochs
    assert run["repr"] == "DataParallel(4 devices: cpu, drop_remainder)"
    assert run["too_few"] == (
        "fit: DataParallel(4 devices: cpu, drop_remainder) drops each epoch's last partial "
        "batch, but 12 examples make no full batch of 16; pass at least 16 examples or use a "
        "smaller batch_size"
    )


def test_drop_remainder_plans_full_batches_and_drops_other_examples_each_epoch():
    from wframe.training.epoch_iterator import EpochIterator

    with wf.use_backend("numpy") as b:
        plan = EpochIterator(b, 78, 16, 1, shuffle=True, seed=0, drop_remainder=True)
        assert plan.steps == 4
        seen = []
        for epoch in range(2):
            calls = list(plan.calls(epoch))
            assert [c.spec.steps for c in calls] == [1] * 4 and calls[-1].done == 4
            rows = np.asarray(calls[0].order)
            assert rows.shape == (4, 16) and len(set(rows.ravel())) == 64
            seen.append(set(range(78)) - set(rows.ravel()))
        assert len(seen[0]) == 14 and seen[0] != seen[1]  # each epoch drops other examples
        whole = EpochIterator(b, 78, 16, "epoch", shuffle=False, seed=0, drop_remainder=True)
        (call,) = list(whole.calls(0))
        assert call.spec.steps == 4 and call.spec.tail == 0 and call.done == whole.steps == 4
    with pytest.raises(TypeError, match="drop_remainder must be True or False, got 'yes'"):
        wf.distributed.DataParallel(drop_remainder="yes")


def test_a_model_parallel_rule_that_matches_no_parameter_is_refused(jax):
    from jax.sharding import PartitionSpec as P

    x, y = np.zeros((8, 2), np.float32), np.zeros(8, int)
    rules = {"dense0/W": P(None, "model")}  # a typo of dense_0/W
    mp = wf.distributed.ModelParallel((1, 1), rules, devices=jax.devices()[:1])
    with wf.use_backend("jax"):
        model = _dense()
        with pytest.raises(ValueError) as err:
            model.fit(x, y, verbose=0, strategy=mp)
    assert str(err.value) == (
        "ModelParallel: rule 'dense0/W' matches no parameter; the model's parameters are "
        "'dense_0/W', 'dense_0/b', 'dense_1/W', 'dense_1/b'. Fix the glob (e.g. 'dense_*/W') "
        "or remove the rule"
    )


def test_data_parallel_needs_a_jax_model(jax):
    x, y = np.zeros((8, 2), np.float32), np.zeros(8, int)
    with wf.use_backend("numpy"):
        model = wf.Sequential([wf.layers.Dense(2)])
        with pytest.raises(
            ValueError, match="needs a model on the jax backend, but it lives on 'numpy'"
        ):
            model.fit(x, y, verbose=0, strategy=wf.distributed.DataParallel())
    with pytest.raises(TypeError, match="strategy must be a wf.distributed.DataParallel"):
        model.fit(x, y, verbose=0, strategy="mirrored")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def concatenated_fit(make, xs, ys, *, batch_size, epochs, **kwargs):
    """Single-process training whose every batch is the processes' (or ranks') batches
    concatenated in order: each process shuffles its share with fit's permutation of the
    epoch, takes batch_size / len(xs) rows per step. One fit call per epoch, unshuffled."""
    model, history = make(), {}
    n, b = len(xs[0]), batch_size // len(xs)
    for epoch in range(epochs):
        order = wf.random.generator(wf.random.fold_in(model.seed, epoch)).permutation(n)
        rows = [order[i : i + b] for i in range(0, n, b)]
        x = np.concatenate([a[r] for r in rows for a in xs])
        y = np.concatenate([a[r] for r in rows for a in ys])
        h = model.fit(x, y, epochs=1, batch_size=batch_size, shuffle=False, verbose=0, **kwargs)
        for k, v in h.history.items():
            history.setdefault(k, []).extend(v)
    return model, history


def assert_params(params, model, rtol=1e-5, atol=1e-6):
    for name, value in params.items():
        layer, param = name.split("/")
        np.testing.assert_allclose(
            value, np.asarray(model.params[layer][param]), rtol=rtol, atol=atol
        )


def test_two_processes_on_loopback_train_as_one_device(jax):
    """jax.distributed over 127.0.0.1: 2 processes x 2 CPU devices, 20 data-parallel steps
    (every process with all the data, then each with its own half) equal single-process
    training, and so do predict and evaluate; both processes always reaped."""
    pytest.importorskip("jax")
    script = Path(__file__).parent / "_mh_script.py"
    port = str(_free_port())
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), port, str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outs = [p.communicate(timeout=240) for p in procs]
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
    xv, yv = rng.standard_normal((17, 6)).astype(np.float32), rng.integers(0, 3, 17)

    def mlp():
        return wf.Sequential(
            [wf.layers.Dense(16, activation="relu"), wf.layers.Dropout(0.3), wf.layers.Dense(3)],
            seed=2,
        )

    with wf.use_backend("jax"):
        model = mlp()
        model.fit(x, y, epochs=4, batch_size=16, optimizer="adam", verbose=0)
        pred, scores = np.asarray(model.predict(xv)), model.evaluate(xv, yv)
        own, history = concatenated_fit(
            mlp,
            [x[:40], x[40:]],
            [y[:40], y[40:]],
            batch_size=12,
            epochs=3,
            optimizer="adam",
            validation_data=(xv, yv),
        )
        own_pred, own_scores = np.asarray(own.predict(xv)), own.evaluate(xv, yv)
    for run in runs:
        assert_params(run["params"], model)
        np.testing.assert_allclose(run["predict"], pred, atol=1e-6)  # 17 rows on 4 devices
        for k, v in scores.items():
            assert abs(run["evaluate"][k] - v) < 1e-6
        # Each process its own half (validation shares of 10 and 7 rows): the same as one
        # process whose batches are the two halves' batches concatenated.
        assert_params(run["own"]["params"], own)
        assert run["own"]["history"].keys() == history.keys()
        for k, v in history.items():
            np.testing.assert_allclose(run["own"]["history"][k], v, rtol=1e-5, atol=1e-6)
        for k, v in own_scores.items():
            assert abs(run["own"]["evaluate"][k] - v) < 1e-6  # the mean over both shares
        assert run["unequal"] == (
            "fit: with per_process_data every process must pass as many examples and the same "
            "batch_size, got [36, 38] examples and batch sizes [12, 12] on processes 0..1"
        )
    mine = [own_pred[:10], own_pred[10:]]  # predict: each process its own rows
    for run, want in zip(runs, mine, strict=True):
        np.testing.assert_allclose(run["own"]["predict"], want, atol=1e-6)


def test_a_two_by_two_data_by_model_mesh_gives_the_same_result(results):
    run = results["model_parallel"]
    assert run["split"] and run["max_diff"] < 1e-5  # dense_0/W split over "model"
    assert results["bad_rule"].startswith(
        "ModelParallel: rule P(None, 'model') for 'dense_1/W' splits axis 1 in 2, but the param "
        "has shape (16, 3)"
    )


# ------------------------------------------------------------------------ NcclDataParallel
EXAMPLES = Path(__file__).parent.parent / "examples"


def _dense(seed=2):
    return wf.Sequential([wf.layers.Dense(16, activation="relu"), wf.layers.Dense(3)], seed=seed)


def test_nccl_data_parallel_on_two_tcp_ranks_equals_one_process(monkeypatch):
    """NcclDataParallel's step (gradients, loss, metric averaged in one all-reduce before
    clipping and the optimizer; the train state broadcast from rank 0) on NumPy, with the TCP
    communicator: 2 ranks in 2 threads, each with its half, equal one process whose batches
    are the halves' batches concatenated. Validation, evaluate and the History too."""
    import threading

    monkeypatch.setattr(wf.backends.process, "_group_rank", None)  # the ranks set it
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((80, 6)).astype(np.float32), rng.integers(0, 3, 80)
    xv, yv = rng.standard_normal((17, 6)).astype(np.float32), rng.integers(0, 3, 17)
    port, out = _free_port(), [{}, {}]
    fit = {"epochs": 3, "batch_size": 12, "optimizer": "adam", "global_clipnorm": 0.5}

    def rank(r):
        strategy = None
        try:
            strategy = wf.distributed.NcclDataParallel(
                wf.distributed.TcpComm(r, 2, "127.0.0.1", port, timeout=60)
            )
            mine, val = slice(40 * r, 40 * r + 40), slice(10 * r, 10 + 7 * r)
            with wf.use_backend("numpy"):
                model = _dense(seed=2 + 97 * r)  # rank 1's own weights: the broadcast wins
                h = model.fit(
                    x[mine],
                    y[mine],
                    seed=2,
                    verbose=0,
                    strategy=strategy,
                    validation_data=(xv[val], yv[val]),
                    **fit,
                )
                out[r]["history"], out[r]["params"] = h.history, model.params
                out[r]["evaluate"] = model.evaluate(xv[val], yv[val], strategy=strategy)
                try:
                    model.fit(
                        x[: 38 + 2 * r],
                        y[: 38 + 2 * r],
                        batch_size=12,
                        verbose=0,
                        strategy=strategy,
                    )
                except ValueError as e:
                    out[r]["unequal"] = str(e)
        except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
            out[r]["error"] = e
        finally:
            if strategy is not None:
                strategy.close()

    threads = [threading.Thread(target=rank, args=(r,), daemon=True) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a rank hung"
    for o in out:
        if "error" in o:
            raise o["error"]
    with wf.use_backend("numpy"):
        ref, history = concatenated_fit(
            _dense, [x[:40], x[40:]], [y[:40], y[40:]], validation_data=(xv, yv), **fit
        )
        scores = ref.evaluate(xv, yv)
    assert sorted(history) == ["accuracy", "grad_norm", "loss", "val_accuracy", "val_loss"]
    for o in out:
        assert_params({f"{k}/{n}": a for k, v in o["params"].items() for n, a in v.items()}, ref)
        for k, v in history.items():
            np.testing.assert_allclose(o["history"][k], v, rtol=1e-5, atol=1e-6)
        assert all(abs(o["evaluate"][k] - v) < 1e-6 for k, v in scores.items())
        assert o["unequal"] == (
            "fit: every NcclDataParallel rank must pass as many examples and the same "
            "batch_size, got [38, 40] examples and batch sizes [12, 12] on ranks 0..1"
        )


def test_nccl_data_parallel_refuses_jax_models_and_odd_batches(jax, monkeypatch):
    monkeypatch.setattr(wf.backends.process, "_group_rank", None)
    one = wf.distributed.NcclDataParallel(wf.distributed.TcpComm(0, 1))  # a group of one
    x, y = np.zeros((8, 2), np.float32), np.zeros(8, int)
    with wf.use_backend("jax"):
        with pytest.raises(ValueError, match="use wf.distributed.DataParallel for jax models"):
            _dense().fit(x, y, verbose=0, strategy=one)
    with pytest.raises(ValueError, match="comm must be 'nccl', 'tcp' or a communicator"):
        wf.distributed.NcclDataParallel("mpi")
    with wf.use_backend("numpy"):  # a group of one is plain training
        a, b = _dense(), _dense()
        a.fit(x, y, verbose=0, batch_size=4, strategy=one)
        b.fit(x, y, verbose=0, batch_size=4)
        assert_params(
            {f"{k}/{n}": v for k, d in a.params.items() for n, v in d.items()}, b, rtol=0, atol=0
        )


def test_launch_runs_the_example_on_two_cpu_ranks_and_stops_a_failed_run(tmp_path):
    """python -m wframe.distributed.launch: torchrun's variables, the digits example over TCP
    (every rank ends with the same params), and a failing rank stops the others."""
    pytest.importorskip("sklearn")
    # Buffered output: each rank's lines reach the shared pipe whole (one write per flush).
    env = {k: v for k, v in os.environ.items() if k not in ("WFRAME_BACKEND", "PYTHONUNBUFFERED")}
    launch = [sys.executable, "-m", "wframe.distributed.launch", "--nproc", "2"]
    out = subprocess.run(
        [
            *launch,
            str(EXAMPLES / "nccl_digits.py"),
            "--comm",
            "tcp",
            "--epochs",
            "4",
            "--verbose",
            "0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    sums = sorted(re.findall(r"rank (\d): params checksum (\S+), writes files (\w+)", out.stdout))
    assert [(r, w) for r, _, w in sums] == [("0", "True"), ("1", "False")]
    assert sums[0][1] == sums[1][1]  # the same params on both ranks
    accuracy = float(re.search(r"2 ranks \(numpy\): test accuracy (\S+)", out.stdout).group(1))
    assert accuracy > 0.9
    script = tmp_path / "fails.py"
    script.write_text(
        "import os, sys, time\n"
        "e = os.environ\n"
        "line = ' '.join(e[k] for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR'))\n"
        "sys.stdout.write(line + '\\n')\n"  # one write: the lines do not mix
        "sys.stdout.flush()\n"
        f"ready = {str(tmp_path / 'ready')!r}\n"
        "if e['RANK'] == '0':\n"
        "    open(ready, 'w').close()\n"
        "    time.sleep(60)\n"
        "while not os.path.exists(ready):\n"  # rank 1 fails once rank 0 has written
        "    time.sleep(0.05)\n"
        "sys.exit(3)\n"
    )
    started = time.monotonic()
    out = subprocess.run(
        [*launch, "--grace", "1", str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 3 and time.monotonic() - started < 30
    assert sorted(line.split()[:2] for line in out.stdout.splitlines()) == [["0", "2"], ["1", "2"]]


@pytest.mark.gpu
def test_nccl_example_on_two_gpus():
    """The digits example with NCCL on 2 GPUs: the same params on both ranks, the accuracy."""
    pytest.importorskip("sklearn")
    cupy = pytest.importorskip("cupy", reason="NcclDataParallel's GPU test needs cupy and 2 GPUs")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # noqa: BLE001 - CUDA errors have no common base class
        pytest.skip(f"no CUDA device: {e}")
    if count < 2:
        pytest.skip(f"NcclDataParallel's test needs at least 2 GPUs, found {count}")
    if not cupy.cuda.nccl_enabled:
        pytest.skip("cupy was built without NCCL")
    env = {k: v for k, v in os.environ.items() if k not in ("WFRAME_BACKEND", "PYTHONUNBUFFERED")}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "wframe.distributed.launch",
            "--nproc",
            "2",
            str(EXAMPLES / "nccl_digits.py"),
            "--verbose",
            "0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    sums = re.findall(r"rank (\d): params checksum (\S+)", out.stdout)
    assert len(sums) == 2 and sums[0][1] == sums[1][1]
    accuracy = float(re.search(r"2 ranks \(cupy\): test accuracy (\S+)", out.stdout).group(1))
    assert accuracy > 0.95
