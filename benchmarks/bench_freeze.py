"""What freezing saves: one fit epoch of the large MLP with its body frozen vs fully trainable.

Run:  .venv/bin/python benchmarks/bench_freeze.py [--rounds N] [--rows N]

The suite's mlp_large model (``wframe/bench/workloads.py``: MLP 784-1024-1024-10, relu, SGD lr
0.01, batch 256) on ``--rows`` seeded random rows. "frozen": ``model.freeze(["dense_0",
"dense_1"])``, only the 1024x10 head trains. On NumPy the backward then stops at the head (no
weight gradients, no input gradients below it); on JAX only the head's partition is
differentiated. Each row is ``fit(epochs=1)`` called again on one model (the suite's
``runners_wframe.epoch``), timed by the suite's ``Timer``: a cold and a warm epoch first, then
the rows take turns in ``--rounds`` rounds (the loss read synchronizes); medians, and each
ratio pairs the rounds.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import wframe as wf
from wframe.bench import runners_wframe, workloads
from wframe.bench.timing import Row, Timer, ratio

BODY = ["dense_0", "dense_1"]


def rows(w: workloads.Workload, x, y, backends: list[str]) -> list[Row]:
    """Per backend: the whole model trainable, then the body frozen (its ratio's reference)."""
    out = []
    for b in [b for b in backends if b in wf.available()]:

        def frozen(w=w):
            return w.model().build((None, *w.in_shape)).freeze(BODY)

        for label, build in (("all", None), ("head only (body frozen)", frozen)):
            make = lambda b=b, build=build: runners_wframe.epoch(w, b, x, y, build=build)  # noqa: E731
            out.append(Row(f"{b}: {label}", "wframe", b, make, ref=f"{b}: all"))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--backends", default="numpy,jax", help="comma list (those available run)")
    args = ap.parse_args(argv)
    w = replace(workloads.WORKLOADS["mlp_large"], rows=args.rows)
    x, y, _ = workloads.make_data(w)
    table, notes = rows(w, x, y, args.backends.split(",")), []
    res = Timer(rounds=args.rounds).measure(table, notes)
    print(f"| backend | trainable | ms per epoch ({args.rows} rows) | frozen / trainable |")
    print("|---|---|---:|---:|")
    for row in table:
        r, base = res.get(row.label), res.get(row.ref)
        if r is None or base is None:
            continue
        backend, what = row.label.split(": ")
        share = ratio(r["round_ms"], base["round_ms"])[0]
        print(f"| {backend} | {what} | {r['median_ms']:.0f} | {share:.2f} |")
    for note in notes:
        print(f"- note: {note}")


if __name__ == "__main__":
    main()
