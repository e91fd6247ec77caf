"""Train-step benchmark of wframe MLPs against hand-written references, in one run.

Run:  .venv/bin/python benchmarks/bench_mlp.py [--steps N] [--out DIR] [--backends numpy,jax]

Workloads (float32, softmax cross-entropy on integer labels, one SGD step with lr 0.01):
  large: MLP 784-1024-1024-10 (relu) at batch 256;  small: MLP 64-64-10 (relu) at batch 32.
Rows: wframe on each available backend; "plain numpy" (hand-written forward/backward, in-place
update); "plain jax" (jit of value_and_grad + optax.sgd, params/opt state donated); "plain cupy"
(plain numpy's code on CuPy, with a GPU); PyTorch CPU (nn.Sequential + optim.SGD), a peer with no
target. Same initial weights everywhere. The first call is "cold" (includes jit compile); then N
steps (4N for the small MLP), each timed by time.perf_counter around step + synchronize: median,
p10, p90. GFLOP/s counts 2*m*n*k per GEMM: 1 per layer forward, 2 backward (1 for layer 1).
Writes bench_mlp.json and bench_mlp.md to --out (default benchmarks/results/, git-ignored).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

import wframe as wf

LR = 0.01
WORKLOADS = {"large": ((784, 1024, 1024, 10), 256), "small": ((64, 64, 10), 32)}
TARGETS = [("large", "numpy", 1.10), ("large", "jax", 1.05), ("small", "numpy", 1.5)]


def gflop(sizes, m):
    pairs = enumerate(zip(sizes[:-1], sizes[1:], strict=False))
    return sum(2 * m * k * n * (2 if i == 0 else 3) for i, (k, n) in pairs) / 1e9


def measure(makers, steps, rounds=10, settle=3):
    """Time each ``maker()``'s step (it returns its synchronized loss) in ms. Rows take turns,
    ``rounds`` chunks each, so load drift hits all alike; a 0.1 s pause and ``settle`` untimed
    steps open each chunk, so the previous row's spinning BLAS/OpenMP/XLA threads bill no one."""
    fns, res = {}, {}
    for label, make in makers.items():
        fns[label] = make()
        t0 = time.perf_counter()
        loss = float(fns[label]())  # the loss of step 1, the same on every row: a sanity check
        res[label] = {"cold_ms": (time.perf_counter() - t0) * 1e3, "loss0": loss, "times": []}
    for _ in range(rounds):
        for label, fn in fns.items():
            time.sleep(0.1)
            for i in range(settle + -(-steps // rounds)):
                t0 = time.perf_counter()
                fn()
                if i >= settle:
                    res[label]["times"].append((time.perf_counter() - t0) * 1e3)
    for r in res.values():
        times = np.reshape(r.pop("times"), (rounds, -1))
        r["steps"], r["chunk_ms"] = times.size, np.median(times, axis=1).tolist()  # for ratios
        r["p10_ms"], r["median_ms"], r["p90_ms"] = np.percentile(times, [10, 50, 90])
    return res


def wframe_step(name, sizes, params0, x, y):
    with wf.use_backend(name):
        b = wf.get_backend()
        layers = [wf.layers.Dense(n, activation="relu") for n in sizes[1:-1]]
        model = wf.Sequential([*layers, wf.layers.Dense(sizes[-1])], seed=0).build((None, sizes[0]))
        model.params = {k: {p: b.asarray(v) for p, v in d.items()} for k, d in params0.items()}
        opt = wf.optimizers.sgd(LR)
        step = wf.make_train_step(model, wf.losses.get("softmax_cross_entropy"), opt)
        ts = wf.TrainState(model.params, model.state, opt.init(model.params))
        xb, yb = b.asarray(x, dtype="float32"), b.asarray(y, dtype="int32")

    def run():  # the step is pure and bound to its backend: no use_backend per step
        nonlocal ts
        ts, logs = step(ts, xb, yb)
        return b.synchronize(logs["loss"])

    return run


def plain_xp_step(xp, params0, x, y, sync=lambda a: a):
    """Reference 1: hand-written forward/backward and in-place SGD (NumPy or CuPy)."""
    params = [(xp.array(d["W"], copy=True), xp.array(d["b"], copy=True)) for d in params0.values()]
    x, y = xp.asarray(x), xp.asarray(y)
    rows = xp.arange(x.shape[0])

    def run():
        acts = [x]
        for i, (W, b) in enumerate(params):
            z = acts[-1] @ W + b
            acts.append(xp.maximum(z, 0) if i < len(params) - 1 else z)
        shifted = acts[-1] - acts[-1].max(axis=1, keepdims=True)
        e = xp.exp(shifted)
        s = e.sum(axis=1, keepdims=True)
        loss = (xp.log(s[:, 0]) - shifted[rows, y]).mean()
        d = e / s
        d[rows, y] -= 1
        d /= x.shape[0]
        for i in range(len(params) - 1, -1, -1):
            W, b = params[i]
            dW, db = acts[i].T @ d, d.sum(axis=0)
            if i > 0:
                d = d @ W.T
                d *= acts[i] > 0
            W -= LR * dW
            b -= LR * db
        return sync(loss)

    return run


def plain_jax_step(params0, x, y):
    """Reference 2: what a JAX user writes: jit(value_and_grad) + optax.sgd, donated state."""
    import jax
    import jax.numpy as jnp
    import optax

    def loss_fn(params, x, y):
        h = x
        for W, b in params[:-1]:
            h = jax.nn.relu(h @ W + b)
        logits = h @ params[-1][0] + params[-1][1]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    opt = optax.sgd(LR)

    def _step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(_step, donate_argnums=(0, 1))
    params = [(jnp.asarray(d["W"]), jnp.asarray(d["b"])) for d in params0.values()]
    state, x, y = [params, opt.init(params)], jnp.asarray(x), jnp.asarray(y)

    def run():
        state[0], state[1], loss = step(state[0], state[1], x, y)
        return loss.block_until_ready()

    return run


def torch_step(params0, x, y):
    """Peer: PyTorch CPU nn.Sequential + optim.SGD."""
    import torch

    mods = []
    for d in params0.values():
        mods += [lin := torch.nn.Linear(*d["W"].shape), torch.nn.ReLU()]
        lin.weight.data, lin.bias.data = torch.tensor(d["W"].T), torch.tensor(d["b"])
    net = torch.nn.Sequential(*mods[:-1])
    opt, loss_fn = torch.optim.SGD(net.parameters(), lr=LR), torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))

    def run():
        opt.zero_grad(set_to_none=True)
        (loss := loss_fn(net(xt), yt)).backward()
        opt.step()
        return loss.detach()

    return run


def machine_info(backends):
    info = {"python": platform.python_version(), "cpus": os.cpu_count(), "numpy": np.__version__}
    info["OPENBLAS_CORETYPE"], info["threadpools"] = os.environ.get("OPENBLAS_CORETYPE"), "?"
    if importlib.util.find_spec("threadpoolctl"):
        pools = importlib.import_module("threadpoolctl").threadpool_info()
        info["threadpools"] = [f"{p['internal_api']}: {p['num_threads']} threads" for p in pools]
    if "jax" in backends:
        jax = importlib.import_module("jax")
        info["jax"], info["jax_device"] = jax.__version__, str(jax.devices()[0])
    return info


def bench(name, sizes, batch, steps, backends):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], size=batch).astype(np.int32)
    with wf.use_backend("numpy"):  # the shared initial weights: wframe's Glorot init, seed 0
        init = wf.Sequential([wf.layers.Dense(n) for n in sizes[1:]]).build((None, sizes[0]))
        p0 = {k: {p: np.array(v) for p, v in d.items()} for k, d in init.params.items()}
    runs = {f"wframe[{b}]": (lambda b=b: wframe_step(b, sizes, p0, x, y)) for b in backends}
    runs["plain numpy"] = lambda: plain_xp_step(np, p0, x, y)
    if "jax" in backends:
        runs["plain jax"] = lambda: plain_jax_step(p0, x, y)
    if "cupy" in backends:
        import cupy

        sync = lambda a: (cupy.cuda.get_current_stream().synchronize(), a)[1]  # noqa: E731
        runs["plain cupy"] = lambda: plain_xp_step(cupy, p0, x, y, sync)
    if importlib.util.find_spec("torch"):
        runs["torch cpu (peer)"] = lambda: torch_step(p0, x, y)
    flop, res = gflop(sizes, batch), measure(runs, steps)
    for label, r in res.items():
        ref = res.get(f"plain {label[7:-1]}") if label.startswith("wframe[") else None
        r.update(workload=name, impl=label, gflops=flop / r["median_ms"] * 1e3)
        r["ratio"] = float(np.median(np.divide(r["chunk_ms"], ref["chunk_ms"]))) if ref else None
    return list(res.values())


def report(rows):
    lines = [
        "| workload | impl | steps | median ms | p10 ms | p90 ms | cold ms | GFLOP/s | ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] else ""
        lines.append(
            f"| {r['workload']} | {r['impl']} | {r['steps']} | {r['median_ms']:.3f} "
            f"| {r['p10_ms']:.3f} | {r['p90_ms']:.3f} | {r['cold_ms']:.1f} | {r['gflops']:.1f} "
            f"| {ratio} |"
        )
    lines.append("\nratio: median over rounds of wframe / plain (same backend) round medians")
    ratios = {(r["workload"], r["impl"]): r["ratio"] for r in rows}
    for wl, bk, limit in TARGETS:
        ratio = ratios.get((wl, f"wframe[{bk}]"))
        ok = "not measured" if ratio is None else "MET" if ratio <= limit else "MISSED"
        got = "" if ratio is None else f"{ratio:.2f}x "
        lines.append(f"- target {wl} MLP: wframe[{bk}] <= {limit:.2f}x plain {bk}: {got}{ok}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50, help="timed steps (4x for the small MLP)")
    ap.add_argument("--out", default="benchmarks/results/", help="folder of the JSON and table")
    ap.add_argument("--backends", default=None, help="comma list; default: wf.available()")
    args = ap.parse_args(argv)
    backends = args.backends.split(",") if args.backends else wf.available()
    rows = []
    for name, (sizes, batch) in WORKLOADS.items():
        rows += bench(name, sizes, batch, args.steps * (4 if name == "small" else 1), backends)
    info = machine_info(backends)  # after the runs, so that torch's thread pools show too
    print("machine:", json.dumps(info))
    table = report(rows)
    print(table)
    if args.out:
        (out := Path(args.out)).mkdir(parents=True, exist_ok=True)
        (out / "bench_mlp.md").write_text(table + "\n")
        (out / "bench_mlp.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
        print(f"wrote {out / 'bench_mlp.json'} and {out / 'bench_mlp.md'}")


if __name__ == "__main__":
    main()
