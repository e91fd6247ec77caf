"""Data-parallel scaling: steps/s of a ``fit`` epoch with
:class:`wframe.distributed.DataParallel` on 1, 2 and 4 devices, next to the same epoch without a
strategy (``python -m wframe bench --workloads scaling``).

Forced CPU devices need ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` before JAX is
imported, so each device count runs in a process of its own (``python -m
wframe.bench.scaling --devices N`` prints one JSON line); inside it the two rows take turns in
rounds (:class:`~wframe.bench.timing.Timer`), and each ratio pairs them by round. The forced
devices share the machine's cores: with fewer cores than devices this measures the strategy's
overhead, not a speed-up. On a GPU the default devices are the GPUs, so the 1-device row is the
strategy's overhead on one GPU (target: at most 5 %); counts beyond the GPUs are skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from typing import Any

import wframe as wf
from wframe.bench import workloads
from wframe.bench.runners_wframe import epoch
from wframe.bench.timing import Row, Timer, ratio

COUNTS = (1, 2, 4)
WORKLOAD = "mlp_large"
OVERHEAD_LIMIT = 1.05  # DataParallel on one device vs no strategy


def child(devices: int, quick: bool, rounds: int) -> dict:
    """In a process whose XLA_FLAGS force ``devices`` CPU devices: time the rows; the records."""
    import jax

    notes: list[str] = []
    have = jax.devices()
    kind = f"{have[0].platform} ({getattr(have[0], 'device_kind', '')})"
    if len(have) < devices:
        return {
            "records": [],
            "notes": [f"scaling: {devices} devices asked, {kind} has {len(have)}: skipped"],
        }
    w = workloads.get([WORKLOAD], quick=quick)[0]
    x, y, _ = workloads.make_data(w)
    strategy = wf.distributed.DataParallel(have[:devices])
    label = f"DataParallel({devices})"
    rows = [
        Row("off", "wframe", "jax", lambda: epoch(w, "jax", x, y, strategy=None)),
        Row(label, "wframe", "jax", lambda: epoch(w, "jax", x, y, strategy=strategy), ref="off"),
    ]
    # The cold call compiles; a loaded machine can take seconds for it even with --quick.
    timer = Timer(
        rounds=rounds,
        chunk_s=0.02 if quick else 0.25,
        max_reps=10 if quick else 50,
        pause_s=0.01 if quick else 0.1,
        max_call_s=30.0,
    )
    res = timer.measure(rows, notes, tag=f"scaling {devices} devices: ")
    steps = math.ceil(w.rows / w.batch)
    records = []
    for name, r in res.items():
        rec = {
            "devices": devices,
            "runner": name,
            "platform": kind,
            "workload": w.name,
            "batch": w.batch,
            "steps_per_epoch": steps,
            "median_ms": r["median_ms"],
            "min_ms": r["min_ms"],
            "max_ms": r["max_ms"],
            "round_ms": r["round_ms"],
            "cold_ms": r["cold_ms"],
            "steps_per_s": steps / (r["median_ms"] / 1e3),
            "ratio": None,
            "ratio_min": None,
            "ratio_max": None,
        }
        if name != "off" and "off" in res:  # paired by round with the run without strategy
            rec["ratio"], rec["ratio_min"], rec["ratio_max"] = ratio(
                r["round_ms"], res["off"]["round_ms"]
            )
        records.append(rec)
    return {"records": records, "notes": notes}


def run(quick: bool, rounds: int, say: Any = print, timeout: float = 900.0) -> dict:
    """Every device count of :data:`COUNTS` in its own process; ``{"workload", "records",
    "notes", "target"}`` for the JSON, :func:`markdown` for the table."""
    records, notes = [], []
    for devices in COUNTS:
        env = dict(os.environ)
        force = f"--xla_force_host_platform_device_count={devices}"
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {force}".strip()
        cmd = [
            sys.executable,
            "-m",
            "wframe.bench.scaling",
            "--devices",
            str(devices),
            "--rounds",
            str(rounds),
            *(["--quick"] if quick else []),
        ]
        try:
            out = subprocess.run(
                cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            notes.append(f"scaling {devices} devices: over {timeout:.0f} s, stopped")
            continue
        if out.returncode:
            last = (out.stderr.strip().splitlines() or ["no output"])[-1]
            notes.append(f"scaling {devices} devices: failed ({last})"[:400])
            continue
        doc = json.loads(out.stdout.strip().splitlines()[-1])
        records += doc["records"]
        notes += doc["notes"]
        say(
            f"scaling {devices} devices: "
            + ", ".join(f"{r['runner']} {r['steps_per_s']:.1f} steps/s" for r in doc["records"])
        )
    return {"workload": WORKLOAD, "records": records, "notes": notes, "target": target(records)}


def target(records: list[dict]) -> dict:
    """The strategy's overhead on one device, as :func:`wframe.bench.report.targets` words it."""
    one = next((r for r in records if r["devices"] == 1 and r["runner"] != "off"), None)
    t = {
        "workload": "scaling",
        "mode": "epoch",
        "runner": "DataParallel(1)",
        "ref": "off",
        "limit": OVERHEAD_LIMIT,
        "ratio": None,
        "ratio_min": None,
        "ratio_max": None,
        "status": "not measured",
    }
    if one is not None and one["ratio"] is not None:
        med, lo = one["ratio"], one["ratio_min"]
        t.update(ratio=med, ratio_min=lo, ratio_max=one["ratio_max"])
        t["status"] = (
            "met"
            if med <= OVERHEAD_LIMIT
            else "missed within noise"
            if lo <= OVERHEAD_LIMIT
            else "MISSED"
        )
    return t


def markdown(doc: dict, cpus: int | None) -> str:
    """The scaling table, with what it measures and on what."""
    recs = doc["records"]
    lines = [
        "",
        f"Data-parallel scaling: one `fit` epoch of {doc['workload']}, jax",
        "",
        "| devices | runner | ms/epoch | min–max ms | steps/s | time vs off (min–max) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in recs:
        vs = (
            ""
            if r["ratio"] is None
            else (f"{r['ratio']:.2f}x ({r['ratio_min']:.2f}–{r['ratio_max']:.2f})")
        )
        lines.append(
            f"| {r['devices']} | {r['runner']} | {r['median_ms']:.1f} "
            f"| {r['min_ms']:.1f}–{r['max_ms']:.1f} | {r['steps_per_s']:.1f} | {vs} |"
        )
    platform = recs[0]["platform"] if recs else "no device"
    lines += [
        "",
        f"Each device count runs in its own process on {platform}; off: the same epoch "
        "without a strategy in that process; ratios pair the two rows round by round.",
    ]
    if recs and recs[0]["platform"].startswith("cpu"):
        lines.append(
            f"The devices are forced CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count"
            f"=N) sharing {cpus or '?'} usable cores: on a machine with fewer cores than devices "
            "this shows the strategy's overhead, not a speed-up."
        )
    lines += [f"- note: {n}" for n in doc["notes"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wframe.bench.scaling", description="One device count of the scaling table."
    )
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps(child(args.devices, args.quick, args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
