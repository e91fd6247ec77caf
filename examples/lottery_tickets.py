"""Lottery tickets on the digits: iterative magnitude pruning with rewinding, against controls.

Frankle & Carbin (2019) found that a network's weights hold sparse subnetworks ("winning
tickets") that, reset to their initial values and trained alone, reach the dense network's
accuracy, while the same masks with new random weights, or random masks, do worse. This
measures it with ``wf.pruning.IterativeMagnitudePruning`` on the digits MLP of
train_digits.py (64-128-64-10), trained on 80% of the digits and tested on the other 20%:

- each round trains EPOCHS epochs of Adam (lr 1e-3, batch 32) and tests the model, then prunes
  20% of the weights still there (one global threshold; biases kept) and rewinds the survivors
  to their initial values (``REWIND_STEP = 0``; k > 0 rewinds to those after k steps);
- controls, from each round's start: "reinit", the ticket's masks with weights drawn again by
  the initializers (another seed); "random", random masks of the ticket's per-layer sparsity
  with the ticket's initial weights.

Differences are per seed (same split and initial weights), in points, shown as mean ± std.

python examples/lottery_tickets.py              # 3 seeds, 21 rounds: 0% to 98.8% sparsity
python examples/lottery_tickets.py --quick      # 1 seed, 11 rounds (to 89%), fewer epochs
WFRAME_BACKEND=jax python examples/lottery_tickets.py --seeds 2
"""

from __future__ import annotations

import time

import train_digits
from _claims import band, digits, mean_std, one_blas_thread, parse_args, table, verdict
from sklearn.model_selection import train_test_split

import wframe as wf
from wframe.pruning import IterativeMagnitudePruning

RATE = 0.2
ROUNDS, QUICK_ROUNDS = 21, 11  # 1 - 0.8**20 = 98.8%, 1 - 0.8**10 = 89.3%
EPOCHS, QUICK_EPOCHS = 15, 5
MATCH = 1.0  # points: "matches the dense model" within this
CLAIM_UP_TO, CLAIM_DROP = 0.9, 2.0  # the seeds' claim: "up to 90%", "< 2% accuracy"
FROM = 0.5  # the controls' claims: from this sparsity on
REWIND_STEP = 0  # Frankle & Carbin's rewinding to initialisation (small networks need no more)


def measure(seed: int, quick: bool, x, y, rewind_step: int) -> dict:
    """``{(round, kind): (sparsity, test accuracy)}`` of one seed's run."""
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=seed, stratify=y
    )
    model = train_digits.make_model(seed).build((None, 64))
    model.compile(wf.optimizers.adam(1e-3))
    imp = IterativeMagnitudePruning(
        model,
        rounds=QUICK_ROUNDS if quick else ROUNDS,
        rate=RATE,
        rewind_step=rewind_step,
        reinit=True,
        random_masks=True,
        control_seed=1000 + seed,
    )
    epochs = QUICK_EPOCHS if quick else EPOCHS
    rows = imp.run(
        x_train, y_train, eval_data=(x_test, y_test), epochs=epochs, batch_size=32, verbose=0
    )
    return {(r["round"], r["kind"]): (r["sparsity"], r["accuracy"]) for r in rows}


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], seeds=3)
    x, y = digits()
    rewind_step = REWIND_STEP
    print(
        f"backend {wf.get_backend().name}: digits MLP 64-128-64-10, 80/20 split, "
        f"{QUICK_EPOCHS if args.quick else EPOCHS} epochs per round, {RATE:.0%} of the remaining "
        f"weights pruned per round, rewind to step {rewind_step}, {args.seeds} seed(s)"
    )
    start = time.perf_counter()
    runs = [measure(seed, args.quick, x, y, rewind_step) for seed in range(args.seeds)]
    rounds = sorted({r for r, _ in runs[0]})
    dense = [run[(0, "ticket")][1] for run in runs]

    def acc(r, kind):
        return [100 * run[(r, kind)][1] for run in runs]

    def diff(r, kind, other):  # points, per seed
        if other == "dense":
            return [a - 100 * d for a, d in zip(acc(r, kind), dense, strict=True)]
        return [a - b for a, b in zip(acc(r, kind), acc(r, other), strict=True)]

    headers = ["sparsity", "ticket acc %", "reinit acc %", "random acc %", "ticket - dense"]
    headers += ["ticket - reinit", "ticket - random"]
    rows = []
    for r in rounds:
        sparsity = runs[0][(r, "ticket")][0]
        row = [f"{sparsity:.1%}", mean_std(acc(r, "ticket"), ".1f")]
        for kind in ("reinit", "random_masks"):
            row.append(mean_std(acc(r, kind), ".1f") if r else "")
        row.append(mean_std(diff(r, "ticket", "dense"), ".1f", sign=True) if r else "")
        for kind in ("reinit", "random_masks"):
            row.append(mean_std(diff(r, "ticket", kind), ".1f", sign=True) if r else "")
        rows.append(row)
    print()
    print(table(headers, rows))
    print()
    print(
        f"test accuracy in %, differences in points; mean ± std over {args.seeds} seed(s) "
        f"(seed = split, initial weights and control draws); {time.perf_counter() - start:.0f} s"
    )
    levels = [(r, runs[0][(r, "ticket")][0]) for r in rounds if r]
    print(where_tickets_stand(levels, diff))
    claims(levels, diff)


def where_tickets_stand(levels, diff) -> str:
    """Which sparsities tickets beat dense at (the whole mean ± std band of the difference
    above 0), match it at (the band reaches within MATCH points below) or fall behind at."""
    groups: dict[str, list[str]] = {"beat dense": [], "match it": [], "fall behind": []}
    for r, s in levels:
        low, high = band(diff(r, "ticket", "dense"))
        key = "beat dense" if low > 0 else ("match it" if high >= -MATCH else "fall behind")
        groups[key].append(f"{s:.1%}")
    said = "; ".join(f"{k} at {', '.join(v)}" for k, v in groups.items() if v)
    return f"winning tickets against dense (match: mean + std within {MATCH:g} point): {said}"


def claims(levels, diff) -> None:
    """The verdicts: the seeds' 90% claim with tickets, and tickets against both controls."""
    upto = [(r, s) for r, s in levels if s <= CLAIM_UP_TO + 1e-9]

    def drop(r):  # points lost against the dense model, per seed
        return [-d for d in diff(r, "ticket", "dense")]

    worst_r, worst_s = max(upto, key=lambda rs: band(drop(rs[0]))[1])
    ok = all(band(drop(r))[1] < CLAIM_DROP for r, _ in upto)
    worst = mean_std(drop(worst_r), ".1f", sign=True)
    detail = f"largest drop at {worst_s:.1%}: {worst} points (levels up to {upto[-1][1]:.1%})"
    claim = "removing up to 90% of parameters costs < 2% accuracy (winning tickets)"
    print(verdict(claim, ok, detail))
    for other, label in (("random_masks", "random masks"), ("reinit", "re-initialised tickets")):
        high = [(r, s) for r, s in levels if s >= FROM]
        wins = [s for r, s in high if band(diff(r, "ticket", other))[0] > 0]
        last_r, last_s = levels[-1]
        detail = (
            f"ahead at {len(wins)} of {len(high)} levels from {FROM:.0%}; at {last_s:.1%}: "
            f"{mean_std(diff(last_r, 'ticket', other), '.1f', sign=True)} points"
        )
        behind = [
            f"{s:.1%} ({mean_std(diff(r, 'ticket', other), '.1f', sign=True)})"
            for r, s in high
            if s not in wins
        ]
        detail += f"; not clearly ahead at {', '.join(behind)}" if behind else ""
        claim = f"winning tickets beat {label} of the same sparsity from {FROM:.0%} on"
        print(verdict(claim, bool(high) and len(wins) == len(high), detail))


if __name__ == "__main__":
    with one_blas_thread():
        main()
