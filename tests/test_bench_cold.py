"""The ``cold`` workload of the benchmark suite: its ratios and verdicts from the workers'
measurements (faked here: a real run starts fresh JAX processes, seconds each), and its place in
``python -m wframe bench`` (JSON, Markdown, targets). No test asserts how fast anything is."""

from __future__ import annotations

import json

import pytest

import wframe as wf
from wframe import bench
from wframe.bench import cold


def _fake_spawn(first_second: dict):
    """``_spawn`` answering from canned seconds: per kind, the processes' results in order."""
    calls = []

    def spawn(kind, quick, env, models, warm):
        calls.append((kind, env.get("WFRAME_JIT_CACHE"), env.get("WFRAME_CACHE_DIR")))
        return first_second[kind].pop(0)

    return spawn, calls


def test_ratios_are_medians_of_the_workers_measurements(monkeypatch):
    warm = [0.010, 0.011, 0.009]
    results = {
        "models": [
            {"first_s": 2.0, "warm_s": warm, "second_first_s": [0.012, 0.013, 0.011]},
            {"first_s": 2.0, "warm_s": warm, "second_first_s": [0.020, 0.020, 0.020]},
        ],
        # per pair: a first process compiling, a second loading
        "process": [
            {"first_s": 2.01, "warm_s": warm},
            {"first_s": 0.41, "warm_s": warm},
            {"first_s": 1.01, "warm_s": warm},
            {"first_s": 0.51, "warm_s": warm},
        ],
    }
    spawn, calls = _fake_spawn(results)
    monkeypatch.setattr(cold, "_spawn", spawn)
    out = cold.run(quick=False, rounds=2, say=lambda s: None)
    same, cross = out["same_process"], out["cross_process"]
    assert same["ratios"] == pytest.approx([1.2, 2.0])
    assert same["ratio"] == pytest.approx(1.6)
    assert same["target"]["status"] == "missed within noise"  # the best round is within 1.3
    assert [pytest.approx(p) for p in cross["compile_s"]] == [(2.0, 0.4), (1.0, 0.5)]
    assert cross["ratio"] == pytest.approx((0.2 + 0.5) / 2)
    assert cross["target"]["limit"] == cold.CROSS_PROCESS_LIMIT
    # The same-process workers run without the disk cache; each pair shares a fresh folder.
    assert [c[:2] for c in calls] == [("models", "0")] * 2 + [("process", "1")] * 4
    folders = [c[2] for c in calls[2:]]
    assert folders[0] == folders[1] != folders[2] == folders[3]
    text = cold.markdown(out)
    assert "| second model's first epoch / warm epoch (one process) | 1.60x |" in text
    assert "2.01 s -> 0.41 s" in text and "<= 25%" in text


def test_quick_run_judges_nothing(monkeypatch):
    one = {"first_s": 1.0, "warm_s": [0.01], "second_first_s": [0.011]}
    spawn, _ = _fake_spawn({"models": [dict(one)], "process": [dict(one), dict(one)]})
    monkeypatch.setattr(cold, "_spawn", spawn)
    out = cold.run(quick=True, rounds=1, say=lambda s: None)
    assert out["same_process"]["target"]["status"] == "not judged (--quick)"
    assert out["cross_process"]["target"]["status"] == "not judged (--quick)"


def test_cold_in_the_suite(monkeypatch, tmp_path):
    if "jax" not in wf.available():
        pytest.skip("the cold workload needs jax")
    warm = [0.01]
    results = {
        "models": [{"first_s": 1.0, "warm_s": warm, "second_first_s": [0.011]}] * 2,
        "process": [{"first_s": 1.01, "warm_s": warm}, {"first_s": 0.11, "warm_s": warm}] * 2,
    }
    spawn, _ = _fake_spawn({k: list(v) for k, v in results.items()})
    monkeypatch.setattr(cold, "_spawn", spawn)
    code = bench.main(["--workloads", "cold", "--rounds", "2", "--out", str(tmp_path)])
    assert code == 0
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert doc["records"] == [] and doc["cold"]["workload"] == "fit_digits"
    statuses = {(t["workload"], t["mode"]): t["status"] for t in doc["targets"]}
    assert statuses == {("cold", "one process"): "met", ("cold", "two processes"): "met"}
    table = (tmp_path / "bench.md").read_text()
    assert "### cold (fit_digits on jax, one fit epoch)" in table
    assert "- target cold two processes: second process's compile time <= 0.25x" in table
