"""One-epoch fit benchmark: wframe's ``model.fit`` against hand-written loops, in one run.

Run:  .venv/bin/python benchmarks/bench_fit.py [--rounds N] [--workloads small,large,step]
      [--out DIR] [--quick]        (--quick: a < 60 s smoke test, 2 rounds, 2048 large rows)

Workloads (float32, softmax cross-entropy on integer labels, every example, partial batch kept):
  small: MLP 64-128-10 (relu), Adam lr 1e-3, batch 32, scikit-learn's digits (x/16, 1797 rows);
  large: MLP 784-1024-1024-10 (relu), SGD lr 0.01, batch 256, 8192 seeded random rows;
  step:  one Adam train step of the small MLP on NumPy, a fixed batch of 32 digits.
Epoch rows time shuffle + gather + steps + the epoch loss read on the host: wframe[numpy],
wframe[jax] (``fit(epochs=1)`` again on one model), wframe[jax] spe=epoch
(``steps_per_execution="epoch"``), hand-written numpy (np.take, in-place Adam/SGD), plain jax
per-step (jit of value_and_grad + optax, donated state, batches gathered on the host), plain jax
lax.scan epoch (data on the device, full batches in a lax.scan + the remainder, one jit) and
Keras 3 on JAX when installed. All start from wframe's seed-0 weights and shuffle epoch e with
``wf.random.generator(wf.random.fold_in(0, e)).permutation(n)``, so first-epoch losses agree
(checked; Keras's first epoch sees that order with shuffle=False, later ones shuffle=True). The
references move data to the device once; wframe's fit does per call, as a user's call does.
The first epoch is "cold" (compiles); then rows take turns for --rounds rounds, each a 0.1 s pause,
untimed settle epochs and timed ones (perf_counter; the loss read synchronizes): median, p10, p90.
Ratio: median over rounds of row / reference round medians.
Writes bench_fit.json and bench_fit.md to --out (default benchmarks/results/, git-ignored).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

import wframe as wf

SEED = 0
# name -> (sizes, batch, optimizer, learning rate, rows of data (None: all digits))
WORKLOADS = {
    "small": ((64, 128, 10), 32, "adam", 1e-3, None),
    "large": ((784, 1024, 1024, 10), 256, "sgd", 0.01, 8192),
}
WF_NP, WF_JAX, WF_SPE = "wframe[numpy]", "wframe[jax]", "wframe[jax] spe=epoch"
NP_REF, JAX_STEP, JAX_SCAN = "hand-written numpy", "plain jax per-step", "plain jax lax.scan epoch"
KERAS, WF_STEP = "keras 3 fit (jax)", "wframe make_train_step"
RATIOS = {WF_NP: NP_REF, WF_JAX: JAX_STEP, WF_SPE: JAX_SCAN, KERAS: WF_SPE, WF_STEP: NP_REF}
# (workload, row, limit, "<=" the row is at most limit x its reference, ">=" at least)
TARGETS = [
    *[("small", WF_NP, 1.3, "<="), ("small", WF_JAX, 1.0, "<="), ("small", WF_SPE, 1.1, "<=")],
    *[("small", KERAS, 3.0, ">="), ("large", WF_NP, 1.05, "<="), ("large", WF_JAX, 1.05, "<=")],
    ("step", WF_STEP, 1.5, "<="),
]


def measure(makers, rounds, reps, settle, notes, tag):
    """Time each ``maker()``'s callable (it returns its loss as a float, which synchronizes) in
    ms. The first call is cold; then rows take turns, ``rounds`` chunks of ``settle`` untimed and
    ``reps`` timed calls each after a 0.1 s pause, so that load drift hits all rows alike and one
    row's spinning BLAS/XLA threads bill no other. A row whose set-up or first call raises is
    dropped with a note. Before timing, the cold losses are checked against the hand-written."""
    fns, res = {}, {}
    for label, make in makers.items():
        try:
            fn = make()
            t0 = time.perf_counter()
            loss = float(fn())
        except Exception as e:  # noqa: BLE001 - a row that cannot run is reported, not fatal
            notes.append(f"{tag}: {label}: skipped ({type(e).__name__}: {e})")
            print(f"  {notes[-1]}")
            continue
        fns[label] = fn
        res[label] = {"cold_ms": (time.perf_counter() - t0) * 1e3, "loss0": loss, "times": []}
    ref = res[NP_REF]["loss0"] if NP_REF in res else None
    for label, r in res.items():  # same weights, same batches: the losses must agree
        if ref is not None:
            r["loss0_rel_diff"] = rel = abs(r["loss0"] - ref) / abs(ref)
            ok = "OK" if rel <= 1e-4 else "DIFFERS (> 1e-4)"
            r["check"] = f"first loss {r['loss0']:.6f}, rel diff {rel:.1e} {ok}"
            print(f"  check {tag}: {label} {r['check']}")
    for _ in range(rounds):
        for label, fn in fns.items():
            time.sleep(0.1)
            for i in range(settle + reps):
                t0 = time.perf_counter()
                fn()
                if i >= settle:
                    res[label]["times"].append((time.perf_counter() - t0) * 1e3)
    for r in res.values():
        times = np.reshape(r.pop("times"), (rounds, reps))
        r["n"], r["chunk_ms"] = times.size, np.median(times, axis=1).tolist()
        r["p10_ms"], r["median_ms"], r["p90_ms"] = np.percentile(times, [10, 50, 90]).tolist()
    return res


def permutation(epoch, n):
    """wframe's shuffle of epoch ``epoch`` (model seed 0)."""
    return wf.random.generator(wf.random.fold_in(SEED, epoch)).permutation(n)


def wframe_model(sizes):
    hidden = [wf.layers.Dense(k, activation="relu") for k in sizes[1:-1]]
    return wf.Sequential([*hidden, wf.layers.Dense(sizes[-1])], seed=SEED)


def wframe_epoch(backend, sizes, batch, opt, lr, x, y, **fit_kw):
    """Row: ``model.fit(x, y, epochs=1, ...)`` on one model and one optimizer object."""
    with wf.use_backend(backend):  # on jax the named optimizers are optax's: make it there
        model, optimizer = wframe_model(sizes), getattr(wf.optimizers, opt)(lr)

    def run():
        with wf.use_backend(backend):
            h = model.fit(
                x, y, epochs=1, batch_size=batch, optimizer=optimizer, verbose=0, **fit_kw
            )
        return h.history["loss"][0]

    return run


def numpy_trainer(params0, opt, lr, b1=0.9, b2=0.999, eps=1e-8):
    """Reference step ``(xb, yb) -> loss``: hand-written forward/backward, in-place Adam/SGD."""
    params = [[np.array(d["W"]), np.array(d["b"])] for d in params0.values()]
    moments = [[np.zeros_like(p), np.zeros_like(p)] for layer in params for p in layer]
    count = [0]

    def step(xb, yb):
        acts, rows = [xb], np.arange(xb.shape[0])
        for i, (W, b) in enumerate(params):
            z = acts[-1] @ W
            z += b
            acts.append(np.maximum(z, 0, out=z) if i < len(params) - 1 else z)
        shifted = acts[-1] - acts[-1].max(axis=1, keepdims=True)
        e = np.exp(shifted)
        s = e.sum(axis=1, keepdims=True)
        loss = float((np.log(s[:, 0]) - shifted[rows, yb]).mean())
        d = e / s
        d[rows, yb] -= 1
        d /= xb.shape[0]
        grads = []
        for i in range(len(params) - 1, -1, -1):
            W = params[i][0]
            grads[:0] = [acts[i].T @ d, d.sum(axis=0)]
            if i > 0:
                d = d @ W.T
                d *= acts[i] > 0
        count[0] += 1
        c1, c2 = 1 - b1 ** count[0], 1 - b2 ** count[0]
        flat = [p for layer in params for p in layer]
        for p, g, (m, v) in zip(flat, grads, moments, strict=True):
            if opt == "sgd":
                p -= lr * g
                continue
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= (lr / c1) * m / (np.sqrt(v / c2) + eps)
        return loss

    return step


def numpy_epoch(params0, opt, lr, x, y, batch):
    """Row: the hand-written loop; wframe's shuffle, np.take gather, keeps the partial batch."""
    step, epoch, n = numpy_trainer(params0, opt, lr), [0], x.shape[0]

    def run():
        order, total = permutation(epoch[0], n), 0.0
        epoch[0] += 1
        for s in range(0, n, batch):
            idx = order[s : s + batch]
            total += step(np.take(x, idx, axis=0), np.take(y, idx, axis=0)) * idx.size
        return total / n

    return run


def jax_epoch(params0, opt, lr, x, y, batch, scan):
    """Rows: per-step jit with host-gathered batches, or the whole epoch in one jit (lax.scan)."""
    import jax
    import jax.numpy as jnp
    import optax

    tx = getattr(optax, opt)(lr)

    def loss_fn(params, xb, yb):
        h = xb
        for W, b in params[:-1]:
            h = jax.nn.relu(h @ W + b)
        logits = h @ params[-1][0] + params[-1][1]
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def update(params, opt_state, xb, yb):
        loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params = [(jnp.asarray(d["W"]), jnp.asarray(d["b"])) for d in params0.values()]
    state, epoch, n = [params, tx.init(params)], [0], x.shape[0]
    full, rem = divmod(n, batch)

    def whole(params, opt_state, x, y, order):
        def body(carry, idx):
            p, s, loss = update(*carry, jnp.take(x, idx, axis=0), jnp.take(y, idx, axis=0))
            return (p, s), loss

        idx = order[: full * batch].reshape(full, batch)
        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), idx)
        total = losses.sum() * batch
        if rem:  # the last partial batch, as wframe keeps it: one more step in the same jit
            idx = order[full * batch :]
            params, opt_state, loss = update(params, opt_state, x[idx], y[idx])
            total += loss * rem
        return params, opt_state, total / n

    step = jax.jit(update, donate_argnums=(0, 1))
    run_scan = jax.jit(whole, donate_argnums=(0, 1))
    xd, yd = jnp.asarray(x), jnp.asarray(y)

    def run():
        order = permutation(epoch[0], n)
        epoch[0] += 1
        if scan:
            state[0], state[1], loss = run_scan(*state, xd, yd, jnp.asarray(order, jnp.int32))
            return float(loss)
        losses = []
        for s in range(0, n, batch):
            idx = order[s : s + batch]
            state[0], state[1], loss = step(*state, x[idx], y[idx])
            losses.append((idx.size, loss))
        return sum(k * float(v) for k, v in losses) / n

    return run


def import_keras():
    """Keras 3 on JAX, or ``None`` when not installed or already imported on another backend."""
    if importlib.util.find_spec("keras") is None:
        return None
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "jax"
    keras = importlib.import_module("keras")
    return keras if keras.backend.backend() == "jax" else None


def keras_epoch(keras, params0, sizes, opt, lr, x, y, batch):
    """Row: Keras 3 ``model.fit(epochs=1, shuffle=True)``. The first (cold) epoch sees wframe's
    epoch-0 order with shuffle=False, so its loss is comparable; the timed ones shuffle."""
    hidden = [keras.layers.Dense(k, activation="relu") for k in sizes[1:-1]]
    model = keras.Sequential([keras.Input((sizes[0],)), *hidden, keras.layers.Dense(sizes[-1])])
    for layer, d in zip(model.layers, params0.values(), strict=True):
        layer.set_weights([d["W"], d["b"]])
    ko = keras.optimizers
    optimizer = ko.Adam(lr, epsilon=1e-8) if opt == "adam" else ko.SGD(lr)  # optax's eps
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=optimizer, loss=loss)
    first = [permutation(0, x.shape[0])]

    def run():
        xs, ys = (x[first[0]], y[first[0]]) if first else (x, y)
        h = model.fit(xs, ys, epochs=1, batch_size=batch, verbose=0, shuffle=not first)
        first.clear()
        return h.history["loss"][0]

    return run


def data(name, quick):
    sizes, batch, opt, lr, rows = WORKLOADS[name]
    if rows is None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x, y = (digits.data / 16).astype(np.float32), digits.target.astype(np.int32)
    else:
        rng = np.random.default_rng(SEED)
        rows = 2048 if quick else rows
        x = rng.standard_normal((rows, sizes[0]), dtype=np.float32)
        y = rng.integers(0, sizes[-1], size=rows).astype(np.int32)
    with wf.use_backend("numpy"):  # the shared initial weights: what fit's lazy build draws
        init = wframe_model(sizes).build((None, sizes[0]))
        p0 = {k: {p: wf.to_numpy(v) for p, v in d.items()} for k, d in init.params.items()}
    return sizes, batch, opt, lr, x, y, p0


def bench_epochs(name, rounds, quick, notes):
    sizes, batch, opt, lr, x, y, p0 = data(name, quick)
    print(f"{name}: MLP {'-'.join(map(str, sizes))}, {opt} lr {lr}, batch {batch}, n {len(x)}")
    args = (sizes, batch, opt, lr, x, y)
    runs = {WF_NP: lambda: wframe_epoch("numpy", *args)}
    has_jax = all(importlib.util.find_spec(m) for m in ("jax", "optax"))
    if has_jax:
        runs[WF_JAX] = lambda: wframe_epoch("jax", *args)
        runs[WF_SPE] = lambda: wframe_epoch("jax", *args, steps_per_execution="epoch")
    runs[NP_REF] = lambda: numpy_epoch(p0, opt, lr, x, y, batch)
    if has_jax:
        runs[JAX_STEP] = lambda: jax_epoch(p0, opt, lr, x, y, batch, scan=False)
        runs[JAX_SCAN] = lambda: jax_epoch(p0, opt, lr, x, y, batch, scan=True)
    if has_jax and (keras := import_keras()) is not None:
        runs[KERAS] = lambda: keras_epoch(keras, p0, sizes, opt, lr, x, y, batch)
    else:
        notes.append(f"{name}: {KERAS}: not run (keras 3 with the jax backend is not importable)")
    reps, settle = (1, 0) if quick else (2, 0) if name == "large" else (5, 1)
    res = measure(runs, rounds, reps, settle, notes, name)
    for r in res.values():
        r["samples_per_s"] = len(x) / r["median_ms"] * 1e3
    return res


def bench_step(rounds, quick, notes):
    """Micro row: one Adam step of the small MLP on NumPy, on a fixed batch of 32 digits."""
    sizes, batch, opt, lr, x, y, p0 = data("small", quick)
    xb, yb = x[:batch], y[:batch]

    def wframe_step():  # the public functional API, from a fresh copy of the initial weights
        with wf.use_backend("numpy"):
            model, optimizer = wframe_model(sizes).build((None, sizes[0])), wf.optimizers.adam(lr)
            step = wf.make_train_step(model, "softmax_cross_entropy", optimizer)

        def fresh():
            p = {k: {n: v.copy() for n, v in d.items()} for k, d in p0.items()}
            return wf.TrainState(p, model.state, optimizer.init(p))

        ts, call = [fresh()], lambda ts: step(ts, xb, yb)  # noqa: E731
        try:  # step(ts, x, y, key=None) today; step(ts, batch) the other spelling
            call(ts[0])
        except TypeError:
            call = lambda ts: step(ts, (xb, yb))  # noqa: E731
        ts[0] = fresh()

        def run():
            ts[0], logs = call(ts[0])
            return float(logs["loss"])

        return run

    step = numpy_trainer(p0, opt, lr)
    runs = {WF_STEP: wframe_step, NP_REF: lambda: lambda: step(xb, yb)}
    return measure(runs, rounds, 20 if quick else 100, 5, notes, "step")


def machine_info(load_start):
    info = {"python": platform.python_version(), "cpus": os.cpu_count(), "numpy": np.__version__}
    info["loadavg_1min_start_end"] = [load_start, os.getloadavg()[0]]  # others' load skews times
    if importlib.util.find_spec("threadpoolctl"):
        pools = importlib.import_module("threadpoolctl").threadpool_info()
        info["threadpools"] = [f"{p['internal_api']}: {p['num_threads']} threads" for p in pools]
    for mod in ("jax", "optax", "keras"):
        if mod in sys.modules:
            info[mod] = sys.modules[mod].__version__
    if "jax" in sys.modules:
        info["jax_device"] = str(sys.modules["jax"].devices()[0])
    return info


def add_ratios(workload, res):
    for label, r in res.items():
        ref = res.get(RATIOS.get(label, ""))
        r.update(workload=workload, impl=label, ref=RATIOS[label] if ref else None, ratio=None)
        if ref:
            r["ratio"] = float(np.median(np.divide(r["chunk_ms"], ref["chunk_ms"])))
    return list(res.values())


def report(rows, notes):
    lines = [
        "| workload | impl | timed | median ms | p10 ms | p90 ms | cold ms | samples/s | ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ratio = f"{r['ratio']:.2f}x {r['ref']}" if r["ratio"] is not None else ""
        rate = f"{r['samples_per_s']:,.0f}" if "samples_per_s" in r else ""
        lines.append(
            f"| {r['workload']} | {r['impl']} | {r['n']} | {r['median_ms']:.3f} "
            f"| {r['p10_ms']:.3f} | {r['p90_ms']:.3f} | {r['cold_ms']:.1f} | {rate} | {ratio} |"
        )
    lines.append(
        "\nsmall/large: ms per epoch (timed = epochs); step: ms per Adam step (timed = steps). "
        "ratio: median over rounds of row / named row round medians."
    )
    lines += [f"- check {r['workload']}: {r['impl']} {r['check']}" for r in rows if "check" in r]
    ratios = {(r["workload"], r["impl"]): r["ratio"] for r in rows}
    for wl, impl, limit, op in TARGETS:
        ratio = ratios.get((wl, impl))
        met = ratio is not None and (ratio <= limit if op == "<=" else ratio >= limit)
        ok = "not measured" if ratio is None else "MET" if met else "MISSED"
        got = "" if ratio is None else f"{ratio:.2f}x "
        lines.append(f"- target {wl}: {impl} {op} {limit:.2f}x {RATIOS[impl]}: {got}{ok}")
    lines += [f"- note: {n}" for n in notes]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 10, --quick 2)")
    ap.add_argument("--workloads", default="small,large,step", help="comma list of workloads")
    ap.add_argument("--out", default="benchmarks/results/", help="folder of the JSON and table")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 rounds, 2048 large rows")
    args = ap.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 10)
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = set(names) - {*WORKLOADS, "step"}
    if unknown:
        ap.error(f"unknown workloads {sorted(unknown)}; choose from small, large, step")
    rows, notes, load_start = [], [], os.getloadavg()[0]
    for name in names:
        t0 = time.perf_counter()
        if name == "step":
            res = bench_step(rounds, args.quick, notes)
        else:
            res = bench_epochs(name, rounds, args.quick, notes)
        rows += add_ratios(name, res)
        print(f"  {name} done in {time.perf_counter() - t0:.1f} s")
    info = machine_info(load_start)
    print("machine:", json.dumps(info))
    table = report(rows, notes)
    print(table)
    if args.out:
        (out := Path(args.out)).mkdir(parents=True, exist_ok=True)
        (out / "bench_fit.md").write_text(table + "\n")
        doc = {"machine": info, "rounds": rounds, "quick": args.quick, "rows": rows, "notes": notes}
        (out / "bench_fit.json").write_text(json.dumps(doc, indent=1))
        print(f"wrote {out / 'bench_fit.json'} and {out / 'bench_fit.md'}")


if __name__ == "__main__":
    main()
