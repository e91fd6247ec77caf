"""The benchmark workloads: shapes, seeded data, shared initial weights, FLOPs and targets.

Every runner of a workload sees the same data (seed 0) and starts from the same weights: those
wframe's seed-0 initialisation draws on the host (identical on every backend), copied into the
references and the peers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

import wframe as wf

SEED = 0


@dataclass(frozen=True)
class Workload:
    """One model, optimizer and batch, timed as a train step and/or as a ``fit`` epoch.

    Args:
      name: the workload's name on the command line.
      kind: ``"mlp"``, ``"cnn"``, ``"lstm"`` or ``"gru"``.
      in_shape: one example's shape: ``(features,)``, ``(H, W, C)`` or ``(time, features)``.
      hidden: MLP hidden sizes, CNN conv filters (3x3, valid, relu) or ``(units,)`` of the cell.
      batch: examples per train step.
      optimizer: ``"sgd"`` or ``"adam"``.
      lr: learning rate.
      rows: examples in one epoch (``fit`` rows).
      modes: ``"step"`` (one train step on a fixed batch) and/or ``"epoch"`` (one ``fit`` epoch).
      data: ``"random"`` (seeded normal inputs) or ``"digits"`` (scikit-learn's digits, x/16).
      metric: what the epoch references compute next to the loss: ``"accuracy"``, as ``fit``
        logs it for this loss, or ``None`` (a variant: the references skip it, ``fit`` does
        not). A train step logs no metric, nor do its references.
    """

    name: str
    kind: str
    in_shape: tuple[int, ...]
    hidden: tuple[int, ...]
    batch: int
    optimizer: str
    lr: float
    rows: int
    modes: tuple[str, ...] = ("step", "epoch")
    data: str = "random"
    classes: int = 10
    metric: str | None = "accuracy"

    def layers(self) -> list:
        """wframe's layers of the model (a fresh list: layers are named when a model builds)."""
        L = wf.layers
        if self.kind == "mlp":
            return [*(L.Dense(k, activation="relu") for k in self.hidden), L.Dense(self.classes)]
        if self.kind == "cnn":
            convs = [L.Conv2D(k, 3, activation="relu") for k in self.hidden]
            return [*convs, L.MaxPool2D(2), L.Flatten(), L.Dense(self.classes)]
        cell = {"lstm": L.LSTM, "gru": L.GRU}[self.kind]
        return [cell(self.hidden[0]), L.Dense(self.classes)]

    def model(self) -> wf.Sequential:
        """An unbuilt seed-0 model (``fit`` builds it on the current backend)."""
        return wf.Sequential(self.layers(), seed=SEED)

    def flops(self, m: int) -> float:
        """Multiply-add FLOPs (2 per MAC) of one train step on ``m`` examples: each matmul or
        convolution counts once forward and twice backward (once for the first layer, whose
        input needs no gradient); elementwise work, pooling and the loss are left out."""
        if self.kind == "mlp":
            sizes = (self.in_shape[0], *self.hidden, self.classes)
            pairs = zip(sizes[:-1], sizes[1:], strict=False)
            return sum(2 * m * k * n * (2 if i == 0 else 3) for i, (k, n) in enumerate(pairs))
        if self.kind == "cnn":
            h, w, c = self.in_shape
            total = 0.0
            for i, k in enumerate(self.hidden):
                h, w = h - 2, w - 2
                total += 2 * m * h * w * 9 * c * k * (2 if i == 0 else 3)
                c = k
            return total + 2 * m * (h // 2) * (w // 2) * c * self.classes * 3
        steps, feats = self.in_shape
        units, gates = self.hidden[0], {"lstm": 4, "gru": 3}[self.kind]
        cell = 2 * m * steps * gates * units * (2 * feats + 3 * units)
        return cell + 2 * m * units * self.classes * 3

    def describe(self) -> str:
        shape = "x".join(map(str, self.in_shape))
        body = {
            "mlp": "MLP " + "-".join(map(str, (*self.in_shape, *self.hidden, self.classes))),
            "cnn": f"CNN conv {'+'.join(map(str, self.hidden))} 3x3, pool 2, dense",
            "lstm": f"LSTM({self.hidden[0]}) + dense",
            "gru": f"GRU({self.hidden[0]}) + dense",
        }[self.kind]
        return (
            f"{body}, input {shape}, {self.optimizer} lr {self.lr}, batch {self.batch}, "
            f"{self.rows} rows ({self.data})"
            + ("" if self.metric else "; the epoch references log no metric")
        )


DIGITS = Workload("fit_digits", "mlp", (64,), (128,), 32, "adam", 1e-3, 1797, data="digits")
WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("mlp_large", "mlp", (784,), (1024, 1024), 256, "sgd", 0.01, 2048),
        Workload("mlp_small", "mlp", (64,), (128,), 32, "adam", 1e-3, 2048),
        Workload("cnn", "cnn", (28, 28, 1), (32, 64), 128, "sgd", 0.01, 256),
        Workload("lstm", "lstm", (32, 64), (128,), 64, "adam", 1e-3, 1024),
        Workload("gru", "gru", (32, 64), (128,), 64, "adam", 1e-3, 1024),
        # A step of little work (~0.1 ms): the per-step overhead shows; step only.
        Workload("mlp_tiny", "mlp", (64,), (64,), 32, "sgd", 0.01, 256, ("step",)),
        # What users run: one fit epoch of the digits (and one step on a batch of them), an
        # SGD variant whose references log no metric, and a large MLP over more rows.
        DIGITS,
        replace(
            DIGITS, name="fit_digits_sgd", optimizer="sgd", lr=0.01, modes=("epoch",), metric=None
        ),
        Workload("fit_large", "mlp", (784,), (1024, 1024), 256, "sgd", 0.01, 8192, ("epoch",)),
    )
}

# --quick: shapes small enough that a smoke test of two workloads runs in seconds.
QUICK: dict[str, dict[str, Any]] = {
    "mlp_large": {"hidden": (128, 128), "batch": 64, "rows": 256},
    "mlp_small": {"rows": 256},
    "cnn": {"in_shape": (12, 12, 1), "hidden": (4, 8), "batch": 16, "rows": 64},
    "lstm": {"in_shape": (8, 16), "hidden": (32,), "batch": 16, "rows": 64},
    "gru": {"in_shape": (8, 16), "hidden": (32,), "batch": 16, "rows": 64},
    "mlp_tiny": {},
    "fit_digits": {"rows": 512},
    "fit_digits_sgd": {"rows": 512},
    "fit_large": {"rows": 1024},
}

# (workload, mode, row, reference row, limit): the row's time is at most limit x the reference's.
TARGETS: list[tuple[str, str, str, str, float]] = [
    ("mlp_large", "step", "wframe[numpy]", "reference[numpy]", 1.05),
    ("mlp_large", "step", "wframe[jax]", "reference[jax]", 1.05),
    ("mlp_small", "step", "wframe[numpy]", "reference[numpy]", 1.5),
    ("cnn", "step", "wframe[numpy]", "torch[cpu]", 1.5),
    ("cnn", "step", "wframe[jax]", "reference[jax]", 1.0),
    ("lstm", "step", "wframe[jax]", "reference[jax]", 1.1),
    ("lstm", "step", "wframe[numpy]", "torch[cpu]", 1.5),
    ("gru", "step", "wframe[jax]", "reference[jax]", 1.1),
    ("gru", "step", "wframe[numpy]", "torch[cpu]", 1.5),
    ("mlp_tiny", "step", "wframe[numpy]", "reference[numpy]", 1.5),
    ("fit_digits", "step", "wframe[numpy]", "reference[numpy]", 1.5),
    ("fit_digits", "epoch", "wframe[numpy]", "reference[numpy]", 1.3),
    ("fit_digits", "epoch", "wframe[jax]", "reference[jax]", 1.1),
    ("fit_digits", "epoch", "wframe[jax] spe=epoch", "reference[jax] scan", 1.1),
    # Keras 3's fit takes at least 3x the time of wframe's epoch in one compiled call.
    ("fit_digits", "epoch", "wframe[jax] spe=epoch", "keras[jax]", 1 / 3),
    ("fit_large", "epoch", "wframe[numpy]", "reference[numpy]", 1.05),
    ("fit_large", "epoch", "wframe[jax]", "reference[jax]", 1.05),
]


def get(names: list[str], *, quick: bool = False) -> list[Workload]:
    """The named workloads (in the given order), scaled down with ``quick``."""
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workloads {unknown}; expected names from {list(WORKLOADS)}")
    return [replace(WORKLOADS[n], **QUICK[n]) if quick else WORKLOADS[n] for n in names]


def make_data(w: Workload) -> tuple[np.ndarray, np.ndarray, str | None]:
    """``(x, y, note)``: float32 inputs and int32 labels of ``w.rows`` examples, seeded.

    The digits come from scikit-learn when it is installed; otherwise seeded random data of the
    same shape stands in, and ``note`` says so.
    """
    note = None
    if w.data == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            note = f"{w.name}: scikit-learn is not installed; random data of the digits' shape"
        else:
            digits = load_digits()
            x, y = (digits.data / 16).astype(np.float32), digits.target.astype(np.int32)
            return x[: w.rows], y[: w.rows], None
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((w.rows, *w.in_shape), dtype=np.float32)
    y = rng.integers(0, w.classes, size=w.rows).astype(np.int32)
    return x, y, note


def initial_params(w: Workload) -> dict[str, dict[str, np.ndarray]]:
    """wframe's seed-0 weights of ``w``'s model as NumPy arrays (what ``fit`` draws too)."""
    with wf.use_backend("numpy"):
        model = w.model().build((None, *w.in_shape))
        return {
            k: {p: np.array(wf.to_numpy(v)) for p, v in d.items()} for k, d in model.params.items()
        }


def permutation(epoch: int, n: int) -> np.ndarray:
    """wframe's shuffle of epoch ``epoch`` (model seed 0): the references shuffle alike."""
    return wf.random.generator(wf.random.fold_in(SEED, epoch)).permutation(n)


def batches(order: np.ndarray, batch: int):
    """The index rows of an epoch: full batches, then the partial one (kept, as ``fit``)."""
    return [order[s : s + batch] for s in range(0, order.shape[0], batch)]
