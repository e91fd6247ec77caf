"""Train-step benchmark of wframe MLPs against hand-written references, in one run.

Run:  .venv/bin/python benchmarks/bench_mlp.py [--steps N] [--out DIR] [--backends numpy,jax]

Workloads (float32, softmax cross-entropy on integer labels, one SGD step with lr 0.01):
  large: MLP 784-1024-1024-10 (relu) at batch 256;  small: MLP 64-64-10 (relu) at batch 32.
Rows per workload: wframe on each available backend; "plain numpy" (hand-written
forward/backward, in-place update); "plain jax" (jax.jit of value_and_grad + optax.sgd, params
and opt state donated); "plain cupy" (reference 1 on CuPy, if a GPU works); PyTorch CPU
(nn.Sequential + optim.SGD) as a peer without target. All start from the same weights.
Timing: the first call is reported as "cold" (includes jit compile); then N steps (4N for the
small MLP) each timed with time.perf_counter around step + synchronize; median, p10, p90.
GFLOP/s counts 2*m*n*k per GEMM: 1 per layer forward, 2 backward (no input grad for layer 1).
Writes bench_mlp.json and bench_mlp.md to --out (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
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
    pairs = list(zip(sizes[:-1], sizes[1:], strict=False))
    return sum(2 * m * k * n * (2 if i == 0 else 3) for i, (k, n) in enumerate(pairs)) / 1e9


def measure(makers, steps, rounds=5, settle=3):
    """Time each ``maker()``'s step (it returns its synchronized loss); times in ms.

    The rows take turns, ``rounds`` chunks each, so load drift on a shared machine hits all alike;
    ``settle`` untimed steps open every chunk, so one row's spinning BLAS/OpenMP/XLA threads do
    not bill the next row.
    """
    fns, res = {}, {}
    for label, make in makers.items():
        fns[label] = make()
        t0 = time.perf_counter()
        loss = float(fns[label]())
        res[label] = {"cold_ms": (time.perf_counter() - t0) * 1e3, "loss0": loss, "times": []}
    for _ in range(rounds):
        for label, fn in fns.items():
            for i in range(settle + -(-steps // rounds)):
                t0 = time.perf_counter()
                fn()
                if i >= settle:
                    res[label]["times"].append((time.perf_counter() - t0) * 1e3)
    for r in res.values():
        r["p10_ms"], r["median_ms"], r["p90_ms"] = np.percentile(r.pop("times"), [10, 50, 90])
    return res


# ------------------------------------------------------------------------------- steps
def wframe_step(name, sizes, params0, x, y):
    with wf.use_backend(name):
        b = wf.get_backend()
        layers = [wf.layers.Dense(n, activation="relu") for n in sizes[1:-1]]
        model = wf.Sequential([*layers, wf.layers.Dense(sizes[-1])], seed=0)
        model.build((None, sizes[0]))
        model.params = {k: {p: b.asarray(v) for p, v in d.items()} for k, d in params0.items()}
        opt = wf.optimizers.sgd(LR)
        step = wf.make_train_step(model, wf.losses.get("softmax_cross_entropy"), opt)
        ts = wf.TrainState(model.params, model.state, opt.init(model.params))
        xb, yb = b.asarray(x, dtype="float32"), b.asarray(y, dtype="int32")

    def run():
        nonlocal ts
        with wf.use_backend(name):
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
        W, b = params[-1]
        logits = h @ W + b
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    opt = optax.sgd(LR)

    def _step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(_step, donate_argnums=(0, 1))
    params = [(jnp.asarray(d["W"]), jnp.asarray(d["b"])) for d in params0.values()]
    state = [params, opt.init(params)]
    x, y = jnp.asarray(x), jnp.asarray(y)

    def run():
        state[0], state[1], loss = step(state[0], state[1], x, y)
        return loss.block_until_ready()

    return run


def torch_step(params0, x, y):
    """Peer: PyTorch CPU nn.Sequential + optim.SGD."""
    import torch

    mods = []
    for d in params0.values():
        lin = torch.nn.Linear(*d["W"].shape)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(d["W"].T.copy()))
            lin.bias.copy_(torch.from_numpy(d["b"]))
        mods += [lin, torch.nn.ReLU()]
    net = torch.nn.Sequential(*mods[:-1])
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    loss_fn = torch.nn.CrossEntropyLoss()

    def run():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(xt), yt)
        loss.backward()
        opt.step()
        return loss.detach()

    return run


# ------------------------------------------------------------------------------- driver
def machine_info(backends):
    info = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
    }
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [
            f"{p['internal_api']} {p.get('version')} threads={p['num_threads']}"
            for p in threadpool_info()
        ]
    except ImportError:
        info["blas"] = "threadpoolctl not installed"
    if "jax" in backends:
        import jax

        info["jax"], info["jax_device"] = jax.__version__, str(jax.devices()[0])
    return info


def bench(name, sizes, batch, steps, backends):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], size=batch).astype(np.int32)
    with wf.use_backend("numpy"):
        init = wf.Sequential([wf.layers.Dense(n) for n in sizes[1:]], seed=0)
        init.build((None, sizes[0]))
        params0 = {
            k: {p: np.array(wf.to_numpy(v)) for p, v in d.items()} for k, d in init.params.items()
        }
    runs = {f"wframe[{b}]": (lambda b=b: wframe_step(b, sizes, params0, x, y)) for b in backends}
    runs["plain numpy"] = lambda: plain_xp_step(np, params0, x, y)
    if "jax" in backends:
        runs["plain jax"] = lambda: plain_jax_step(params0, x, y)
    if "cupy" in backends:
        import cupy

        sync = lambda a: (cupy.cuda.get_current_stream().synchronize(), a)[1]  # noqa: E731
        runs["plain cupy"] = lambda: plain_xp_step(cupy, params0, x, y, sync)
    try:
        import torch  # noqa: F401

        runs["torch cpu (peer)"] = lambda: torch_step(params0, x, y)
    except ImportError:
        pass
    flop = gflop(sizes, batch)
    rows = [
        {"workload": name, "impl": label, "gflops": flop / r["median_ms"] * 1e3, **r}
        for label, r in measure(runs, steps).items()
    ]
    by = {r["impl"]: r for r in rows}
    for r in rows:
        if r["impl"].startswith("wframe["):
            ref = by.get("plain " + r["impl"][7:-1])
            r["ratio"] = r["median_ms"] / ref["median_ms"] if ref else None
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50, help="timed steps (4x for the small MLP)")
    ap.add_argument("--out", default="benchmarks/results/")
    ap.add_argument("--backends", default=None, help="comma list; default wf.available()")
    args = ap.parse_args(argv)
    backends = args.backends.split(",") if args.backends else wf.available()
    info = machine_info(backends)
    print("machine:", json.dumps(info))
    rows = []
    for name, (sizes, batch) in WORKLOADS.items():
        steps = args.steps * (4 if name == "small" else 1)
        rows += bench(name, sizes, batch, steps, backends)
    lines = [
        "| workload | impl | median ms | p10 ms | p90 ms | cold ms | GFLOP/s | ratio | loss0 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if r.get("ratio") else ""
        lines.append(
            f"| {r['workload']} | {r['impl']} | {r['median_ms']:.3f} | {r['p10_ms']:.3f} "
            f"| {r['p90_ms']:.3f} | {r['cold_ms']:.1f} | {r['gflops']:.1f} | {ratio} "
            f"| {r['loss0']:.4f} |"
        )
    lines.append("")
    ratios = {(r["workload"], r["impl"]): r.get("ratio") for r in rows}
    for wl, bk, limit in TARGETS:
        ratio = ratios.get((wl, f"wframe[{bk}]"))
        verdict = (
            "not measured"
            if ratio is None
            else f"{ratio:.2f}x " + ("MET" if ratio <= limit else "MISSED")
        )
        lines.append(f"- target {wl} MLP: wframe[{bk}] <= {limit:.2f}x plain {bk}: {verdict}")
    table = "\n".join(lines)
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench_mlp.md").write_text(table + "\n")
        (out / "bench_mlp.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
        print(f"wrote {out / 'bench_mlp.json'} and {out / 'bench_mlp.md'}")


if __name__ == "__main__":
    main()
