"""Forward + backward time of each wframe layer, against the matching PyTorch CPU layer.

Run:  .venv/bin/python benchmarks/bench_layers.py [--rounds N] [--out DIR] [--layers dense,lstm]

Measured per layer, float32, one representative size (see LAYERS): the value and gradient of
``sum(y * dy)`` w.r.t. the layer's params and its input ``x`` (train mode), for a fixed random
``dy``. Rows: "wframe[numpy]" is ``layer.forward`` plus its hand-written ``backprop(dy)``;
"wframe[jax]" is ``jit(value_and_grad)`` of ``layer.forward`` (how wframe's training
differentiates on JAX; BatchNorm's new state is returned as aux, as in training); "torch cpu" is
the matching ``torch.nn`` layer (NCHW for images, same weights; Dropout draws its own mask),
forward + ``.backward()``, a peer with no target. Timing is the suite's ``Timer``
(``wframe/bench/timing.py``): a cold and up to 3 warm steps per row, then the rows take turns
in ``--rounds`` rounds (default 10), each turn opened by a 0.1 s pause (and an untimed step for
rows under 50 ms) and ~0.25 s of timed steps; every step ends in a synchronize (the loss, grads
and dx are all ready). JAX compiles before timing (not reported). Ratios: median over rounds of
(row / torch) round medians.
Writes bench_layers.json and bench_layers.md to --out (default benchmarks/results/, git-ignored).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from pathlib import Path

import numpy as np

import wframe as wf
from wframe import layers as L
from wframe.bench import report
from wframe.bench.timing import Row, Timer, ratio

# name: (layer, input shape (batch first)); the hidden size "units"/"filters" sets the output.
LAYERS = {
    "dense": (L.Dense(1024, activation="relu"), (256, 1024)),
    "conv2d": (L.Conv2D(32, 3, padding="same"), (32, 32, 32, 16)),
    "max_pool2d": (L.MaxPool2D(2), (32, 32, 32, 32)),
    "avg_pool2d": (L.AvgPool2D(2), (32, 32, 32, 32)),
    "batch_norm": (L.BatchNorm(), (32, 32, 32, 32)),
    "layer_norm": (L.LayerNorm(), (512, 1024)),
    "dropout": (L.Dropout(0.5), (512, 1024)),
    "simple_rnn": (L.SimpleRNN(128), (64, 50, 32)),
    "lstm": (L.LSTM(128), (64, 50, 32)),
    "gru": (L.GRU(128), (64, 50, 32)),
}


def wframe_row(backend, layer, p0, s0, x, dy):
    """``run()`` -> the loss, after forward + backward on ``backend`` (numpy or jax)."""
    with wf.use_backend(backend):
        b = wf.get_backend()
        params = {k: b.asarray(v) for k, v in p0.items()}
        state = {k: b.asarray(v) for k, v in s0.items()}
        xb, dyb = b.asarray(x), b.asarray(dy)
        key = wf.random.array_key(0, 1) if layer.uses_key else None
        xp = b.xp

        def objective(params_x, state, key, dy):
            y, new_state, backprop = layer.forward(
                params_x[0], state, params_x[1], train=True, key=key
            )
            return (xp.sum(y * dy), new_state), backprop

        if b.has_autodiff:
            vg = b.jit(b.value_and_grad(lambda *a: objective(*a)[0], has_aux=True))
            step = lambda: vg((params, xb), state, key, dyb)  # noqa: E731
        else:

            def step():
                value, backprop = objective((params, xb), state, key, dyb)
                dx, grads = backprop(dyb)
                return value, (grads, dx)

        step()  # JAX traces and compiles here, inside use_backend

    def run():
        with wf.use_backend(b):  # the numpy layers ask get_backend() on every forward
            out = b.synchronize(step())
        return out[0][0]

    return run


def torch_row(name, layer, p0, x, dy):
    """Peer: the matching torch.nn layer with the same weights, forward + backward."""
    import torch

    nn, t = torch.nn, lambda a: torch.from_numpy(np.ascontiguousarray(a))
    nchw = lambda a: a.transpose(0, 3, 1, 2)  # noqa: E731
    if x.ndim == 4:
        x, dy = nchw(x), nchw(dy)
    n_in, pick = x.shape[-1 if x.ndim < 4 else 1], lambda out: out
    if name == "dense":
        mod = nn.Sequential(nn.Linear(n_in, layer.units), nn.ReLU())
        weights = {"0.weight": p0["W"].T, "0.bias": p0["b"]}
    elif name == "conv2d":
        k = layer.kernel_size
        mod = nn.Conv2d(n_in, layer.filters, k, padding=(k[0] // 2, k[1] // 2))  # odd k: "same"
        weights = {"weight": p0["W"].transpose(3, 2, 0, 1), "bias": p0["b"]}
    elif name in ("max_pool2d", "avg_pool2d"):
        mod, weights = (nn.MaxPool2d if name == "max_pool2d" else nn.AvgPool2d)(layer.pool_size), {}
    elif name == "batch_norm":
        mod = nn.BatchNorm2d(n_in, eps=layer.epsilon, momentum=1 - layer.momentum)
        weights = {"weight": p0["gamma"], "bias": p0["beta"]}
    elif name == "layer_norm":
        mod = nn.LayerNorm(n_in, eps=layer.epsilon)
        weights = {"weight": p0["gamma"], "bias": p0["beta"]}
    elif name == "dropout":
        mod, weights = nn.Dropout(layer.rate), {}
    else:  # recurrent: torch stores W.T; GRU's gates are r, z, n where wframe has z, r, h
        cls = {"simple_rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[name]
        mod, u = cls(n_in, layer.units, batch_first=True), layer.units
        order = [1, 0, 2] if name == "gru" else list(range(layer.gates))
        gates = lambda a: np.concatenate([a[..., k * u : (k + 1) * u] for k in order], -1)  # noqa: E731
        b_h = p0.get("b_h", np.zeros_like(p0["b"]))
        weights = {"weight_ih_l0": gates(p0["W_x"]).T, "weight_hh_l0": gates(p0["W_h"]).T}
        weights.update(bias_ih_l0=gates(p0["b"]), bias_hh_l0=gates(b_h))
        pick = lambda out: out[0][:, -1]  # noqa: E731
    mod.train()
    with torch.no_grad():
        for k, v in weights.items():
            mod.get_parameter(k).copy_(t(v))
    xt, dyt = t(x).requires_grad_(True), t(dy)
    params = list(mod.parameters())

    def run():
        for p in [*params, xt]:
            p.grad = None
        (loss := (pick(mod(xt)) * dyt).sum()).backward()
        return loss.detach()

    return run


def bench(name, timer, backends, notes):
    layer, shape = LAYERS[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32)
    with wf.use_backend("numpy"):  # the shared initial weights: wframe's init, seed 0
        p0, s0, out_shape = layer.init(0, (None, *shape[1:]))
    p0, s0 = ({k: np.array(v) for k, v in d.items()} for d in (p0, s0))
    dy = rng.standard_normal((shape[0], *out_shape[1:]), dtype=np.float32)
    rows = [
        Row(f"wframe[{b}]", "wframe", b, lambda b=b: wframe_row(b, layer, p0, s0, x, dy))
        for b in backends
    ]
    if importlib.util.find_spec("torch"):
        rows.append(Row("torch cpu", "torch", "torch", lambda: torch_row(name, layer, p0, x, dy)))
    res = timer.measure(rows, notes, tag=f"{name}: ")
    ref = res.get("torch cpu")
    for label, r in res.items():
        r.update(layer=name, impl=label, shape=list(shape))
        r["ratio"] = ratio(r["round_ms"], ref["round_ms"])[0] if ref else None
    return list(res.values())


def table(rows, backends):
    by = {(r["layer"], r["impl"]): r for r in rows}
    impls = [*(f"wframe[{b}]" for b in backends), "torch cpu"]
    lines = [
        "| layer | input | "
        + " | ".join(f"{i} ms" for i in impls)
        + " | "
        + " | ".join(f"{b}/torch" for b in backends)
        + " |",
        "|---|---|" + "---:|" * (len(impls) + len(backends)),
    ]
    bad = []
    for name in dict.fromkeys(r["layer"] for r in rows):
        cells = [by.get((name, i)) for i in impls]
        ms = [f"{c['median_ms']:.3f}" if c else "" for c in cells]
        ratios = [f"{c['ratio']:.2f}x" if c and c["ratio"] else "" for c in cells[:-1]]
        shape = "x".join(map(str, next(c for c in cells if c)["shape"]))
        lines.append(f"| {name} | {shape} | " + " | ".join(ms + ratios) + " |")
        losses = [c["loss0"] for c in cells if c]
        if name != "dropout" and np.ptp(losses) > 1e-3 * max(1.0, np.abs(losses).max()):
            bad.append(f"{name} {losses}")
    lines.append("\nms: median per step; ratio: median over rounds of row / torch round medians")
    agree = "NO: " + "; ".join(bad) if bad else "yes"
    lines.append(f"- sum(y*dy) at step 1 agrees across rows: {agree} (dropout: own masks)")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10, help="rounds every row takes its turn in")
    ap.add_argument("--out", default="benchmarks/results/", help="folder of the JSON and table")
    ap.add_argument(
        "--layers", default=",".join(LAYERS), help="comma list of: " + ", ".join(LAYERS)
    )
    ap.add_argument("--backends", default="numpy,jax", help="comma list (those available run)")
    args = ap.parse_args(argv)
    names = args.layers.split(",")
    if unknown := [n for n in names if n not in LAYERS]:
        ap.error(f"unknown layers {unknown}; choose from {', '.join(LAYERS)}")
    backends = [b for b in args.backends.split(",") if b in wf.available()]
    load, notes, timer = os.getloadavg()[0], [], Timer(rounds=args.rounds)
    rows = [r for name in names for r in bench(name, timer, backends, notes)]
    info = report.environment()  # after the runs, so that torch's thread pools show too
    info["loadavg_1m_before"] = load  # other processes on the cores inflate (torch's) times
    print("machine:", json.dumps(info))
    text = table(rows, backends) + "".join(f"\n- note: {n}" for n in notes)
    print(text)
    if args.out:
        (out := Path(args.out)).mkdir(parents=True, exist_ok=True)
        (out / "bench_layers.md").write_text(text + "\n")
        doc = {"machine": info, "rounds": args.rounds, "rows": rows, "notes": notes}
        (out / "bench_layers.json").write_text(json.dumps(doc, indent=1, default=str))
        print(f"wrote {out / 'bench_layers.json'} and {out / 'bench_layers.md'}")


if __name__ == "__main__":
    main()
