"""The benchmark suite: ``python -m wframe.bench`` (``python -m wframe bench``, ``make bench``).

Times MLP, CNN and RNN workloads (:mod:`wframe.bench.workloads`) as a train step and as a
``fit`` epoch, on every selected backend, next to hand-written references of the same backend
(:mod:`~wframe.bench.runners_reference`) and to PyTorch and Keras 3 when installed
(:mod:`~wframe.bench.runners_peers`), all from the same data and initial weights; and the
sequence workloads (attention, embedding, conv1d, a small transformer) next to PyTorch and
plain JAX (:mod:`~wframe.bench.reference_seq`), and a functional graph next to the same
``wf.Sequential``. Rows take
turns in rounds (:mod:`~wframe.bench.timing`); the report (:mod:`~wframe.bench.report`) gives
median ms with min/max over rounds, cold (compile) time, samples/s, GFLOP/s, the fraction of the
GEMM peak measured in the same run, memory, ratios to the reference, and the targets' verdicts,
as ``bench.json``, ``bench.md`` and ``bench.png``. ``--workloads scaling`` adds the data-parallel
scaling table (:mod:`~wframe.bench.scaling`: steps/s on 1, 2 and 4 devices, each count in its own
process) to the same files. ``--baseline PATH`` times every wframe row on another checkout of
wframe too, in the same rounds (:mod:`~wframe.bench.trees`), and adds after/before ratios.

Example::

    python -m wframe.bench --quick --workloads mlp_small,cnn --backends numpy --out /tmp/b
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import NamedTuple

import wframe as wf
from wframe.bench import cold as cold_mod
from wframe.bench import pruned as pruned_mod
from wframe.bench import report, runners_peers, runners_reference, runners_wframe, trees, workloads
from wframe.bench import scaling as scaling_mod
from wframe.bench.timing import Timer, gemm_peak
from wframe.bench.workloads import WORKLOADS

__all__ = ["add_arguments", "main", "run"]

MODES = ("step", "epoch")
DESCRIPTION = (
    "Time wframe's train steps and fit epochs (MLP, CNN, LSTM, GRU, attention, embedding, "
    "conv1d, transformer, functional graph) on each backend next to hand-written references, "
    "plain JAX and PyTorch/Keras, and report ratios, GFLOP/s and targets."
)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the suite's options to ``parser`` (the ``wframe bench`` subcommand reuses them)."""

    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: tiny shapes, 2 short rounds (seconds, not minutes); its ratios "
        "show that every row runs, they are not measurements to quote, and no target is judged",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma list of: {', '.join(WORKLOADS)} (default: all), scaling (the "
        "DataParallel scaling table on 1, 2, 4 devices; only when named) and cold (a new "
        "model's first epoch against a warm one, and a second process's compile time against "
        "the first's with the persistent cache; jax; only when named) and pruned (sparse and "
        "structured predict and file sizes against dense, issue 21's targets; only when named)",
    )
    parser.add_argument(
        "--backends",
        default=None,
        help="comma list of wframe backends (default: numpy, jax and cupy where available)",
    )
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help="comma list of: step (one train step), epoch (one fit epoch)",
    )
    parser.add_argument(
        "--peers",
        default="torch,keras",
        help="comma list of peers to run when installed: torch, keras; 'none'",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds every row takes its turn in (default 5; --quick 2)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="folder for bench.json, bench.md and bench.png (default: print only)",
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="PATH",
        help="another checkout of wframe (the folder holding its wframe/ package): every wframe "
        "row runs on it too, each checkout's rows in a worker process of its own, in the same "
        "rounds; adds the after/before ratios",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when a target is missed by more than the measured noise",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the suite, return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m wframe.bench", description=DESCRIPTION)
    return run(add_arguments(parser).parse_args(argv))


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip() and t.strip() != "none"]


class Plan(NamedTuple):
    """The checked arguments of a run."""

    workloads: list
    backends: list[str]
    modes: list[str]
    peers: tuple[str, ...]
    scaling: bool
    baseline: str | None
    quick: bool
    cold: bool = False
    pruned: bool = False


def _plan(args: argparse.Namespace) -> Plan | None:
    """The run's :class:`Plan`, or ``None`` after saying on stderr what is wrong."""

    names = _split(args.workloads)
    try:
        wls = workloads.get([n for n in names if n not in workloads.APART], quick=args.quick)
    except ValueError as e:
        return _error(f"--workloads: {e}")
    available = wf.available()
    backends = (
        _split(args.backends)
        if args.backends
        else [b for b in ("numpy", "jax", "cupy") if b in available]
    )
    modes, peers = _split(args.modes), tuple(_split(args.peers))
    bad = {
        "backends": [b for b in backends if b not in available],
        "modes": [m for m in modes if m not in MODES],
        "peers": [p for p in peers if p not in ("torch", "keras")],
    }
    for what, wrong in bad.items():
        if wrong:
            return _error(
                f"--{what}: {wrong} are not available here or not known "
                f"(backends available: {available})"
            )
    if args.quick and getattr(args, "check", False):
        return _error(
            "--check judges the targets, which --quick does not (2 short rounds on tiny shapes "
            "are noise): drop --quick to check, or --check to smoke-test"
        )
    baseline = getattr(args, "baseline", None)
    if baseline:
        try:
            baseline = str(trees.root_of(baseline))
        except ValueError as e:
            return _error(f"--baseline: {e}")
    scaling, cold = "scaling" in names, "cold" in names
    return Plan(wls, backends, modes, peers, scaling, baseline, args.quick, cold, "pruned" in names)


def _error(text: str) -> None:
    print(f"error: {text}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run the suite for parsed ``args``: 0 done, 1 a target missed (``--check``), 2 bad
    arguments."""

    plan = _plan(args)
    if plan is None:
        return 2
    quick, started, load = plan.quick, time.perf_counter(), _loadavg()
    timer = Timer(
        rounds=args.rounds or (2 if quick else 5),
        chunk_s=0.02 if quick else 0.25,
        max_reps=10 if quick else 200,
        pause_s=0.01 if quick else 0.1,
        max_call_s=5.0 if quick else 8.0,  # a loaded machine takes seconds for a JAX compile
    )
    both = trees.Trees(plan.baseline) if plan.baseline else contextlib.nullcontext()
    with both as tr:
        records, peaks, notes = _measure(plan, timer, tr)
        tree_info = tr.describe() if tr else None
    report.add_ratios(records)
    verdicts = report.targets(records) if plan.workloads else []
    pruned = pruned_mod.run(quick, timer, plan.backends, notes, _say) if plan.pruned else None
    verdicts += pruned["targets"] if pruned is not None else []
    scaled = None
    if plan.scaling and "jax" not in wf.available():
        notes.append("scaling: needs the jax backend, which is not available here")
    elif plan.scaling:
        if plan.baseline:
            notes.append("scaling: this checkout only (--baseline applies to the workloads)")
        scaled = scaling_mod.run(quick, timer.rounds, say=_say)
        verdicts.append(scaled["target"])
    cold = _cold(plan, timer.rounds, notes)
    if cold is not None:
        verdicts += [cold["same_process"]["target"], cold["cross_process"]["target"]]
    if quick:  # no MET/MISSED from 2 rounds of noise
        verdicts = report.unjudged(verdicts)
        if scaled is not None:
            scaled["target"] = verdicts[-1 - 2 * (cold is not None)]
    doc = _document(plan, timer, records, verdicts, notes, peaks)
    doc["settings"].update(wall_s=time.perf_counter() - started)
    doc["settings"]["loadavg_1min_start_end"] = [load, _loadavg()]
    table = report.markdown(records, verdicts, doc)
    if not plan.workloads:  # the scaling or cold table alone: no empty workload table above
        table = "".join(line for line in table.splitlines(True) if line.startswith("- "))
    if cold is not None:
        doc["cold"] = cold
        table += cold_mod.markdown(cold)
    if pruned is not None:
        doc["pruned"] = pruned
        table += pruned_mod.markdown(pruned)
    if scaled is not None:
        doc["scaling"] = scaled
        table += scaling_mod.markdown(scaled, doc["environment"].get("cpus_usable"))
    if tree_info is not None:
        doc["after_before"] = trees.after_before(records)
        doc["settings"]["trees"] = tree_info
        table += trees.markdown(doc["after_before"], tree_info)
    print(table)
    if args.out:
        paths = report.write(Path(args.out), doc, table)
        _say("wrote " + ", ".join(map(str, paths)))
    _say(f"wall time {doc['settings']['wall_s']:.1f} s")
    if quick:
        _say(report.QUICK_NOTE.replace("**", ""))
    missed = [t for t in verdicts if t["status"] == "MISSED"]
    return 1 if args.check and missed else 0


def _cold(plan: Plan, rounds: int, notes: list[str]) -> dict | None:
    """The ``cold`` measurements (:mod:`wframe.bench.cold`) when asked for and jax is here."""
    if not plan.cold:
        return None
    if "jax" not in wf.available():
        notes.append("cold: needs the jax backend, which is not available here")
        return None
    if plan.baseline:
        notes.append("cold: this checkout only (--baseline applies to the workloads)")
    return cold_mod.run(plan.quick, 1 if plan.quick else min(rounds, 3), say=_say)


def _measure(plan: Plan, timer, trees) -> tuple[list[dict], dict, list[str]]:
    """``(records, gemm peaks, notes)``: every workload and mode of ``plan``, its rows in
    rounds; wframe's rows on both trees when ``trees`` (a :class:`~wframe.bench.trees.Trees`)
    is given."""

    backends, peers = plan.backends, plan.peers
    gemm_n, notes, records = 256 if plan.quick else 2048, [], []
    engines = [*backends, *(["torch"] if "torch" in peers and _has("torch") else [])]
    peaks = {b: gemm_peak(b, gemm_n) for b in engines} if plan.workloads else {}
    if peaks:
        _say(
            f"GEMM {gemm_n}² peak GFLOP/s: "
            + ", ".join(f"{k} {v['gflops']:.1f}" for k, v in peaks.items())
        )
    for w in plan.workloads:
        x, y, note = workloads.make_data(w)
        notes += [note] if note else []
        p0 = workloads.initial_params(w)
        for mode in [m for m in w.modes if m in plan.modes]:
            t0 = time.perf_counter()
            ours = runners_wframe.rows(w, mode, backends, p0, x, y)
            rows = [
                *(trees.rows(w, ours) if trees is not None else ours),
                *runners_reference.rows(w, mode, backends, p0, x, y),
                *runners_peers.rows(w, mode, backends, p0, x, y, peers, notes),
            ]
            res = timer.measure(rows, notes, tag=f"{w.name} {mode}: ")
            if trees is not None:
                trees.reset()
            records += _records(w, mode, rows, res, peaks)
            _say(f"{w.name} {mode}: {len(res)} rows, {time.perf_counter() - t0:.1f} s")
    return records, peaks, notes


def _document(plan: Plan, timer, records, verdicts, notes, peaks) -> dict:
    """The JSON document of a run (the caller adds wall time, load, scaling and trees)."""

    return {
        "environment": report.environment(),
        "settings": {
            "quick": plan.quick,
            "rounds": timer.rounds,
            "chunk_s": timer.chunk_s,
            "pause_s": timer.pause_s,
            "max_call_s": timer.max_call_s,
            "backends": plan.backends,
            "peers": list(plan.peers),
            "modes": plan.modes,
            "gemm_n": 256 if plan.quick else 2048,
            "baseline": plan.baseline,
        },
        "workloads": {w.name: w.describe() for w in plan.workloads},
        "gemm_peak": peaks,
        "records": records,
        "targets": verdicts,
        "notes": list(dict.fromkeys(notes)),
    }


def _records(w, mode: str, rows: list, res: dict, peaks: dict) -> list[dict]:
    """One JSON record per timed row of workload ``w`` in ``mode``."""
    examples = w.batch if mode == "step" else w.rows
    flops = w.flops(examples)  # linear in the examples: an epoch is the sum of its batches
    first = next(
        (r for r in ("reference[numpy]", "reference[jax]", "wframe[numpy]") if r in res),
        next(iter(res), None),
    )
    out = []
    for row in rows:
        r = res.get(row.label)
        if r is None:
            continue
        seconds = r["median_ms"] / 1e3
        peak = peaks.get(row.backend, {}).get("gflops")
        gflops = flops / seconds / 1e9 if seconds > 0 else None
        rec = {
            "workload": w.name,
            "mode": mode,
            "runner": row.label,
            "impl": row.impl,
            "backend": row.backend,
            "ref": row.ref,
            "batch": w.batch,
            "examples": examples,
            **r,
            "samples_per_s": examples / seconds if seconds > 0 else None,
            "flops": flops,
            "gflops": gflops,
            "peak_fraction": gflops / peak if gflops and peak else None,
        }
        base = res[first]["loss0"]
        rel = abs(r["loss0"] - base) / max(abs(base), 1e-12)
        rec["loss0_rel_diff"] = rel
        rec["check"] = f"first loss {r['loss0']:.6f} vs {first} {base:.6f}: rel diff {rel:.1e} " + (
            "OK" if rel <= 1e-3 else "DIFFERS"
        )
        out.append(rec)
    return out


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _loadavg() -> float | None:
    """Other processes' load skews every time (the 1-minute load average, where known)."""
    import os

    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
