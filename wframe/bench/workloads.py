"""The benchmark workloads: shapes, seeded data, shared initial weights, FLOPs and targets.

Every runner of a workload sees the same data (seed 0) and starts from the same weights: those
wframe's seed-0 initialisation draws on the host (identical on every backend), copied into the
references and the peers.

Kinds: ``mlp``, ``cnn``, ``lstm``, ``gru`` (chains, with hand-written NumPy references); the
sequence kinds ``attention`` (one causal self-attention block, mse), ``embedding``,
``conv1d`` and ``transformer`` (a decoder-only language model, next-token loss), measured
against PyTorch and plain JAX; and ``graph``: the MLP written with the functional API
(``wf.Model(inputs, outputs)``), measured against the same MLP as a ``wf.Sequential``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

import wframe as wf

SEED = 0
CONV1D_KERNEL = 5  # the conv1d workload's kernel size ("same" padding, stride 1)
LN_EPS = 1e-5  # the transformer's LayerNorm epsilon (the references use the same)
#: Kinds with hand-written NumPy/CuPy references (:mod:`wframe.bench.reference_models`).
HAND_WRITTEN = ("mlp", "cnn", "lstm", "gru")
#: Kinds with a PyTorch twin of the same weights (:mod:`wframe.bench.reference_seq` holds
#: the sequence kinds').
TORCH_TWINS = ("mlp", "cnn", "lstm", "gru", "attention", "embedding", "conv1d")


@dataclass(frozen=True)
class Workload:
    """One model, optimizer and batch, timed as a train step and/or as a ``fit`` epoch.

    Args:
      name: the workload's name on the command line.
      kind: ``"mlp"``, ``"cnn"``, ``"lstm"``, ``"gru"``, ``"attention"``, ``"embedding"``,
        ``"conv1d"``, ``"transformer"`` or ``"graph"`` (see the module docstring).
      in_shape: one example's shape: ``(features,)``, ``(H, W, C)``, ``(time, features)`` or
        ``(time,)`` of token ids (embedding, transformer).
      hidden: MLP (and graph) hidden sizes, CNN conv filters (3x3, valid, relu), ``(units,)``
        of the cell, conv1d filters (kernel 5, "same", relu), ``(heads, key_dim)`` of the
        attention, ``(output_dim,)`` of the embedding, or ``(width, ffn, blocks, heads)`` of
        the transformer.
      batch: examples per train step.
      optimizer: ``"sgd"`` or ``"adam"``.
      lr: learning rate.
      rows: examples in one epoch (``fit`` rows).
      modes: ``"step"`` (one train step on a fixed batch) and/or ``"epoch"`` (one ``fit`` epoch).
      data: ``"random"`` (seeded normal inputs, class labels), ``"digits"`` (scikit-learn's
        digits, x/16), ``"regression"`` (normal inputs and targets of the inputs' shape),
        ``"ids"`` (token ids in ``[0, vocab)``, class labels) or ``"tokens"`` (ids and the
        next ids as labels).
      classes: the classes of the labels.
      metric: what the epoch references compute next to the loss: ``"accuracy"``, as ``fit``
        logs it for this loss, or ``None`` (a variant: the references skip it, ``fit`` does
        not). A train step logs no metric, nor do its references.
      loss: ``"softmax_cross_entropy"``, ``"mse"`` or ``"token_cross_entropy"`` (the mean
        softmax cross-entropy of every position of (batch, time, vocab) logits).
      vocab: the vocabulary of token ids (embedding, transformer).
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
    loss: str = "softmax_cross_entropy"
    vocab: int = 0

    def layers(self) -> list:
        """wframe's layers of the model (a fresh list: layers are named when a model builds)."""
        L = wf.layers
        if self.kind == "mlp":
            return [*(L.Dense(k, activation="relu") for k in self.hidden), L.Dense(self.classes)]
        if self.kind == "cnn":
            convs = [L.Conv2D(k, 3, activation="relu") for k in self.hidden]
            return [*convs, L.MaxPool2D(2), L.Flatten(), L.Dense(self.classes)]
        if self.kind == "embedding":
            pool = [L.GlobalAvgPool1D(), L.Dense(self.classes)]
            return [L.Embedding(self.vocab, self.hidden[0]), *pool]
        if self.kind == "conv1d":
            convs = [
                L.Conv1D(k, CONV1D_KERNEL, padding="same", activation="relu") for k in self.hidden
            ]
            return [*convs, L.GlobalAvgPool1D(), L.Dense(self.classes)]
        cell = {"lstm": L.LSTM, "gru": L.GRU}[self.kind]
        return [cell(self.hidden[0]), L.Dense(self.classes)]

    def model(self) -> wf.Sequential | wf.Model:
        """An unbuilt seed-0 chain (``fit`` builds it on the current backend), or a functional
        model (attention, transformer, graph), built on the current backend."""
        if self.kind in ("attention", "transformer", "graph"):
            return _functional(self)
        return wf.Sequential(self.layers(), seed=SEED)

    def loss_fn(self) -> str | wf.losses.Loss:
        """The loss that wframe's train step takes."""
        if self.loss == "token_cross_entropy":  # every position's, no metric (as the twins)
            return wf.losses.SoftmaxCrossEntropy(metric=None)
        return self.loss

    def flops(self, m: int) -> float:
        """Multiply-add FLOPs (2 per MAC) of one train step on ``m`` examples: each matmul or
        convolution counts once forward and twice backward (once for the first layer, whose
        input needs no gradient); elementwise work, pooling and the loss are left out."""
        if self.kind not in HAND_WRITTEN:
            return _flops_seq(self, m)
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
        body = (
            _describe_seq(self)
            if self.kind not in HAND_WRITTEN
            else {
                "mlp": "MLP " + "-".join(map(str, (*self.in_shape, *self.hidden, self.classes))),
                "cnn": f"CNN conv {'+'.join(map(str, self.hidden))} 3x3, pool 2, dense",
                "lstm": f"LSTM({self.hidden[0]}) + dense",
                "gru": f"GRU({self.hidden[0]}) + dense",
            }[self.kind]
        )
        shape += " ids" if self.data in ("ids", "tokens") else ""
        return (
            f"{body}, input {shape}, {self.optimizer} lr {self.lr}, batch {self.batch}, "
            f"{self.rows} rows ({self.data})"
            + ("" if self.metric else "; the epoch references log no metric")
        )


def _step(name: str, in_shape, hidden, batch: int, optimizer: str, **kw) -> Workload:
    """A sequence workload of kind ``name``, timed as one step (its data is one batch)."""
    lr = {"adam": 1e-3, "sgd": 0.01}[optimizer]
    return Workload(name, name, in_shape, hidden, batch, optimizer, lr, batch, ("step",), **kw)


TOKENS = {"data": "tokens", "loss": "token_cross_entropy", "vocab": 100}
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
        # Issue 20's small-model fit: a 64-64-10 MLP, SGD, on a train split's worth of digits
        # (benchmarks/bench_small.py times it per epoch inside a multi-epoch fit too).
        replace(
            DIGITS,
            name="fit_small",
            hidden=(64,),
            optimizer="sgd",
            lr=0.01,
            rows=1437,
            modes=("epoch",),
        ),
        # Sequence layers, one train step each: the data is one batch.
        _step("attention", (128, 128), (4, 32), 32, "adam", data="regression", loss="mse"),
        _step("embedding", (128,), (128,), 64, "sgd", data="ids", vocab=10000),
        _step("conv1d", (128, 64), (64, 64, 64), 32, "sgd"),
        _step("transformer", (64,), (128, 512, 2, 4), 32, "adam", **TOKENS),
        # The digits MLP as a functional graph, against the same MLP as a Sequential.
        replace(DIGITS, name="graph", kind="graph"),
    )
}

#: Workloads measured apart from the train-step table, each by its own module and only when
#: named: ``scaling`` (:mod:`~wframe.bench.scaling`), ``cold`` (:mod:`~wframe.bench.cold`),
#: ``pruned`` (:mod:`~wframe.bench.pruned`: issue 21's pruning targets).
APART = ("scaling", "cold", "pruned")

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
    "fit_small": {"rows": 512},
    "attention": {"in_shape": (16, 16), "hidden": (2, 8), "batch": 4, "rows": 4},
    "embedding": {"in_shape": (16,), "hidden": (16,), "batch": 8, "rows": 8, "vocab": 100},
    "conv1d": {"in_shape": (16, 8), "hidden": (8, 8), "batch": 4, "rows": 4},
    "transformer": {"in_shape": (16,), "hidden": (32, 64, 1, 2), "batch": 4, "rows": 4},
    "graph": {"rows": 512},
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
    ("fit_small", "epoch", "wframe[numpy]", "reference[numpy]", 1.3),
    ("fit_small", "epoch", "wframe[jax]", "reference[jax]", 1.1),
    ("fit_small", "epoch", "wframe[jax] spe=epoch", "reference[jax] scan", 1.1),
    ("fit_large", "epoch", "wframe[numpy]", "reference[numpy]", 1.05),
    ("fit_large", "epoch", "wframe[jax]", "reference[jax]", 1.05),
    ("attention", "step", "wframe[numpy]", "torch[cpu]", 1.5),
    ("attention", "step", "wframe[jax]", "reference[jax]", 1.1),
    ("embedding", "step", "wframe[numpy]", "torch[cpu]", 1.5),
    ("conv1d", "step", "wframe[numpy]", "torch[cpu]", 1.5),
    ("transformer", "step", "wframe[jax]", "reference[jax]", 1.1),
    # A functional graph costs no more than the same chain as a Sequential.
    ("graph", "step", "wframe[numpy]", "wframe[numpy] sequential", 1.05),
    ("graph", "step", "wframe[jax]", "wframe[jax] sequential", 1.05),
    ("graph", "epoch", "wframe[numpy]", "wframe[numpy] sequential", 1.05),
    ("graph", "epoch", "wframe[jax]", "wframe[jax] sequential", 1.05),
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
    if w.data == "tokens":
        ids = rng.integers(0, w.vocab, size=(w.rows, w.in_shape[0] + 1)).astype(np.int32)
        return np.ascontiguousarray(ids[:, :-1]), np.ascontiguousarray(ids[:, 1:]), note
    if w.data == "ids":
        x = rng.integers(0, w.vocab, size=(w.rows, *w.in_shape)).astype(np.int32)
    else:
        x = rng.standard_normal((w.rows, *w.in_shape), dtype=np.float32)
    if w.data == "regression":  # targets of the output's shape, the input's
        return x, rng.standard_normal(x.shape, dtype=np.float32), note
    y = rng.integers(0, w.classes, size=w.rows).astype(np.int32)
    return x, y, note


def initial_params(w: Workload) -> dict[str, dict[str, np.ndarray]]:
    """wframe's seed-0 weights of ``w``'s model as NumPy arrays (what ``fit`` draws too)."""
    with wf.use_backend("numpy"):
        model = w.model().build((None, *w.in_shape))
        return wf.tree.tree_map(lambda v: np.array(wf.to_numpy(v)), model.params)


def permutation(epoch: int, n: int) -> np.ndarray:
    """wframe's shuffle of epoch ``epoch`` (model seed 0): the references shuffle alike."""
    return wf.random.generator(wf.random.fold_in(SEED, epoch)).permutation(n)


def batches(order: np.ndarray, batch: int):
    """The index rows of an epoch: full batches, then the partial one (kept, as ``fit``)."""
    return [order[s : s + batch] for s in range(0, order.shape[0], batch)]


# ------------------------------------------------------------------ the sequence kinds
def _functional(w: Workload) -> wf.Model:
    """The functional model of ``w`` (graph, attention or transformer), built here."""
    L = wf.layers
    if w.kind == "graph":
        x = h = wf.Input(w.in_shape)
        for k in w.hidden:
            h = L.Dense(k, activation="relu")(h)
        return wf.Model(x, L.Dense(w.classes)(h), seed=SEED)
    if w.kind == "attention":
        x = wf.Input(w.in_shape)
        y = L.MultiHeadAttention(*w.hidden)(x, x, use_causal_mask=True)
        return wf.Model(x, y, seed=SEED)
    width, ffn, blocks, heads = w.hidden
    x = wf.Input(w.in_shape, dtype="int32")
    h = L.Embedding(w.vocab, width)(x)
    h = h + L.PositionEmbedding(w.in_shape[0])(h)
    for _ in range(blocks):  # pre-norm blocks: attention, then the feed-forward
        n = L.LayerNorm(epsilon=LN_EPS)(h)
        a = L.MultiHeadAttention(heads, width // heads)(n, n, use_causal_mask=True)
        h = L.Add()([h, a])
        n = L.LayerNorm(epsilon=LN_EPS)(h)
        h = L.Add()([h, L.Dense(width)(L.Dense(ffn, activation="gelu")(n))])
    out = L.Dense(w.vocab)(L.LayerNorm(epsilon=LN_EPS)(h))
    return wf.Model(x, out, seed=SEED)


def _flops_seq(w: Workload, m: int) -> float:
    """:meth:`Workload.flops` of the sequence kinds and the graph. The attention products
    count in full (dense matmuls, causal or not); the embedding's gather counts nothing."""
    if w.kind == "graph":
        return replace(w, kind="mlp").flops(m)
    if w.kind == "embedding":
        return 2 * m * w.hidden[0] * w.classes * 3
    if w.kind == "conv1d":
        (steps, c), total = w.in_shape, 0.0
        for i, k in enumerate(w.hidden):
            total += 2 * m * steps * CONV1D_KERNEL * c * k * (2 if i == 0 else 3)
            c = k
        return total + 2 * m * c * w.classes * 3
    if w.kind == "attention":
        (steps, d), (heads, key_dim) = w.in_shape, w.hidden
        hd = heads * key_dim
        per_step = 3 * d * hd * 2 + hd * d * 3 + 2 * steps * hd * 3
        return 2 * m * steps * per_step
    width, ffn, blocks, _ = w.hidden
    steps = w.in_shape[0]
    block = 4 * width * width * 3 + 2 * steps * width * 3 + 2 * width * ffn * 3
    return 2 * m * steps * (blocks * block + width * w.vocab * 3)


def _describe_seq(w: Workload) -> str:
    if w.kind == "graph":
        sizes = "-".join(map(str, (*w.in_shape, *w.hidden, w.classes)))
        return f"MLP {sizes} as a functional wf.Model (vs the same wf.Sequential)"
    if w.kind == "attention":
        return f"causal MultiHeadAttention({w.hidden[0]}, key_dim {w.hidden[1]}), mse"
    if w.kind == "embedding":
        return f"Embedding({w.vocab}, {w.hidden[0]}), GlobalAvgPool1D, dense"
    if w.kind == "conv1d":
        convs = "+".join(map(str, w.hidden))
        return f"Conv1D {convs} k{CONV1D_KERNEL} same relu, GlobalAvgPool1D, dense"
    width, ffn, blocks, heads = w.hidden
    return (
        f"decoder transformer: {blocks} pre-LayerNorm blocks, width {width}, {heads} causal "
        f"heads, gelu ffn {ffn}, vocab {w.vocab}; next-token loss"
    )
