"""Measure three claims on digits: "cyclical learning rates give 2-4% better validation accuracy",
"warmup improves stability" and "Adam converges faster than SGD".

The digits MLP of train_digits.py (64-128-64-10) is trained on 80% of the digits and validated
after every epoch on the other 20%.

1. Schedules, all with SGD + momentum 0.9 and the same peak learning rate: constant, step (x0.1 at
   50% and 75% of training), cosine decay, linear warmup + cosine decay, triangular cyclical
   (Smith 2017: between peak/4 and peak, half a cycle every 5 epochs, so training ends at the end
   of a cycle) and one-cycle (cosine).
2. Optimizers at their usual constant learning rates: SGD (Keras' default 0.01, and 0.1),
   SGD + momentum, Adam and RMSProp.
3. Stability: Adam at a moderate and at a deliberately high peak learning rate, cosine decay with
   and without a linear warmup. Every batch's training loss is recorded; a spike is a batch loss
   more than SPIKE times the first batch's (an untrained network's) loss.

python examples/schedules_digits.py              # 5 seeds
python examples/schedules_digits.py --quick      # 1 seed, fewer epochs and configurations
WFRAME_BACKEND=jax python examples/schedules_digits.py --seeds 3
"""

from __future__ import annotations

import math
import time

import numpy as np
from _claims import (
    EpochClock,
    clearly_positive,
    digits,
    first_reaching,
    mean_std,
    nan_if_none,
    one_blas_thread,
    parse_args,
    table,
    verdict,
)
from sklearn.model_selection import train_test_split
from train_digits import make_model

import wframe as wf
from wframe import schedules

EPOCHS, QUICK_EPOCHS = 30, 15
STABILITY_EPOCHS, QUICK_STABILITY_EPOCHS = 20, 6
BATCH_SIZE = 32
PEAK_LR = 0.05  # SGD + momentum 0.9: the peak of every schedule in part 1
MOMENTUM = 0.9
TARGET = 0.97  # validation accuracy for "epochs to reach"
WARMUP_EPOCHS = 2
HALF_CYCLE_EPOCHS = 5
ADAM_PEAKS = (0.01, 0.1)  # part 3: 10x and 100x Adam's default 1e-3
SPIKE = 2.0
# --quick runs only what each verdict needs: these schedules, optimizers and Adam peaks.
QUICK = {
    "schedules": ("constant", "triangular"),
    "optimizers": ("SGD 0.1", "Adam 1e-3"),
    "peaks": (0.1,),
}


def schedule_configs(steps_per_epoch: int, epochs: int) -> dict:
    """Part 1: name -> SGD + momentum with that learning-rate schedule."""
    total, warmup = steps_per_epoch * epochs, steps_per_epoch * WARMUP_EPOCHS
    half_cycle = steps_per_epoch * min(HALF_CYCLE_EPOCHS, max(epochs // 2, 1))
    sched = {
        f"constant {PEAK_LR:g}": schedules.constant_schedule(PEAK_LR),
        "step (x0.1 at 50%, 75%)": schedules.piecewise_constant_schedule(
            PEAK_LR, {total // 2: 0.1, 3 * total // 4: 0.1}
        ),
        "cosine": schedules.cosine_decay_schedule(PEAK_LR, total),
        f"warmup {WARMUP_EPOCHS} ep + cosine": schedules.warmup_cosine_decay_schedule(
            0.0, PEAK_LR, warmup, total
        ),
        f"triangular ({PEAK_LR / 4:g}..{PEAK_LR:g})": schedules.cyclical_schedule(
            PEAK_LR / 4, PEAK_LR, half_cycle, mode="triangular"
        ),
        "one-cycle (cosine)": schedules.cosine_onecycle_schedule(total, PEAK_LR),
    }
    return {
        f"SGD+mom, {name}": wf.optimizers.sgd(s, momentum=MOMENTUM) for name, s in sched.items()
    }


OPTIMIZERS = {
    "SGD 0.01": lambda: wf.optimizers.sgd(0.01),
    "SGD 0.1": lambda: wf.optimizers.sgd(0.1),
    f"SGD+mom {MOMENTUM:g}, 0.01": lambda: wf.optimizers.sgd(0.01, momentum=MOMENTUM),
    "Adam 1e-3": lambda: wf.optimizers.adam(1e-3),
    "RMSProp 1e-3": lambda: wf.optimizers.rmsprop(1e-3),
}


def stability_configs(steps_per_epoch: int, epochs: int) -> dict:
    """Part 3: name -> Adam with cosine decay, with and without warmup, at each peak."""
    total, warmup = steps_per_epoch * epochs, steps_per_epoch * min(WARMUP_EPOCHS, epochs - 1)
    configs = {}
    for peak in ADAM_PEAKS:
        configs[(peak, False)] = wf.optimizers.adam(schedules.cosine_decay_schedule(peak, total))
        configs[(peak, True)] = wf.optimizers.adam(
            schedules.warmup_cosine_decay_schedule(0.0, peak, warmup, total)
        )
    return configs


class BatchLosses(wf.callbacks.Callback):
    """Every batch's training loss, recovered from ``fit``'s running, size-weighted epoch means."""

    def __init__(self, n: int, batch_size: int):
        self.n, self.batch_size, self.losses = n, batch_size, []

    def on_epoch_begin(self, epoch, logs=None):
        self._total, self._count = 0.0, 0

    def on_train_batch_end(self, batch, logs=None):
        count = min((batch + 1) * self.batch_size, self.n)
        total = logs["loss"] * count
        self.losses.append((total - self._total) / (count - self._count))
        self._total, self._count = total, count


def train(model, optimizer, data, epochs, callbacks=()):
    x_train, y_train, x_val, y_val = data
    clock = EpochClock()
    history = model.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        optimizer=optimizer,
        validation_data=(x_val, y_val),
        verbose=0,
        callbacks=[clock, *callbacks],
    )
    val = history.history.get("val_accuracy") or [math.nan]
    reached = first_reaching(val, TARGET)
    return {
        "epochs_to": nan_if_none(None if reached is None else reached + 1),
        "seconds_to": nan_if_none(None if reached is None else clock.seconds[reached]),
        "seconds": clock.seconds[-1] if clock.seconds else math.nan,
        "best": max(val),
        "final": val[-1],
    }


def measure(seed: int, quick: bool, x, y) -> dict:
    epochs = QUICK_EPOCHS if quick else EPOCHS
    stability_epochs = QUICK_STABILITY_EPOCHS if quick else STABILITY_EPOCHS
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.2, random_state=seed, stratify=y
    )
    data = (x_train, y_train, x_val, y_val)
    steps = math.ceil(len(x_train) / BATCH_SIZE)
    results = {}
    for name, optimizer in schedule_configs(steps, epochs).items():
        if not quick or any(s in name for s in QUICK["schedules"]):
            results[name] = train(make_model(seed), optimizer, data, epochs)
    for name, make_optimizer in OPTIMIZERS.items():
        if not quick or name in QUICK["optimizers"]:
            results[name] = train(make_model(seed), make_optimizer(), data, epochs)
    for key, optimizer in stability_configs(steps, stability_epochs).items():
        if quick and key[0] not in QUICK["peaks"]:
            continue
        batches = BatchLosses(len(x_train), BATCH_SIZE)
        run = train(make_model(seed), optimizer, data, stability_epochs, [batches])
        losses = np.asarray(batches.losses)
        run["first_loss"] = losses[0]
        run["max_loss"] = losses.max()
        run["spikes"] = int((losses[1:] > SPIKE * losses[0]).sum())
        results[key] = run
    return results


def column(runs: list[dict], name, key: str) -> list[float]:
    return [r[name][key] for r in runs]


def reached(runs: list[dict], name: str, key: str, fmt: str) -> str:
    """Mean ± std over the seeds that reached the target, "(k/n)" when not all did."""
    values = column(runs, name, key)
    hits = sum(v == v for v in values)
    cell = mean_std(values, fmt)
    return cell if hits in (0, len(values)) else f"{cell} ({hits}/{len(values)})"


def speed_table(runs: list[dict]) -> str:
    target = f"{TARGET:.0%}"
    headers = [
        "optimizer, learning rate",
        f"epochs to val acc >= {target}",
        f"seconds to {target}",
        "best val acc",
        "final val acc",
    ]
    rows = [
        [
            name,
            reached(runs, name, "epochs_to", ".1f"),
            reached(runs, name, "seconds_to", ".2f"),
            mean_std(column(runs, name, "best")),
            mean_std(column(runs, name, "final")),
        ]
        for name in runs[0]
        if isinstance(name, str)
    ]
    return table(headers, rows)


def stability_table(runs: list[dict]) -> str:
    headers = [
        "Adam, cosine decay",
        "largest batch loss",
        f"batches > {SPIKE:g}x the first batch's loss",
        "final val acc",
    ]
    rows = [
        [
            f"peak {peak:g}, " + (f"{WARMUP_EPOCHS}-epoch warmup" if warm else "no warmup"),
            mean_std(column(runs, (peak, warm), "max_loss")),
            mean_std(column(runs, (peak, warm), "spikes"), ".1f"),
            mean_std(column(runs, (peak, warm), "final")),
        ]
        for peak, warm in (key for key in runs[0] if isinstance(key, tuple))
    ]
    return table(headers, rows)


def cyclical_verdict(runs: list[dict]) -> str:
    names = [name for name in runs[0] if isinstance(name, str) and name.startswith("SGD+mom, ")]
    constant = next(name for name in names if "constant" in name)
    triangular = next(name for name in names if "triangular" in name)
    final_c, final_t = column(runs, constant, "final"), column(runs, triangular, "final")
    gain = [100 * (t - c) for t, c in zip(final_t, final_c, strict=True)]
    return verdict(
        "cyclical learning rates give 2-4% better validation accuracy",
        clearly_positive(gain) and 2 <= np.mean(gain) <= 4,
        f"final val acc {mean_std(final_t)} (triangular) vs {mean_std(final_c)} (constant): "
        f"{mean_std(gain, '.1f', sign=True)} points; best val acc "
        f"{mean_std(column(runs, triangular, 'best'))} vs "
        f"{mean_std(column(runs, constant, 'best'))}",
    )


def warmup_verdict(runs: list[dict]) -> str:
    def largest(peak, warm):
        return column(runs, (peak, warm), "max_loss")

    peaks = sorted({key[0] for key in runs[0] if isinstance(key, tuple)})
    high = max(peaks)  # the claim is about high learning rates
    calmer = [a - b for a, b in zip(largest(high, False), largest(high, True), strict=True)]
    return verdict(
        "warmup improves stability",
        clearly_positive(calmer),
        "; ".join(
            f"Adam peak {p:g}: largest batch loss {mean_std(largest(p, True))} with warmup vs "
            f"{mean_std(largest(p, False))} without, final val acc "
            f"{mean_std(column(runs, (p, True), 'final'))} vs "
            f"{mean_std(column(runs, (p, False), 'final'))}"
            for p in peaks
        ),
    )


def adam_verdict(runs: list[dict], epochs: int) -> str:
    # Never reaching the target counts as epochs + 1 and as the whole run's seconds: lower bounds.
    def to_target(name, key):
        censored = {"epochs": lambda r: epochs + 1, "seconds": lambda r: r[name]["seconds"]}[key]
        return [
            r[name][f"{key}_to"] if r[name][f"{key}_to"] == r[name][f"{key}_to"] else censored(r)
            for r in runs
        ]

    def lead(name, key):  # per seed: how much sooner Adam reached the target than `name`
        adam, other = to_target("Adam 1e-3", key), to_target(name, key)
        return [b - a for a, b in zip(adam, other, strict=True)]

    sgds = [name for name in runs[0] if isinstance(name, str) and name.startswith("SGD 0")]
    sooner = {k: all(clearly_positive(lead(n, k)) for n in sgds) for k in ("epochs", "seconds")}
    leads = "; ".join(
        f"vs {n}: {mean_std(lead(n, 'epochs'), '.1f', sign=True)} epochs, "
        f"{mean_std(lead(n, 'seconds'), '.2f', sign=True)} s"
        for n in sgds
    )
    return verdict(
        "Adam converges faster than SGD",
        all(sooner.values()),
        f"to {TARGET:.0%} val acc Adam is sooner in epochs: "
        f"{'yes' if sooner['epochs'] else 'not clearly'}, in seconds: "
        f"{'yes' if sooner['seconds'] else 'not clearly'} ({leads}; never reaching counts as "
        f"{epochs + 1} epochs and the whole run's seconds)",
    )


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], seeds=5)
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    stability_epochs = QUICK_STABILITY_EPOCHS if args.quick else STABILITY_EPOCHS
    x, y = digits()
    print(
        f"backend {wf.get_backend().name}: MLP 64-128-64-10, 80/20 split of the digits, "
        f"batch {BATCH_SIZE}, {epochs} epochs ({stability_epochs} for stability), "
        f"{args.seeds} seed(s)"
    )
    start = time.perf_counter()
    runs = [measure(seed, args.quick, x, y) for seed in range(args.seeds)]
    print(f"\n{speed_table(runs)}\n")
    print(
        f"'—': never reached in {epochs} epochs; (k/n): reached in k of n seeds, mean over "
        "those. Seconds: wall-clock from the start of fit (on JAX including compilation)."
    )
    print(f"\n{stability_table(runs)}\n")
    first = mean_std(column(runs, next(k for k in runs[0] if isinstance(k, tuple)), "first_loss"))
    print(
        f"first batch's loss (the untrained network): {first}; {stability_epochs} epochs of "
        f"{math.ceil(len(x) * 0.8 / BATCH_SIZE)} batches"
    )
    print(
        f"mean ± std over {args.seeds} seed(s) (seed = split and initial weights); "
        f"{time.perf_counter() - start:.1f} s"
    )
    print(cyclical_verdict(runs))
    print(warmup_verdict(runs))
    print(adam_verdict(runs, epochs))


if __name__ == "__main__":
    with one_blas_thread():
        main()
