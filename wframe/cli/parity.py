"""Check that every backend computes the numbers the NumPy backend computes.

Each model (mlp: Dense layers; cnn: Conv2D, MaxPool2D, Dense; rnn: GRU, LSTM, Dense) is built
with one seed on each backend (identical initial weights everywhere), then compared with the
NumPy run, parameter by parameter:

  predict        the forward pass in inference mode
  loss, grad/*   model.value_and_grad: the loss and the gradient of every parameter
  fit/*          the training losses and every parameter (and state) after 5 steps of SGD
                 (learning rate 0.1) on the whole data as one batch, shuffle=False

An element fails when |other - numpy| > max(atol, rtol * |numpy|); the defaults are
  float32: rtol 1e-4, atol 1e-5 (atol is the floor for entries near zero)
  float64: rtol 1e-10, atol 1e-10
"max rel" is |other - numpy| / max(|numpy|, atol / rtol), so it exceeds rtol exactly when an
element fails. A dtype or shape that differs from NumPy's fails too.

float64 on jax needs jax's 64-bit mode. This command runs in its own process, so it switches
that mode on (jax.config.update("jax_enable_x64", True)) before jax creates any array; where
jax was imported before (parity called in-process), jax is skipped with the reason instead.

Exit status: 0 every comparison within tolerance (or, without --backends, no backend besides
numpy could run here); 1 a comparison exceeds the tolerance, a backend raised, or a backend
named in --backends cannot run here (the reason is printed: cupy without a GPU, jax not
installed, float64 without jax's 64-bit mode); 2 a usage error.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import wframe as wf
from wframe import backends
from wframe.layers import GRU, LSTM, Conv2D, Dense, Flatten, MaxPool2D
from wframe.tree import flatten

HELP = "compare forward, gradients and 5 training steps of each backend with numpy (exit 1 if off)"

MODELS = ("mlp", "cnn", "rnn")
#: dtype -> (rtol, atol)
TOLERANCES = {"float32": (1e-4, 1e-5), "float64": (1e-10, 1e-10)}
STEPS = 5
LEARNING_RATE = 0.1
CLASSES = 3
LOSS = "softmax_cross_entropy"
REFERENCE = "numpy"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", choices=(*MODELS, "all"), default="all", help="model to check (default: all)"
    )
    parser.add_argument(
        "--backends",
        type=_names,
        default=None,
        metavar="NAMES",
        help="comma-separated backends to compare with numpy, e.g. jax,cupy (default: every "
        "available one, the others skipped); numpy always runs as the reference; a named "
        "backend that cannot run here fails the check (exit 1)",
    )
    parser.add_argument(
        "--dtype", choices=tuple(TOLERANCES), default="float32", help="(default: float32)"
    )
    parser.add_argument("--seed", type=int, default=0, help="weights and data seed (default: 0)")
    parser.add_argument(
        "--rtol",
        type=_tolerance,
        default=None,
        help="relative tolerance (default: 1e-4 for float32, 1e-10 for float64)",
    )
    parser.add_argument(
        "--atol",
        type=_tolerance,
        default=None,
        help="absolute tolerance, the floor near zero (default: 1e-5 for float32, 1e-10 for "
        "float64)",
    )


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected backend names such as numpy,jax; got {text!r}")
    return names


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    models = MODELS if args.model == "all" else (args.model,)
    try:
        return parity(
            models,
            args.backends,
            dtype=args.dtype,
            seed=args.seed,
            rtol=args.rtol,
            atol=args.atol,
            enable_x64=True,
        )
    except ValueError as e:  # an unknown backend name, found before anything runs
        print(f"{args.prog}: error: {e}", file=sys.stderr)
        return 2


def parity(
    models: Sequence[str] = MODELS,
    backends: Sequence[str] | None = None,
    *,
    dtype: str = "float32",
    seed: int = 0,
    rtol: float | None = None,
    atol: float | None = None,
    enable_x64: bool = False,
    print_fn: Callable[[str], Any] = print,
) -> int:
    """Run the comparison, print its table, and return the exit status (0 ok, 1 failed).

    Args:
      models: names from :data:`MODELS`.
      backends: backends to compare with numpy; ``None``: every registered one that can run
        (the others are skipped). A backend named here that cannot run fails the check: the
        status is 1 and the reason is printed, after the comparisons that could run.
      dtype: ``"float32"`` or ``"float64"``.
      seed: seed of the weights and the data.
      rtol, atol: tolerances; ``None``: the dtype's default in :data:`TOLERANCES`.
      enable_x64: switch jax's 64-bit mode on for float64 if jax is not imported yet (only a
        process of its own should: the switch is global).
      print_fn: where the lines go.

    Raises:
      ValueError: an unknown model or backend name, before anything runs.
    """
    _check_names(models, dtype)
    rtol = TOLERANCES[dtype][0] if rtol is None else rtol
    atol = TOLERANCES[dtype][1] if atol is None else atol
    names, skipped = plan_backends(backends)
    if dtype == "float64" and "jax" in names:
        why = _jax_x64(enable_x64)
        if why:
            names.remove("jax")
            skipped["jax"] = why

    _print_header(print_fn, models, dtype=dtype, seed=seed, rtol=rtol, atol=atol)
    for name, why in skipped.items():
        print_fn(f"skipped {name}: {why}")
    # Asked for by name and unable to run: the check the caller wanted did not happen.
    missing = {n: why for n, why in skipped.items() if backends is not None}
    others = [n for n in names if n != REFERENCE]
    if not others and not missing:
        print_fn(f"parity: nothing to compare, no backend besides {REFERENCE} can run here")
        return 0

    rows: list[tuple[str, ...]] = []
    for kind in models if others else ():
        results = _run_everywhere(kind, names, seed=seed, dtype=dtype)
        rows.extend(_compared_rows(kind, results, others, rtol=rtol, atol=atol))
    if rows:
        print_fn(_table(("model", "backend", "quantity", "shape", "max abs", "max rel", ""), rows))
    failures, total = sum(r[-1].startswith("FAIL") for r in rows), len(rows)
    if failures:
        print_fn(f"parity: FAILED, {failures} of {total} comparisons exceed the tolerance")
    for name, why in missing.items():
        print_fn(
            f"parity: FAILED, backend {name!r} was asked for (--backends) but cannot run "
            f"here: {why}"
        )
    if failures or missing:
        return 1
    print_fn(f"parity: ok, all {total} comparisons within tolerance")
    return 0


def _check_names(models: Sequence[str], dtype: str) -> None:
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"Unknown model {unknown[0]!r}. Expected one of {list(MODELS)}.")
    if dtype not in TOLERANCES:
        raise ValueError(f"Unknown dtype {dtype!r}. Expected one of {list(TOLERANCES)}.")


def _print_header(
    print_fn: Callable[[str], Any],
    models: Sequence[str],
    *,
    dtype: str,
    seed: int,
    rtol: float,
    atol: float,
) -> None:
    print_fn(
        f"parity: {dtype}, seed {seed}, models {', '.join(models)}; reference {REFERENCE}; "
        f"fit: {STEPS} SGD steps (lr {LEARNING_RATE}) on the whole batch"
    )
    print_fn(
        f"tolerance: |diff| <= max(atol, rtol*|{REFERENCE}|), rtol {rtol:g}, atol {atol:g}; "
        f"max rel = |diff| / max(|{REFERENCE}|, atol/rtol)"
    )


def _run_everywhere(
    kind: str, names: Sequence[str], *, seed: int, dtype: str
) -> dict[str, dict[str, np.ndarray] | str]:
    """:func:`run_model` of ``kind`` on each backend, or the one-line error it raised there."""
    results: dict[str, dict[str, np.ndarray] | str] = {}
    for name in names:
        try:
            results[name] = run_model(kind, name, seed=seed, dtype=dtype)
        except Exception as e:  # a backend that raises is a parity failure, not a crash
            results[name] = f"{type(e).__name__}: {e}".splitlines()[0]
    return results


def _compared_rows(
    kind: str,
    results: dict[str, dict[str, np.ndarray] | str],
    others: Sequence[str],
    *,
    rtol: float,
    atol: float,
) -> list[tuple[str, ...]]:
    """The table rows of model ``kind``: each backend of ``others`` against the reference,
    quantity by quantity; the last cell is ``"ok"`` or ``"FAIL ..."``."""
    rows: list[tuple[str, ...]] = []
    reference = results[REFERENCE]
    for name in others:
        got = results[name]
        failed = got if isinstance(got, str) else None
        if failed is None and isinstance(reference, str):
            failed = f"the {REFERENCE} reference raised {reference}"
        if failed is not None:
            rows.append((kind, name, "(run)", "", "", "", f"FAIL {failed}"))
            continue
        for quantity, expected in reference.items():
            actual = got.get(quantity)
            if actual is None:
                max_abs, max_rel, problem = math.nan, math.nan, f"missing on {name}"
            else:
                max_abs, max_rel, problem = compare(actual, expected, rtol=rtol, atol=atol)
            rows.append(
                (
                    kind,
                    name,
                    quantity,
                    str(tuple(expected.shape)),
                    f"{max_abs:.2e}",
                    f"{max_rel:.2e}",
                    f"FAIL {problem}" if problem else "ok",
                )
            )
    return rows


def plan_backends(requested: Sequence[str] | None) -> tuple[list[str], dict[str, str]]:
    """``(backends to run, numpy first; {skipped backend: why})`` for ``requested``.

    Raises:
      ValueError: a requested name is not registered (the message lists the valid names).
    """
    registered = backends.registered()
    wanted = list(dict.fromkeys(requested)) if requested is not None else registered
    for name in wanted:
        if name not in registered:
            raise ValueError(f"Unknown backend {name!r}. Expected one of {sorted(registered)}.")
    names, skipped = [REFERENCE], {}
    for name in wanted:
        if name == REFERENCE:
            continue
        why = backends.why_unavailable(name)
        if why:
            skipped[name] = why
        else:
            names.append(name)
    return names, skipped


def _jax_x64(enable: bool) -> str:
    """``""`` if jax can compute in float64 in this process (switching it on if allowed)."""
    if enable and "jax" not in sys.modules:
        import jax  # nothing has imported jax, so no jax array exists yet

        jax.config.update("jax_enable_x64", True)
    import jax

    if jax.config.jax_enable_x64:
        return ""
    return (
        "float64 needs jax's 64-bit mode, which is off and was not switched on because jax "
        "was imported before parity ran; run 'python -m wframe parity --dtype float64' in a "
        "process of its own, or set JAX_ENABLE_X64=1"
    )


# ----------------------------------------------------------------------------- one run
def model_and_data(kind: str, *, seed: int, dtype: str) -> tuple[Any, np.ndarray, np.ndarray]:
    """An unbuilt model of ``kind`` and host data ``(x, y)`` for it, all from ``seed``."""

    if kind == "mlp":
        layers, shape = [Dense(16, "relu"), Dense(8, "tanh"), Dense(CLASSES)], (32, 8)
    elif kind == "cnn":
        layers = [Conv2D(4, 3, activation="relu"), MaxPool2D(2), Flatten(), Dense(CLASSES)]
        shape = (16, 8, 8, 2)
    elif kind == "rnn":
        layers, shape = [GRU(6, return_sequences=True), LSTM(5), Dense(CLASSES)], (16, 5, 4)
    else:
        raise ValueError(f"Unknown model {kind!r}. Expected one of {list(MODELS)}.")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    y = rng.integers(0, CLASSES, shape[0])
    return wf.Sequential(layers, seed=seed, dtype=dtype), x, y


def run_model(kind: str, backend: str, *, seed: int, dtype: str) -> dict[str, np.ndarray]:
    """Every compared quantity of model ``kind`` on ``backend``, as host arrays by name."""

    model, x, y = model_and_data(kind, seed=seed, dtype=dtype)
    with wf.use_backend(backend):
        model.build((None, *x.shape[1:]))
        out = {"predict": wf.to_numpy(model.predict(x))}
        loss, grads = model.value_and_grad(x, y, loss=LOSS)
        out["loss"] = wf.to_numpy(loss)
        out.update((f"grad/{k}", wf.to_numpy(g)) for k, g in flatten(grads))
        history = model.fit(
            x,
            y,
            epochs=STEPS,
            batch_size=x.shape[0],
            shuffle=False,
            verbose=0,
            loss=LOSS,
            optimizer=wf.optimizers.sgd(LEARNING_RATE),
        )
        out["fit/loss"] = np.asarray(history.history["loss"])
        out.update((f"fit/{k}", wf.to_numpy(a)) for k, a in flatten(model.params))
        out.update((f"fit/state/{k}", wf.to_numpy(a)) for k, a in flatten(model.state))
    return out


def compare(actual: Any, expected: Any, *, rtol: float, atol: float) -> tuple[float, float, str]:
    """``(max abs diff, max rel diff, problem)`` of two host arrays; ``problem`` is ``""``
    when every element satisfies ``|actual - expected| <= max(atol, rtol * |expected|)``."""
    a, e = np.asarray(actual), np.asarray(expected)
    if a.shape != e.shape:
        return math.nan, math.nan, f"shape {a.shape} differs from {REFERENCE}'s {e.shape}"
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a64 - e64)
        diff = np.where(a64 == e64, 0.0, diff)  # equal infinities
        diff = np.where(np.isnan(a64) & np.isnan(e64), 0.0, diff)  # NaN on both sides agrees
        diff = np.where(np.isnan(diff), np.inf, diff)  # NaN or inf on one side only
        floor = atol / rtol if rtol > 0 else np.finfo(np.float64).tiny
        # fmax: a NaN reference gets the floor; isinf: NaN or inf on one side always fails.
        rel = np.where(diff == 0, 0.0, diff / np.fmax(np.abs(e64), floor))
        bad = np.isinf(diff) | (diff > np.fmax(atol, rtol * np.abs(e64)))
    max_abs, max_rel = float(diff.max(initial=0.0)), float(rel.max(initial=0.0))
    problems = []
    if a.dtype != e.dtype:
        problems.append(f"dtype {a.dtype} differs from {REFERENCE}'s {e.dtype}")
    if bad.any():
        problems.append(f"{int(bad.sum())} of {bad.size} elements outside tolerance")
    return max_abs, max_rel, "; ".join(problems)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    numeric = {4, 5}  # the numbers align right

    def line(r):
        cells = [
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), "-" * (sum(widths) + 2 * (len(widths) - 1)), *map(line, rows)])
