"""The ``cold`` workload of ``python -m wframe bench``: what a ``fit`` pays before it is warm.

Two measurements on the jax backend, each in fresh worker processes (``python -m
wframe.bench.cold --child ...``), of one ``fit`` epoch of the ``fit_digits`` MLP (64-128-10,
Adam lr 1e-3 made by name so that models share it, batch 32, 1,797 digits):

- **in one process** (persistent cache off): the first epoch of a second, third, ... model of the
  same architecture against a warm epoch of the first model (they share their compiled train
  step, :func:`wframe.training.trainer_for`), warm epochs interleaved with the new models'
  first epochs; the ratio of the medians. Target: at most :data:`SAME_PROCESS_LIMIT`.
- **across processes**: a first process with ``WFRAME_CACHE_DIR`` at a fresh folder compiles
  and writes JAX's persistent cache there (:mod:`wframe.backends.jit_cache`); a second process
  with the same folder loads it. Each one's compile time is its first epoch minus its median
  warm epoch; the ratio second / first. Target: at most :data:`CROSS_PROCESS_LIMIT`.

Each process imports wframe and JAX before its clock starts: what is timed is the ``fit`` call
(building the model, checking and moving the data, tracing, compiling or loading, the steps).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

#: The second model's first epoch / a warm epoch, in one process.
SAME_PROCESS_LIMIT = 1.3
#: The second process's compile time / the first's, sharing the per-user cache.
CROSS_PROCESS_LIMIT = 0.25
WORKLOAD = "fit_digits"


# ------------------------------------------------------------------------------ the child
def _fitter(quick: bool) -> Callable[[], Callable[[], float]]:
    """``new()``: a fresh model of the workload (same architecture, same named optimizer),
    returning ``epoch()``, which runs one ``fit`` epoch on it and returns its seconds."""
    import wframe as wf
    from wframe.bench import workloads

    w = workloads.get([WORKLOAD], quick=quick)[0]
    x, y, _ = workloads.make_data(w)

    def new() -> Callable[[], float]:
        model = w.model()
        opt = wf.optimizers.get(w.optimizer, learning_rate=w.lr)

        def epoch() -> float:
            t0 = time.perf_counter()
            model.fit(x, y, epochs=1, batch_size=w.batch, optimizer=opt, verbose=0)
            return time.perf_counter() - t0

        return epoch

    return new


def child(kind: str, quick: bool, models: int, warm: int) -> dict[str, Any]:
    """One worker's measurements: ``kind`` ``"process"`` (the first epoch and warm epochs of
    one model) or ``"models"`` (also the first epochs of ``models`` more models)."""
    import wframe as wf

    wf.set_backend("jax")
    import jax

    jax.numpy.zeros(()).block_until_ready()  # the runtime up: not a compile of ours
    new = _fitter(quick)
    epoch = new()
    first = epoch()
    warms = [epoch() for _ in range(warm)]
    out: dict[str, Any] = {
        "first_s": first,
        "warm_s": warms,
        "cache_dir": wf.get_backend().cache_dir,
    }
    if kind == "models":
        seconds = []
        for _ in range(models):  # a new model's first epoch, then a warm one of the first
            seconds.append(new()())
            warms.append(epoch())
        out["second_first_s"] = seconds
    return out


# ------------------------------------------------------------------------------ the parent
def _spawn(kind: str, quick: bool, env: dict[str, str], models: int, warm: int) -> dict:
    args = ["--child", kind, "--models", str(models), "--warm", str(warm)]
    cmd = [sys.executable, "-m", "wframe.bench.cold", *args, *(["--quick"] if quick else [])]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"cold worker failed ({done.returncode}): {done.stderr[-600:]}")
    return json.loads(lines[-1])


def run(quick: bool = False, rounds: int = 3, say: Callable[[str], None] = print) -> dict:
    """Both measurements (``rounds`` processes or pairs of processes each; medians over
    them); returns the JSON-ready result with its two targets' verdicts."""
    base = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR",)}
    models, warm = (3, 3) if quick else (8, 8)
    same = []
    for _ in range(rounds):
        res = _spawn("models", quick, {**base, "WFRAME_JIT_CACHE": "0"}, models, warm)
        same.append(statistics.median(res["second_first_s"]) / statistics.median(res["warm_s"]))
    say(f"cold: second model's first epoch / warm epoch, per process: {same}")
    pairs = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="wframe-cold-") as folder:
            env = {**base, "WFRAME_JIT_CACHE": "1", "WFRAME_CACHE_DIR": folder}
            a, b = (_spawn("process", quick, env, 0, warm) for _ in range(2))
        pairs.append((_compile_s(a), _compile_s(b), a["first_s"], b["first_s"]))
    say(f"cold: (first, second) process compile seconds: {[p[:2] for p in pairs]}")
    ratio_same = statistics.median(same)
    cross = [p[1] / p[0] for p in pairs if p[0] > 0]
    ratio_cross = statistics.median(cross) if cross else float("nan")
    one = ("one process", "second model's first epoch", "warm epoch")
    two = ("two processes", "second process's compile time", "first process's compile time")
    return {
        "workload": WORKLOAD,
        "same_process": {
            "ratios": same,
            "ratio": ratio_same,
            "target": _verdict(one, ratio_same, same, SAME_PROCESS_LIMIT, quick),
        },
        "cross_process": {
            "compile_s": [p[:2] for p in pairs],
            "first_epoch_s": [p[2:] for p in pairs],
            "ratio": ratio_cross,
            "target": _verdict(two, ratio_cross, cross, CROSS_PROCESS_LIMIT, quick),
        },
    }


def _compile_s(res: dict) -> float:
    """A process's compile time: its first epoch minus its median warm epoch."""
    return res["first_s"] - statistics.median(res["warm_s"])


def _verdict(what: tuple, ratio: float, each: list[float], limit: float, quick: bool) -> dict:
    """A target's verdict in the suite's form (:func:`wframe.bench.report.targets`)."""
    mode, runner, ref = what
    t = {"workload": "cold", "mode": mode, "runner": runner, "ref": ref, "limit": limit}
    if not each:
        return {**t, "ratio": None, "ratio_min": None, "ratio_max": None, "status": "not measured"}
    met = "met" if ratio <= limit else "missed within noise" if min(each) <= limit else "MISSED"
    status = "not judged (--quick)" if quick else met
    return {**t, "ratio": ratio, "ratio_min": min(each), "ratio_max": max(each), "status": status}


def markdown(result: dict) -> str:
    """The cold-start table (Markdown)."""
    same, cross = result["same_process"], result["cross_process"]
    firsts = ", ".join(f"{a:.2f} s -> {b:.2f} s" for a, b in cross["first_epoch_s"])
    compiles = ", ".join(f"{a:.2f} s -> {b:.2f} s" for a, b in cross["compile_s"])
    return (
        f"\n### cold ({result['workload']} on jax, one fit epoch)\n\n"
        "| measurement | median | per round | target |\n|---|---|---|---|\n"
        f"| second model's first epoch / warm epoch (one process) | {same['ratio']:.2f}x | "
        f"{', '.join(f'{r:.2f}' for r in same['ratios'])} | <= {SAME_PROCESS_LIMIT}x: "
        f"{same['target']['status']} |\n"
        f"| second process's compile time / first's (shared cache) | {cross['ratio']:.0%} | "
        f"compile {compiles}; first epoch {firsts} | <= {CROSS_PROCESS_LIMIT:.0%}: "
        f"{cross['target']['status']} |\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wframe.bench.cold", description=__doc__)
    parser.add_argument("--child", choices=("models", "process"), default=None)
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--warm", type=int, default=8)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.quick, args.models, args.warm)))
        return 0
    result = run(args.quick, args.rounds, say=lambda s: print(s, file=sys.stderr))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
