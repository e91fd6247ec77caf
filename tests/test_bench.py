"""The benchmark suite: one quick smoke run as a user runs it (a subprocess, from outside the
repository), and its timing and verdict logic in-process with a fake clock. No test asserts
anything about how fast something is."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

import wframe as wf
from wframe import bench
from wframe.bench import report, runners_peers, runners_reference, runners_wframe
from wframe.bench.timing import Row, Timer, ratio
from wframe.bench.workloads import TARGETS, WORKLOADS, get, initial_params, make_data
from wframe.testing import assert_close

RECORD_KEYS = {
    "workload",
    "mode",
    "runner",
    "impl",
    "backend",
    "median_ms",
    "min_ms",
    "max_ms",
    "round_ms",
    "cold_ms",
    "ratio",
    "ratio_min",
    "ratio_max",
    "ref",
    "samples_per_s",
    "gflops",
    "peak_fraction",
    "memory",
    "loss0",
    "loss0_rel_diff",
}


def test_quick_run_writes_records_table_and_environment(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("WFRAME_BACKEND", "JAX_ENABLE_X64")}
    args = ["--quick", "--workloads", "mlp_small,cnn", "--backends", "numpy"]
    out = subprocess.run(
        [sys.executable, "-m", "wframe.bench", *args, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads((tmp_path / "bench.json").read_text())
    records = doc["records"]
    assert {(r["workload"], r["mode"]) for r in records} == {
        ("mlp_small", "step"),
        ("mlp_small", "epoch"),
        ("cnn", "step"),
        ("cnn", "epoch"),
    }
    for r in records:
        assert RECORD_KEYS <= set(r), RECORD_KEYS - set(r)
        assert r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        assert len(r["round_ms"]) == doc["settings"]["rounds"] == 2
        assert r["cold_ms"] > 0 and r["loss0_rel_diff"] < 1e-3  # same weights, same data
    runners = {r["runner"] for r in records}
    assert {"wframe[numpy]", "reference[numpy]"} <= runners
    ratioed = [r for r in records if r["runner"] == "wframe[numpy]"]
    assert all(r["ref"] == "reference[numpy]" and r["ratio"] > 0 for r in ratioed)
    env_block = doc["environment"]
    for key in ("cpu", "cpus", "versions", "thread_env", "gpu", "python"):
        assert key in env_block
    assert "numpy" in env_block["versions"] and "numpy" in doc["gemm_peak"]
    assert {t["workload"] for t in doc["targets"]} == {t[0] for t in TARGETS}
    table = (tmp_path / "bench.md").read_text()
    assert table.splitlines()[2].startswith("| workload | mode | runner | median ms")
    assert "| mlp_small | step | wframe[numpy] |" in table
    assert "- target mlp_small step: wframe[numpy] <= 1.50x reference[numpy]:" in table
    assert "- machine:" in table
    # a smoke test, said so; no verdict from 2 rounds of noise
    assert table.startswith(report.QUICK_NOTE) and "not measurements to quote" in out.stderr
    assert {t["status"] for t in doc["targets"]} <= {report.QUICK_STATUS, "not measured"}
    assert "MET" not in table and "MISSED" not in table and "missed" not in table
    assert "reference[numpy]: " in table and "not judged (--quick: a smoke test)" in table


def test_quick_scaling_table_runs_each_device_count_in_its_own_process(tmp_path):
    """--workloads scaling: 1, 2 and 4 forced CPU devices, each count a process of its own,
    DataParallel next to no strategy; into the same JSON and Markdown."""
    if "jax" not in wf.available():
        pytest.skip("the scaling table needs jax")
    env = {k: v for k, v in os.environ.items() if k != "WFRAME_BACKEND"}  # (XLA_FLAGS: conftest)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "wframe.bench",
            "--quick",
            "--workloads",
            "scaling",
            "--rounds",
            "1",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads((tmp_path / "bench.json").read_text())
    recs = doc["scaling"]["records"]
    assert doc["records"] == [] and doc["scaling"]["workload"] == "mlp_large"
    assert [(r["devices"], r["runner"]) for r in recs] == [
        (1, "off"),
        (1, "DataParallel(1)"),
        (2, "off"),
        (2, "DataParallel(2)"),
        (4, "off"),
        (4, "DataParallel(4)"),
    ]
    assert all(r["steps_per_s"] > 0 and r["platform"].startswith("cpu") for r in recs)
    assert all((r["ratio"] is None) == (r["runner"] == "off") for r in recs)
    target = doc["scaling"]["target"]
    assert target["runner"] == "DataParallel(1)" and target["status"] != "not measured"
    table = (tmp_path / "bench.md").read_text()
    assert "| devices | runner | ms/epoch |" in table and "| 4 | DataParallel(4) |" in table
    assert "- target scaling epoch: DataParallel(1) <= 1.05x off:" in table
    assert "this shows the strategy's overhead, not a speed-up" in table


# ------------------------------------------------------------------ timing, with a fake clock
class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def fake_row(clock, log, label, durations, ref=None):
    """A row whose n-th call takes ``durations[n]`` seconds (the last one repeats)."""

    def make():
        calls = iter(durations)
        last = [durations[-1]]

        def run():
            last[0] = next(calls, last[0])
            log.append(label)
            clock.now += last[0]
            return 1.0

        return run

    return Row(label, "wframe", "numpy", make, ref=ref)


def test_rows_interleave_in_rotating_rounds_and_report_round_medians():
    clock, log, notes = FakeClock(), [], []
    timer = Timer(
        rounds=3,
        chunk_s=0.375,
        max_reps=10,
        pause_s=0.5,
        settle_below_s=0.0,
        clock=clock,
        sleep=clock.sleep,
    )
    # Durations in s (binary fractions, so the fake clock is exact). a: cold 2, three warm calls
    # of 0.125 (reps = 0.375 / 0.125 = 3), then its three rounds of 3 calls.
    a = [2.0, 0.125, 0.125, 0.125, 0.125, 0.25, 0.125, 0.25, 0.25, 0.5, 0.125, 0.125, 0.125]
    # b: cold 1, warm calls 0.25 + 0.25 reach chunk_s (reps = ceil(1.5) = 2), rounds of 2 calls.
    b = [1.0, 0.25, 0.25, 0.25, 0.5, 0.5, 0.5, 0.75, 0.75]
    rows = [fake_row(clock, log, "a", a), fake_row(clock, log, "b", b, ref="a")]

    def broken():
        raise RuntimeError("no device")

    rows.append(Row("c", "torch", "torch", broken))
    res = timer.measure(rows, notes, tag="w step: ")
    assert list(res) == ["a", "b"] and notes == ["w step: c: skipped (RuntimeError: no device)"]
    ra, rb = res["a"], res["b"]
    assert (ra["cold_ms"], rb["cold_ms"]) == (2000, 1000)
    assert (ra["warm_ms"], ra["reps"], rb["warm_ms"], rb["reps"]) == (125, 3, 250, 2)
    # set-up: a's cold + 3 warm calls, b's cold + 2; then the rounds start at a, b, a in turn
    assert log[:7] == ["a"] * 4 + ["b"] * 3
    assert log[7:] == [*"aaabb", *"bbaaa", *"aaabb"]
    assert ra["round_ms"] == [125, 250, 125] and rb["round_ms"] == [375, 500, 750]
    assert (ra["median_ms"], ra["min_ms"], ra["max_ms"], ra["n"]) == (125, 125, 250, 9)
    assert (rb["median_ms"], rb["min_ms"], rb["max_ms"], rb["n"]) == (500, 375, 750, 6)
    # paired by round: 375/125, 500/250, 750/125
    assert ratio(rb["round_ms"], ra["round_ms"]) == (3.0, 2.0, 6.0)


def test_a_row_too_slow_to_repeat_sits_out_the_rounds():
    clock, log, notes = FakeClock(), [], []
    timer = Timer(
        rounds=2, chunk_s=0.25, pause_s=0.0, max_call_s=1.0, clock=clock, sleep=clock.sleep
    )
    rows = [
        fake_row(clock, log, "fast", [0.5, 0.25]),
        fake_row(clock, log, "cold", [4.0]),  # not called again after its cold call
        fake_row(clock, log, "warm", [0.5, 2.0]),  # one warm call, then no more
    ]
    res = timer.measure(rows, notes)
    assert log.count("cold") == 1 and log.count("warm") == 2
    assert res["cold"]["round_ms"] == [4000] and res["warm"]["round_ms"] == [2000]
    assert not res["cold"]["in_rounds"] and res["fast"]["in_rounds"]
    assert [res[k]["cold_only"] for k in ("fast", "cold", "warm")] == [False, True, False]
    assert res["fast"]["round_ms"] == [250, 250]
    assert notes == [
        "cold: 4.0 s per call (> 1.0 s): timed by its cold call (compilation included) alone, "
        "not in the rounds",
        "warm: 2.0 s per call (> 1.0 s): timed by one warm call alone, not in the rounds",
    ]


def test_target_verdicts_use_the_spread_over_rounds():
    def rec(runner, rounds):
        return {"workload": "mlp_large", "mode": "step", "runner": runner, "round_ms": rounds}

    ref = rec("reference[numpy]", [10.0, 10.0, 10.0])
    cases = {
        "met": [10.0, 10.4, 9.0],  # median ratio 1.00 <= 1.05
        "missed within noise": [11.0, 10.2, 11.5],  # median 1.10, best round 1.02
        "MISSED": [12.0, 11.0, 13.0],  # every round above 1.05
    }
    for status, rounds in cases.items():
        verdicts = report.targets([ref, rec("wframe[numpy]", rounds)])
        (v,) = [t for t in verdicts if t["runner"] == "wframe[numpy]" and t["ratio"] is not None]
        assert v["status"] == status, (status, v)
    assert all(t["status"] == "not measured" for t in report.targets([ref])[2:])


def test_a_cold_row_gets_no_ratio_verdict_or_bar(tmp_path):
    """A row timed by its cold call alone (compilation included) is no measurement of a step:
    no ratio (it read 2245x), no target verdict, no bar in the chart."""

    def rec(runner, ms, ref=None, cold_only=False):
        return {
            "workload": "mlp_small",
            "mode": "step",
            "runner": runner,
            "impl": "wframe" if runner.startswith("wframe") else "reference",
            "ref": ref,
            "round_ms": [ms],
            "cold_only": cold_only,
        }

    ref = rec("reference[numpy]", 1.0)
    cold = rec("wframe[numpy]", 2245.0, "reference[numpy]", cold_only=True)
    records = [ref, cold]
    report.add_ratios(records)
    assert cold["ratio"] is None and cold["ref"] == "reference[numpy]"
    (v,) = [t for t in report.targets(records) if t["workload"] == "mlp_small"]
    assert v["status"] == "not measured (timed by a cold call alone)" and v["ratio"] is None
    assert not report.chart(records, tmp_path / "bench.png")  # nothing left to plot
    assert not (tmp_path / "bench.png").exists()
    warm = rec("wframe[numpy]", 1.5, "reference[numpy]")
    report.add_ratios([ref, warm])
    assert warm["ratio"] == 1.5


def test_quick_verdicts_are_not_judged():
    def rec(runner, rounds):
        return {"workload": "mlp_large", "mode": "step", "runner": runner, "round_ms": rounds}

    records = [rec("reference[numpy]", [10.0, 10.0]), rec("wframe[numpy]", [30.0, 31.0])]
    judged = report.targets(records)
    assert judged[0]["status"] == "MISSED"
    quick = report.unjudged(judged)
    assert quick[0]["status"] == report.QUICK_STATUS and quick[0]["ratio"] == judged[0]["ratio"]
    assert {t["status"] for t in quick[1:]} == {"not measured"}


def test_quick_and_check_together_are_refused(capsys):
    assert bench.main(["--quick", "--check", "--workloads", "mlp_small"]) == 2
    err = capsys.readouterr().err
    assert "--check judges the targets, which --quick does not" in err


def test_cli_reuses_the_arguments_and_refuses_unknown_names(capsys):
    parser = bench.add_arguments(argparse.ArgumentParser(prog="wframe bench"))
    args = parser.parse_args(["--quick", "--workloads", "cnn", "--check"])
    assert args.quick and args.check and args.workloads == "cnn"
    assert bench.main(["--workloads", "nope"]) == 2
    assert bench.main(["--backends", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_workloads_flops_and_quick_shapes():
    # 784-1024-1024-10 at batch 256: 2*m*(784*1024*2 + 1024*1024*3 + 1024*10*3)
    assert WORKLOADS["mlp_large"].flops(256) == 2 * 256 * (784 * 1024 * 2 + 1024**2 * 3 + 10240 * 3)
    for w in get(list(WORKLOADS), quick=True):
        assert w.flops(w.batch) > 0 and w.rows >= w.batch


# ------------------------------------------------------------------ the sequence workloads
SEQUENCE = ("attention", "embedding", "conv1d", "transformer", "graph")


def _steps(run, n=3) -> list[float]:
    """The losses of ``n`` calls of a row's ``run()`` (each one train step)."""
    return [float(run()) for _ in range(n)]


def _quick(name: str, **changes):
    """``(w, p0, x, y)`` of a quick workload: one batch of its seeded data, its weights."""
    w = replace(get([name], quick=True)[0], **changes)
    x, y, _ = make_data(w)
    return w, initial_params(w), x[: w.batch], y[: w.batch]


@pytest.mark.parametrize("name", ["attention", "embedding", "conv1d"])
def test_torch_twins_train_like_wframe(name):
    """Three wframe train steps (make_train_step, as the bench times them) give the losses of
    the PyTorch twin, which holds the same weights and sees the same batch. (The twin's weight
    layout is what is checked: NumPy's steps stand for every backend's, which the layers'
    own tests hold equal.)"""
    pytest.importorskip("torch")
    w, p0, x, y = _quick(name)
    ours = _steps(runners_wframe.step(w, "numpy", p0, x, y))
    assert ours[-1] < ours[0]  # it trains
    twin = _steps(runners_peers.torch_runner(w, p0, x, y, "step"))
    assert_close(np.array(ours), np.array(twin), rtol=1e-5, atol=1e-6)


def test_graph_workload_trains_like_its_sequential_twin(backend):
    """The functional MLP and the same chain as a Sequential: the same three losses."""
    w, p0, x, y = _quick("graph", data="random")  # no scikit-learn import for a test
    graph = _steps(runners_wframe.step(w, backend.name, p0, x, y))
    chain = _steps(runners_wframe.step(replace(w, kind="mlp"), backend.name, p0, x, y))
    assert graph[-1] < graph[0]
    assert_close(np.array(graph), np.array(chain), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["conv1d", "transformer"])
def test_plain_jax_references_train_like_wframe(jax, name):
    """The plain-JAX reference step (jax.jit of value_and_grad plus optax) gives wframe's
    NumPy losses: the same model, weights and data. The transformer's covers the attention's
    and the embedding's reference code too. SGD, whose steps follow the gradients' size (Adam's
    first steps follow only their signs), and a cheaper compilation."""
    w, p0, x, y = _quick(name, optimizer="sgd", lr=0.1)
    ours = _steps(runners_wframe.step(w, "numpy", p0, x, y))
    ref = _steps(runners_reference.jax_runner(w, p0, x, y, "step"))
    assert_close(np.array(ours), np.array(ref), rtol=1e-5, atol=1e-6)


def test_sequence_rows_divide_by_their_references():
    """Which row each new workload's rows divide by, and the graph's Sequential twins."""
    p0, x, y = {}, np.zeros((4, 2)), np.zeros(4)
    backends = ["numpy", "jax"]
    refs = {
        name: {
            r.label: r.ref for r in runners_wframe.rows(WORKLOADS[name], "step", backends, p0, x, y)
        }
        for name in SEQUENCE
    }
    assert refs["attention"] == {"wframe[numpy]": "torch[cpu]", "wframe[jax]": "reference[jax]"}
    assert refs["transformer"] == {"wframe[numpy]": None, "wframe[jax]": "reference[jax]"}
    assert refs["graph"] == {
        "wframe[numpy]": "wframe[numpy] sequential",
        "wframe[numpy] sequential": None,
        "wframe[jax]": "wframe[jax] sequential",
        "wframe[jax] sequential": None,
    }
    graph = runners_wframe.rows(WORKLOADS["graph"], "epoch", ["jax"], p0, x, y)
    assert [(r.label, r.extra.get("kind")) for r in graph] == [
        ("wframe[jax]", None),
        ("wframe[jax] sequential", "mlp"),
        ("wframe[jax] spe=epoch", None),
        ("wframe[jax] spe=epoch sequential", "mlp"),
    ]
    assert runners_reference.rows(WORKLOADS["graph"], "step", backends, p0, x, y) == []
    assert [
        r.label for r in runners_reference.rows(WORKLOADS["conv1d"], "step", backends, p0, x, y)
    ] == ["reference[jax]"]
    for w in get(list(SEQUENCE), quick=False):
        assert w.flops(w.batch) > 0 and w.describe()
