"""Small models at hand-written speed: wframe's fit and train step against plain loops.

Run:  .venv/bin/python benchmarks/bench_small.py [--rounds N] [--groups mlp,cnn,lstm] [--quick]
      [--xla-threads N] [--clock wall|cpu]

Everything runs on one thread: NumPy's BLAS (threadpoolctl, wframe's own policy picks one too
for work this small), PyTorch (``torch.set_num_threads(1)``) and XLA:CPU (its intra-op pool set
to ``--xla-threads``, default 1, through ``XLA_FLAGS`` before JAX is imported). Rows of a group
take turns in rounds (:class:`wframe.bench.timing.Timer`); a row's time is the median over
rounds of its per-round median, and a ratio is the median over rounds of the two rows' per-round
ratio (load that drifts during a round hits both). ``--clock cpu`` times the process's CPU time
(all its threads) instead of the wall clock: steadier where other work shares the cores.

Groups (float32, softmax cross-entropy on integer labels, every row from the same weights):

- ``mlp``: a 64-64-10 relu MLP, SGD lr 0.01, batch 32, shuffled, accuracy logged, on
  scikit-learn's digits (the first 1,437 rows, x/16; a train split's size: 45 steps an epoch).
  One timed call is :data:`EPOCHS` epochs: one ``fit(epochs=EPOCHS)`` (what a training run pays
  per epoch) or that many epochs of the reference; the "1-epoch calls" rows make EPOCHS
  ``fit(epochs=1)`` calls instead (each call also checks and moves the data, sets the loop up
  and publishes the weights). ``fit`` on numpy against a hand-written NumPy loop (the same
  shuffle, ``take`` gather, in-place SGD, accuracy counted per batch:
  :func:`wframe.bench.runners_reference.xp_epoch`); on jax (per-step calls) against a plain
  per-step ``jax.jit`` of ``value_and_grad`` + optax with donated state, batches gathered on the
  host; ``steps_per_execution="epoch"`` against a plain ``lax.scan`` over the epoch's batches,
  data on the device (:func:`~wframe.bench.runners_reference.jax_runner`). "softmax output"
  trains the same weights written Keras' way, ``Dense(10, "softmax")`` and
  ``"sparse_categorical_crossentropy"`` of probabilities, against ``fit numpy`` on logits.
- ``cnn``: the MNIST-1D CNN shape: input (batch, 40, 1); Conv1D 25 k5 s2, Conv1D 25 k3 s2,
  Conv1D 25 k3 s2 (each relu, "valid"), Flatten, Dense 10; Adam lr 1e-3, batch 100, 4,000
  seeded rows (40 steps an epoch). Per-step time of a ``fit`` epoch (shuffle and gather
  included) on numpy and jax against the same loop in PyTorch eager on CPU.
- ``lstm``: LSTM(128) + Dense 10 on (64, 32, 64) inputs, Adam lr 1e-3: one
  ``make_train_step`` step on jax against ``jax.jit(value_and_grad)`` of a plain ``lax.scan``
  cell + optax, and on numpy against PyTorch eager (``nn.LSTM``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def _set_xla_threads(n: int) -> None:
    """XLA:CPU's intra-op threads (must happen before JAX is imported)."""
    flags = os.environ.get("XLA_FLAGS", "")
    extra = f"--xla_cpu_multi_thread_eigen={'true' if n > 1 else 'false'}"
    os.environ["XLA_FLAGS"] = f"{flags} {extra} intra_op_parallelism_threads={n}".strip()


if __name__ == "__main__" and "--xla-threads" not in " ".join(sys.argv):
    _set_xla_threads(1)
elif __name__ == "__main__":
    _set_xla_threads(int(sys.argv[sys.argv.index("--xla-threads") + 1]))

import numpy as np  # noqa: E402

import wframe as wf  # noqa: E402
from wframe.bench import runners_peers, runners_reference, worker, workloads  # noqa: E402
from wframe.bench.timing import Row, Timer, ratio  # noqa: E402

MLP = workloads.Workload(
    "mlp_64", "mlp", (64,), (64,), 32, "sgd", 0.01, 1437, ("epoch",), data="digits"
)
LSTM = workloads.WORKLOADS["lstm"]
CNN_ROWS, CNN_BATCH, CNN_LEN = 4000, 100, 40
#: (filters, kernel, stride) of the MNIST-1D CNN's convolutions.
CNN_CONVS = ((25, 5, 2), (25, 3, 2), (25, 3, 2))


# ----------------------------------------------------------------------------- mlp
#: Epochs per timed call of the mlp group: one ``fit(epochs=EPOCHS)``, or that many epochs of a
#: reference; the "1-epoch calls" rows make EPOCHS ``fit(epochs=1)`` calls instead.
EPOCHS = 5


def mlp_fit(backend: str, x, y, spe, *, calls: int = 1, softmax: bool = False):
    """``run()``: ``EPOCHS`` epochs of ``fit`` on one model and optimizer, in one call
    (``calls=1``) or in ``EPOCHS`` calls of one epoch; returns the last epoch's loss.
    ``softmax``: Keras' idiom instead of logits, a softmax output and
    ``"sparse_categorical_crossentropy"`` of its probabilities (the same weights)."""
    with wf.use_backend(backend):
        model, opt = MLP.model(), wf.optimizers.sgd(MLP.lr)
        if softmax:
            *hidden, last = model.layers
            model = wf.Sequential(
                [*hidden, wf.layers.Dense(last.units, "softmax")], seed=workloads.SEED
            )
            model.compile(opt, "sparse_categorical_crossentropy")
    epochs = EPOCHS // calls

    def run():
        with wf.use_backend(backend):
            for _ in range(calls):
                h = model.fit(
                    x,
                    y,
                    epochs=epochs,
                    batch_size=MLP.batch,
                    optimizer=opt,
                    verbose=0,
                    steps_per_execution=spe,
                )
        return h.history["loss"][-1]

    return run


def repeated(make):
    """``make()``'s ``run`` called ``EPOCHS`` times per call (a reference's epochs)."""

    def made():
        one = make()

        def run():
            for _ in range(EPOCHS):
                out = one()
            return out

        return run

    return made


def mlp_rows() -> tuple[list[Row], list[tuple[str, str, float]]]:
    x, y, _ = workloads.make_data(MLP)
    p0 = workloads.initial_params(MLP)
    ref = runners_reference
    rows = [
        Row("fit numpy", "wframe", "numpy", lambda: mlp_fit("numpy", x, y, 1)),
        Row("hand numpy", "reference", "numpy", repeated(lambda: ref.xp_epoch(MLP, np, p0, x, y))),
        Row("fit jax", "wframe", "jax", lambda: mlp_fit("jax", x, y, 1)),
        Row(
            "plain jit jax",
            "reference",
            "jax",
            repeated(lambda: ref.jax_runner(MLP, p0, x, y, "epoch")),
        ),
        Row("fit jax spe=epoch", "wframe", "jax", lambda: mlp_fit("jax", x, y, "epoch")),
        Row(
            "plain scan jax",
            "reference",
            "jax",
            repeated(lambda: ref.jax_runner(MLP, p0, x, y, "scan")),
        ),
    ]
    for label, backend, spe in (
        ("numpy", "numpy", 1),
        ("jax", "jax", 1),
        ("jax spe=epoch", "jax", "epoch"),
    ):
        make = lambda b=backend, s=spe: mlp_fit(b, x, y, s, calls=EPOCHS)  # noqa: E731
        rows.append(Row(f"fit {label}, 1-epoch calls", "wframe", backend, make))
    keras = lambda: mlp_fit("numpy", x, y, 1, softmax=True)  # noqa: E731
    rows.append(Row("fit numpy, softmax output", "wframe", "numpy", keras))
    targets = [
        ("fit numpy", "hand numpy", 1.3),
        ("fit jax", "plain jit jax", 1.1),
        ("fit jax spe=epoch", "plain scan jax", 1.1),
        ("fit numpy, 1-epoch calls", "hand numpy", None),
        ("fit jax, 1-epoch calls", "plain jit jax", None),
        ("fit jax spe=epoch, 1-epoch calls", "plain scan jax", None),
        ("fit numpy, softmax output", "fit numpy", None),
    ]
    return rows, targets


# ----------------------------------------------------------------------------- cnn
def cnn_model() -> wf.Sequential:
    L = wf.layers
    convs = [L.Conv1D(f, k, strides=s, activation="relu") for f, k, s in CNN_CONVS]
    return wf.Sequential([*convs, L.Flatten(), L.Dense(10)], seed=0)


def cnn_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((CNN_ROWS, CNN_LEN, 1), dtype=np.float32)
    return x, rng.integers(0, 10, CNN_ROWS).astype(np.int32)


def cnn_fit(backend: str, x, y):
    """``run()``: one ``fit`` epoch; returns the epoch's loss."""
    with wf.use_backend(backend):
        model = cnn_model()
        opt = wf.optimizers.adam(1e-3)

    def run():
        with wf.use_backend(backend):
            h = model.fit(x, y, epochs=1, batch_size=CNN_BATCH, optimizer=opt, verbose=0)
        return h.history["loss"][0]

    return run


def cnn_torch(x, y):
    """``run()``: the same epoch in PyTorch eager (CPU): wframe's shuffle, ``index_select``
    gather, Adam; the loss summed on the device and read once."""
    import torch

    nn = torch.nn
    with wf.use_backend("numpy"):
        p0 = cnn_model().build((None, CNN_LEN, 1)).params
    mods, cin = [], 1
    for f, k, s in CNN_CONVS:
        mods += [nn.Conv1d(cin, f, k, stride=s), nn.ReLU()]
        cin = f
    length = CNN_LEN
    for _, k, s in CNN_CONVS:
        length = (length - k) // s + 1
    net = nn.Sequential(*mods, nn.Flatten(), nn.Linear(cin * length, 10))
    params = list(p0.values())
    sd = {}
    for i, p in enumerate(params[:-1]):  # wframe (k, cin, cout) -> torch (cout, cin, k)
        sd[f"{2 * i}.weight"] = torch.from_numpy(np.ascontiguousarray(p["W"].transpose(2, 1, 0)))
        sd[f"{2 * i}.bias"] = torch.from_numpy(np.asarray(p["b"]))
    dense = params[-1]  # wframe flattens (L, C), torch (C, L)
    w = np.asarray(dense["W"]).reshape(length, cin, 10).transpose(2, 1, 0).reshape(10, -1)
    sd[f"{len(mods) + 1}.weight"] = torch.from_numpy(np.ascontiguousarray(w))
    sd[f"{len(mods) + 1}.bias"] = torch.from_numpy(np.asarray(dense["b"]))
    net.load_state_dict(sd)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1)))
    yt = torch.from_numpy(y.astype(np.int64))
    epoch = [0]

    def run():
        order = torch.from_numpy(workloads.permutation(epoch[0], CNN_ROWS))
        epoch[0] += 1
        total = torch.zeros(())
        for idx in workloads.batches(order, CNN_BATCH):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xt.index_select(0, idx)), yt.index_select(0, idx))
            loss.backward()
            opt.step()
            total += loss.detach() * idx.numel()
        return float(total) / CNN_ROWS

    return run


def cnn_rows() -> tuple[list[Row], list[tuple[str, str, float]]]:
    x, y = cnn_data()
    rows = [
        Row("fit numpy", "wframe", "numpy", lambda: cnn_fit("numpy", x, y)),
        Row("fit jax", "wframe", "jax", lambda: cnn_fit("jax", x, y)),
        Row("torch eager", "torch", "torch", lambda: cnn_torch(x, y)),
    ]
    return rows, [("fit numpy", "torch eager", 0.5), ("fit jax", "torch eager", 0.5)]


# ----------------------------------------------------------------------------- lstm
def lstm_rows() -> tuple[list[Row], list[tuple[str, str, float]]]:
    x, y, _ = workloads.make_data(LSTM)
    p0 = workloads.initial_params(LSTM)
    xb, yb = x[: LSTM.batch], y[: LSTM.batch]
    ref, peers = runners_reference, runners_peers
    rows = [
        Row("step jax", "wframe", "jax", lambda: worker.step(LSTM, "jax", p0, xb, yb)),
        Row("plain scan jax", "reference", "jax", lambda: ref.jax_runner(LSTM, p0, xb, yb, "step")),
        Row("step numpy", "wframe", "numpy", lambda: worker.step(LSTM, "numpy", p0, xb, yb)),
        Row("torch eager", "torch", "torch", lambda: peers.torch_runner(LSTM, p0, xb, yb, "step")),
    ]
    return rows, [("step jax", "plain scan jax", 1.1), ("step numpy", "torch eager", None)]


GROUPS = {"mlp": mlp_rows, "cnn": cnn_rows, "lstm": lstm_rows}
#: What one timed call of a group is: its name, train steps and epochs.
UNITS = {
    "mlp": (f"{EPOCHS} epochs", 45 * EPOCHS, EPOCHS),
    "cnn": ("epoch", CNN_ROWS // CNN_BATCH, 1),
    "lstm": ("step", 1, 0),
}


def measure(group: str, timer: Timer) -> list[str]:
    """The group's table lines: each row's time per call, per epoch and per step, each
    target's ratio."""
    rows, targets = GROUPS[group]()
    notes: list[str] = []
    res = timer.measure(rows, notes, tag=f"{group}: ")
    unit, steps, epochs = UNITS[group]
    lines = [f"\n### {group} (one call = one {unit}, {steps} steps)\n"]
    lines += [
        "| row | ms per call | ms per epoch | µs per step | min-max ms per call | first loss |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in res.items():
        ms = r["median_ms"]
        per_epoch = f"{ms / epochs:.3f}" if epochs else "-"
        lines.append(
            f"| {label} | {ms:.3f} | {per_epoch} | {ms * 1e3 / steps:.1f} | "
            f"{r['min_ms']:.3f}-{r['max_ms']:.3f} | {r['loss0']:.5f} |"
        )
    lines += ["", "| row / reference | ratio (min-max over rounds) | target |", "|---|---|---|"]
    for a, b, limit in targets:
        if a in res and b in res:
            med, lo, hi = ratio(res[a]["round_ms"], res[b]["round_ms"])
            goal = "reported" if limit is None else f"<= {limit}"
            verdict = "" if limit is None else (" met" if med <= limit else " MISSED")
            lines.append(f"| {a} / {b} | {med:.3f} ({lo:.3f}-{hi:.3f}) | {goal}{verdict} |")
    lines += [f"- {n}" for n in notes]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", default="mlp,cnn,lstm", help="comma list of mlp, cnn, lstm")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 9; --quick 2)")
    parser.add_argument("--quick", action="store_true", help="2 short rounds: a smoke test")
    parser.add_argument(
        "--xla-threads", type=int, default=1, help="XLA:CPU intra-op threads (default 1)"
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: time.perf_counter (default); cpu: the process's CPU time "
        "(time.process_time, all its threads), steadier on a machine other work shares",
    )
    args = parser.parse_args(argv)
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        parser.error(f"--groups: unknown {unknown}; expected names from {list(GROUPS)}")
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    timer = Timer(
        rounds=args.rounds or (2 if args.quick else 9),
        chunk_s=0.05 if args.quick else 0.3,
        max_reps=5 if args.quick else 100,
        pause_s=0.02 if args.quick else 0.05,
        clock=time.process_time if args.clock == "cpu" else time.perf_counter,
    )
    lines = [
        "## Small models (one thread each: NumPy BLAS, torch, XLA:CPU "
        f"intra-op {args.xla_threads}; {args.clock} clock; {timer.rounds} rounds; load "
        f"{os.getloadavg()[0]:.2f})"
    ]
    with threadpool_limits(1, user_api="blas"), wf.num_threads(1):
        for g in groups:
            lines += measure(g, timer)
            print(f"{g}: done", file=sys.stderr, flush=True)
    print("\n".join(lines))
    print(f"\nload average at the end: {statistics.mean(os.getloadavg()[:1]):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
