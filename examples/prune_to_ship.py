"""Prune to ship: what pruning buys in file size and predict latency, and what it costs.

A 64-512-512-10 relu MLP is trained on 80% of the digits (Adam lr 1e-3, batch 32) and tested
on the other 20%. From the same trained weights, three pruned models, each fine-tuned for
FINE_TUNE epochs with a fresh Adam (the masks keep pruned weights at zero):

- unstructured 90% and 95%: ``wf.pruning.prune`` (one global magnitude threshold over the
  kernels; biases kept). Saved with ``save_weights`` (``sparse="auto"``: the kernels are stored
  as their nonzero values plus a bitmask), and run by ``wf.pruning.sparsify`` (each layer a
  SciPy/BCSR sparse product where it measured faster at that batch size, else dense);
- structured 50%: ``wf.pruning.prune_units`` removes half the units of each hidden layer
  (lowest L2 norm), leaving a smaller dense 64-256-256-10 model.

The table: test accuracy (mean ± std over seeds), the weights file (``save_weights``: params,
masks; the dense model's file is the baseline) and ``model.predict`` latency on 1, 8, 64 and
256 test rows (median over interleaved rounds; speedup against the dense model in the same
round), all measured in this run, with one BLAS thread (as the other examples). Sizes and
latencies are the first seed's models.

python examples/prune_to_ship.py              # 3 seeds
python examples/prune_to_ship.py --quick      # 1 seed, fewer epochs and rounds (~15 s)
WFRAME_BACKEND=jax python examples/prune_to_ship.py --seeds 2
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np
from _claims import band, digits, mean_std, one_blas_thread, parse_args, table, verdict
from sklearn.model_selection import train_test_split

import wframe as wf
from wframe import pruning
from wframe.layers import Dense

HIDDEN = (512, 512)
EPOCHS, QUICK_EPOCHS = 20, 8
FINE_TUNE, QUICK_FINE_TUNE = 5, 2
SPARSITIES, UNITS = (0.9, 0.95), 0.5
BATCHES = (1, 8, 64, 256)
ROUNDS, QUICK_ROUNDS = 7, 3
LR, BATCH_SIZE = 1e-3, 32
# The targets (measured there on a 784-1024-1024-10 MLP; here on the digits model).
FILE_90, FILE_UNITS, SPEEDUP_1, SPEEDUP_UNITS, DROP = 0.15, 0.30, 2.0, 2.5, 2.0


def make_model(seed: int) -> wf.Sequential:
    layers = [*(Dense(k, activation="relu") for k in HIDDEN), Dense(10)]
    return wf.Sequential(layers, seed=seed).build((None, 64))


def train(model, data, epochs: int):
    x_train, y_train, _, _ = data
    opt = wf.optimizers.adam(LR)
    model.fit(x_train, y_train, epochs=epochs, batch_size=BATCH_SIZE, optimizer=opt, verbose=0)
    return model


def accuracy(model, data) -> float:
    return model.evaluate(data[2], data[3])["accuracy"]


def variants(seed: int, quick: bool, x, y) -> tuple[dict, tuple]:
    """``({label: trained model}, data)`` of one seed: dense, unstructured, structured."""
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=seed, stratify=y
    )
    data = (x_train, y_train, x_test, y_test)
    dense = train(make_model(seed), data, QUICK_EPOCHS if quick else EPOCHS)
    tune = QUICK_FINE_TUNE if quick else FINE_TUNE
    models = {"dense": dense}
    for sparsity in SPARSITIES:
        copy = make_model(seed)
        copy.params = dense.params
        models[f"unstructured {sparsity:.0%}"] = train(pruning.prune(copy, sparsity), data, tune)
    small = pruning.prune_units(dense, UNITS)  # a new model; ``dense`` is unchanged
    models[f"structured {UNITS:.0%}"] = train(small, data, tune)
    return models, data


def file_sizes(models: dict) -> dict[str, int]:
    """Bytes of each model's ``save_weights`` file (sparse="auto")."""
    with tempfile.TemporaryDirectory() as folder:
        out = {}
        for i, (label, model) in enumerate(models.items()):
            path = os.path.join(folder, f"m{i}.safetensors")
            model.save_weights(path)
            out[label] = os.path.getsize(path)
        return out


def latencies(models: dict, x: np.ndarray, rounds: int, quick: bool) -> tuple[dict, dict, float]:
    """``({(label, batch): [ms per round]}, {(label, batch): layer choices}, max |diff|)``:
    ``predict`` on ``batch`` rows, every model in turn in each round (unstructured models
    sparsified for that batch size); the largest difference of a sparsified model's outputs
    from its pruned dense model's."""
    times, choices, gap = {}, {}, 0.0
    for batch in BATCHES:
        xb = x[:batch]
        runs = {}
        for label, model in models.items():
            if label.startswith("unstructured"):
                fast = pruning.sparsify(model, batch_size=batch, seconds=0.01 if quick else 0.05)
                choices[(label, batch)] = "".join(r["choice"][0] for r in fast.sparse_layers)
                diff = np.abs(wf.to_numpy(fast.predict(xb)) - wf.to_numpy(model.predict(xb)))
                gap, model = max(gap, float(diff.max())), fast
            runs[label] = lambda m=model, xb=xb, b=batch: wf.to_numpy(m.predict(xb, batch_size=b))
        reps = {label: _reps(run) for label, run in runs.items()}
        for r in range(rounds):
            order = list(runs)[r % len(runs) :] + list(runs)[: r % len(runs)]
            for label in order:
                per = []
                for _ in range(reps[label]):
                    t0 = time.perf_counter()
                    runs[label]()
                    per.append(time.perf_counter() - t0)
                times.setdefault((label, batch), []).append(1e3 * statistics.median(per))
    return times, choices, gap


def _reps(run) -> int:
    """Calls per round: about 20 ms of them (after two warm-up calls)."""
    run()
    t0 = time.perf_counter()
    run()
    return max(3, min(200, int(0.02 / max(time.perf_counter() - t0, 1e-6))))


def speedup(times: dict, label: str, batch: int) -> float:
    """The median over rounds of dense / ``label`` (paired by round)."""
    dense, other = times[("dense", batch)], times[(label, batch)]
    return statistics.median(d / o for d, o in zip(dense, other, strict=True))


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], seeds=3)
    x, y = digits()
    name = wf.get_backend().name
    print(
        f"backend {name}: digits MLP 64-{'-'.join(map(str, HIDDEN))}-10, 80/20 split, "
        f"{QUICK_EPOCHS if args.quick else EPOCHS} epochs, fine-tuned "
        f"{QUICK_FINE_TUNE if args.quick else FINE_TUNE} epochs after pruning, "
        f"{args.seeds} seed(s)"
    )
    start = time.perf_counter()
    runs = [variants(seed, args.quick, x, y) for seed in range(args.seeds)]
    accs = {label: [100 * accuracy(m[label], d) for m, d in runs] for label in runs[0][0]}
    models, data = runs[0]
    sizes = file_sizes(models)
    rounds = QUICK_ROUNDS if args.quick else ROUNDS
    times, choices, gap = latencies(models, data[2], rounds, args.quick)

    headers = ["model", "test acc %", "weights", "file KB", "% of dense"]
    headers += [f"b={b} ms (speedup)" for b in BATCHES]
    rows = []
    for label, model in models.items():
        nonzero = sum(
            int(np.count_nonzero(wf.to_numpy(a))) for _, a in wf.tree.flatten(model.params)
        )
        row = [label, mean_std(accs[label], ".1f"), f"{nonzero:,}", f"{sizes[label] / 1e3:.1f}"]
        row.append(f"{sizes[label] / sizes['dense']:.1%}")
        for b in BATCHES:
            ms = statistics.median(times[(label, b)])
            row.append(
                f"{ms:.3f}" + ("" if label == "dense" else f" ({speedup(times, label, b):.2f}x)")
            )
        rows.append(row)
    print()
    print(table(headers, rows))
    print()
    print(
        "weights: nonzero params; file: save_weights (sparse='auto': unstructured kernels "
        "packed as values + bitmask); latency: model.predict on b test rows, median of "
        f"{rounds} interleaved rounds, the unstructured models sparsified for each b "
        "(layer choices s/d: "
        + ", ".join(f"{label[-3:]} b={b} {c}" for (label, b), c in choices.items())
        + f"); sparsified outputs differ from the pruned dense model's by at most {gap:.1e}; "
        f"accuracy mean ± std over {args.seeds} seed(s); {time.perf_counter() - start:.0f} s"
    )
    _verdicts(accs, sizes, times)


def _verdicts(accs: dict, sizes: dict, times: dict) -> None:
    """The issue's targets, as measured here."""
    (u90, u95), st = [f"unstructured {s:.0%}" for s in SPARSITIES], f"structured {UNITS:.0%}"
    share = sizes[u90] / sizes["dense"]
    print(
        verdict(
            f"a {SPARSITIES[0]:.0%}-sparse model's file is <= {FILE_90:.0%} of the dense one",
            share <= FILE_90,
            f"{share:.1%} ({sizes[u90] / 1e3:.1f} KB of {sizes['dense'] / 1e3:.1f} KB)",
        )
    )
    fast = speedup(times, u95, 1)
    print(
        verdict(
            f"sparsify at {SPARSITIES[1]:.0%} predicts >= {SPEEDUP_1:g}x faster than dense at "
            "batch 1",
            fast >= SPEEDUP_1,
            f"{fast:.2f}x",
        )
    )
    small, quick = sizes[st] / sizes["dense"], speedup(times, st, BATCHES[-1])
    print(
        verdict(
            f"removing {UNITS:.0%} of the units gives a file <= {FILE_UNITS:.0%} of dense and "
            f"predicts >= {SPEEDUP_UNITS:g}x faster at batch {BATCHES[-1]}",
            small <= FILE_UNITS and quick >= SPEEDUP_UNITS,
            f"file {small:.1%}, {quick:.2f}x faster",
        )
    )
    pruned = [label for label in accs if label != "dense"]
    change = {  # points, per seed, against the same seed's dense model
        label: [a - d for a, d in zip(accs[label], accs["dense"], strict=True)] for label in pruned
    }
    worst_drop = max(-band(change[label])[0] for label in pruned)
    detail = "; ".join(f"{label} {mean_std(change[label], '.1f', sign=True)}" for label in pruned)
    print(
        verdict(
            f"fine-tuned, each pruned model loses less than {DROP:g} points of accuracy",
            worst_drop < DROP,
            f"change against dense (points, mean - std must stay above -{DROP:g}): {detail}",
        )
    )


if __name__ == "__main__":
    with one_blas_thread():
        main()
