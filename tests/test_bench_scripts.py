"""The scripts in benchmarks/ as thin callers of the suite, the fit workloads' references and
``--baseline`` (two checkouts' rows in worker processes). Quick settings, subprocesses where a
user runs them; no test asserts anything about how fast something is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import wframe as wf
from wframe import bench
from wframe.bench import runners_reference, runners_wframe, workloads

ROOT = Path(wf.__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent.parent / "benchmarks"
JAX = "jax" in wf.available()


def run(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("WFRAME_BACKEND", "JAX_ENABLE_X64")}
    out = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_bench_fit_is_the_suite_with_the_fit_workloads(tmp_path):
    args = ["--quick", "--workloads", "fit_digits_sgd", "--backends", "numpy", "--rounds", "1"]
    run([str(SCRIPTS / "bench_fit.py"), *args, "--out", str(tmp_path)], tmp_path)
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert doc["settings"]["peers"] == ["keras"] and doc["settings"]["baseline"] is None
    runners = {r["runner"]: r for r in doc["records"]}
    assert set(runners) == {"wframe[numpy]", "reference[numpy]"}
    assert runners["wframe[numpy]"]["ref"] == "reference[numpy]"
    assert runners["wframe[numpy]"]["loss0_rel_diff"] < 1e-4  # same weights, same shuffle
    assert "references log no metric" in doc["workloads"]["fit_digits_sgd"]
    targets = {(t["workload"], t["mode"], t["runner"], t["ref"]) for t in doc["targets"]}
    assert ("fit_digits", "epoch", "wframe[numpy]", "reference[numpy]") in targets
    assert ("fit_digits", "epoch", "wframe[jax] spe=epoch", "reference[jax] scan") in targets


def test_epoch_references_log_the_accuracy_fit_logs():
    (w,) = workloads.get(["fit_digits"], quick=True)
    x, y, _ = workloads.make_data(w)
    p0 = workloads.initial_params(w)
    with wf.use_backend("numpy"):
        model = w.model()
        history = model.fit(x, y, epochs=1, batch_size=w.batch, optimizer="adam", verbose=0)
    want = history.history
    refs = [runners_reference.xp_epoch(w, np, p0, x, y)]
    if JAX:
        refs += [runners_reference.jax_runner(w, p0, x, y, m) for m in ("epoch", "scan")]
    for ref in refs:
        ref()
        assert ref.logs["loss"] == pytest.approx(want["loss"][0], rel=1e-4)
        assert ref.logs["accuracy"] == pytest.approx(want["accuracy"][0], abs=2 / len(x))
    sgd = workloads.get(["fit_digits_sgd"], quick=True)[0]
    lean = runners_reference.xp_epoch(sgd, np, p0, x, y)
    lean()
    assert lean.logs["accuracy"] is None
    assert not runners_reference.uses_metric(w, "step")


def test_baseline_times_each_checkouts_rows_in_its_own_worker(tmp_path):
    """The same checkout as its own baseline: both workers import it, the rows of both take
    turns with the reference, and the two agree on the first loss."""
    args = ["-m", "wframe.bench", "--quick", "--workloads", "fit_digits", "--backends", "numpy"]
    args += ["--peers", "none", "--rounds", "1", "--baseline", str(ROOT), "--out", str(tmp_path)]
    run(args, tmp_path)
    doc = json.loads((tmp_path / "bench.json").read_text())
    runners = {(r["mode"], r["runner"]): r for r in doc["records"]}
    for mode in ("step", "epoch"):
        after, before = runners[mode, "wframe[numpy]"], runners[mode, "wframe[numpy] before"]
        assert after["loss0"] == before["loss0"] and before["ref"] == "reference[numpy]"
        assert after["memory"] == {} and runners[mode, "reference[numpy]"]["memory"]
    (mine,) = [t for t in doc["after_before"] if t["mode"] == "epoch"]
    assert mine["runner"] == "wframe[numpy]" and mine["ratio"] > 0
    imported = str(ROOT / "wframe" / "__init__.py")
    assert {t["wframe"] for t in doc["settings"]["trees"].values()} == {imported}
    table = (tmp_path / "bench.md").read_text()
    assert "| fit_digits | epoch | wframe[numpy] before |" in table
    assert "After / before" in table and "- before: " in table


def test_baseline_must_be_a_checkout(tmp_path, capsys):
    assert bench.main(["--quick", "--workloads", "fit_digits", "--baseline", str(tmp_path)]) == 2
    assert "holds no wframe/__init__.py" in capsys.readouterr().err


def test_wframe_rows_say_how_a_worker_makes_them_again():
    (w,) = workloads.get(["fit_digits"], quick=True)
    x, y, _ = workloads.make_data(w)
    rows = runners_wframe.rows(w, "epoch", ["numpy", "jax"], {}, x, y)
    assert [(r.label, r.extra) for r in rows] == [
        ("wframe[numpy]", {"mode": "epoch", "spe": 1}),
        ("wframe[jax]", {"mode": "epoch", "spe": 1}),
        ("wframe[jax] spe=epoch", {"mode": "epoch", "spe": "epoch"}),
    ]


@pytest.mark.parametrize(
    "script, args, heading",
    [
        ("bench_freeze.py", ["--rows", "256"], "| backend | trainable |"),
        ("bench_precision.py", ["--rows", "256", "--width", "32"], "| backend | dtype |"),
        ("bench_layers.py", ["--layers", "dense"], "| layer | input |"),
    ],
)
def test_scripts_time_with_the_suite(tmp_path, script, args, heading):
    extra = ["--out", str(tmp_path)] if script == "bench_layers.py" else []
    # numpy alone (jax only adds compilations here): the plumbing is what is tested.
    args = [*args, "--rounds", "1", "--backends", "numpy", *extra]
    out = run([str(SCRIPTS / script), *args], tmp_path)
    assert heading in out.stdout and ("| numpy |" in out.stdout or "| dense |" in out.stdout)
