"""What the mixed-precision policies cost or save: one fit epoch per dtype policy and backend.

Run:  .venv/bin/python benchmarks/bench_precision.py [--rounds N] [--rows N] [--width N]

The suite's mlp_large model (``wframe/bench/workloads.py``) with hidden width W (``--width``,
default 1024: MLP 784-W-W-10, relu), Adam lr 1e-3, batch 256, ``--rows`` seeded random rows
(float32), on every available backend, for dtype "float32", "mixed_bfloat16" and
"mixed_float16". Each row is ``fit(epochs=1)`` called again on one model (the suite's
``runners_wframe.epoch``), timed by the suite's ``Timer``: a cold and a warm epoch first, then
the rows take turns in ``--rounds`` rounds (the loss read synchronizes); medians, and each ratio
to float32 pairs the rounds. On CPUs without native half-precision arithmetic the mixed
policies pay for their casts; their speed-up needs a GPU (tensor cores) where the compute dtype
runs natively.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import wframe as wf
from wframe.bench import runners_wframe, workloads
from wframe.bench.timing import Row, Timer, ratio

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


def rows(w: workloads.Workload, x, y, backends: list[str]) -> list[Row]:
    """One row per available backend and dtype policy; each divides by float32's."""
    out = []
    for b in [b for b in backends if b in wf.available()]:
        for policy in POLICIES:

            def build(policy=policy):
                return wf.Sequential(w.layers(), seed=workloads.SEED, dtype=policy)

            make = lambda b=b, build=build: runners_wframe.epoch(w, b, x, y, build=build)  # noqa: E731
            out.append(Row(f"{b}: {policy}", "wframe", b, make, ref=f"{b}: float32"))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--backends", default="numpy,jax,cupy", help="comma list (available ones run)")
    args = ap.parse_args(argv)
    large = workloads.WORKLOADS["mlp_large"]
    w = replace(large, hidden=(args.width,) * 2, optimizer="adam", lr=1e-3, rows=args.rows)
    x, y, _ = workloads.make_data(w)
    table, notes = rows(w, x, y, args.backends.split(",")), []
    res = Timer(rounds=args.rounds).measure(table, notes)
    print(f"| backend | dtype | ms per epoch ({args.rows} rows) | / float32 | first loss |")
    print("|---|---|---:|---:|---:|")
    for row in table:
        r, base = res.get(row.label), res.get(row.ref)
        if r is None or base is None:
            continue
        backend, policy = row.label.split(": ")
        share = ratio(r["round_ms"], base["round_ms"])[0]
        print(f"| {backend} | {policy} | {r['median_ms']:.0f} | {share:.2f} | {r['loss0']:.4f} |")
    for note in notes:
        print(f"- note: {note}")


if __name__ == "__main__":
    main()
