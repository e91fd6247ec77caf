"""Peers: PyTorch eager (CUDA where present, else CPU) and Keras 3 on JAX, when installed.

Both start from wframe's seed-0 weights: PyTorch's twin loads
:func:`wframe.transfer.to_torch_state_dict` (Linear ``W.T``, conv OIHW, GRU gates reordered,
Flatten's NHWC order permuted; the sequence kinds' twins are
:mod:`wframe.bench.reference_seq`'s); Keras takes wframe's arrays as they are (same layouts, and a
GRU's two biases stacked as Keras' ``(2, 3 * units)`` bias).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable

import numpy as np

import wframe as wf
from wframe.bench import reference_seq
from wframe.bench.timing import Row
from wframe.bench.workloads import HAND_WRITTEN, TORCH_TWINS, Workload, batches, permutation


# ------------------------------------------------------------------ PyTorch
def torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_twin(w: Workload, p0: dict):
    """The ``nn.Module`` twin of ``w``'s model holding the weights ``p0``."""
    import torch

    if w.kind not in HAND_WRITTEN:  # the sequence kinds
        return reference_seq.torch_twin(w, p0)
    nn = torch.nn
    if w.kind == "mlp":
        sizes, mods = (w.in_shape[0], *w.hidden), []
        for k, n in zip(sizes[:-1], sizes[1:], strict=True):
            mods += [nn.Linear(k, n), nn.ReLU()]
        net = nn.Sequential(*mods, nn.Linear(sizes[-1], w.classes))
    elif w.kind == "cnn":
        (h, wd, c), mods = w.in_shape, []
        for k in w.hidden:
            mods += [nn.Conv2d(c, k, 3), nn.ReLU()]
            h, wd, c = h - 2, wd - 2, k
        tail = [nn.MaxPool2d(2), nn.Flatten(), nn.Linear((h // 2) * (wd // 2) * c, w.classes)]
        net = nn.Sequential(*mods, *tail)
    else:
        cls = {"lstm": nn.LSTM, "gru": nn.GRU}[w.kind]

        class Twin(nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = cls(w.in_shape[1], w.hidden[0], batch_first=True)
                self.fc = nn.Linear(w.hidden[0], w.classes)

            def forward(self, x):
                return self.fc(self.rnn(x)[0][:, -1])

        net = Twin()
    with wf.use_backend("numpy"):
        model = w.model().build((None, *w.in_shape))
        model.params = {k: dict(d) for k, d in p0.items()}
        sd = wf.transfer.to_torch_state_dict(model)
    # The twin's own names, in the same order as nn.Sequential's "0.weight", ...
    keys = list(net.state_dict())
    if len(keys) != len(sd):
        raise ValueError(f"torch twin of {w.name}: {len(keys)} tensors, wframe gave {len(sd)}")
    net.load_state_dict({k: torch.from_numpy(v) for k, v in zip(keys, sd.values(), strict=True)})
    return net


def torch_runner(w: Workload, p0: dict, x: np.ndarray, y: np.ndarray, mode: str) -> Callable:
    """``run()``: one step on ``x, y`` (``mode="step"``, returns the loss tensor) or a loop over
    wframe's shuffle of an epoch (``"epoch"``, the mean loss read once at the end)."""
    import torch

    device = torch_device()
    net = torch_twin(w, p0).to(device).train()
    opt_cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[w.optimizer]
    mse = w.loss == "mse"  # else cross-entropy, of every position for a sequence's labels
    opt = opt_cls(net.parameters(), lr=w.lr)
    loss_fn = torch.nn.MSELoss() if mse else torch.nn.CrossEntropyLoss()
    x = x.transpose(0, 3, 1, 2).copy() if w.kind == "cnn" else reference_seq.torch_input(w, x)
    xt = torch.from_numpy(x).to(device)
    yt = torch.from_numpy(y if mse else y.astype(np.int64)).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None

    def train(xb, yb):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(xb), yb)
        loss.backward()
        opt.step()
        return loss.detach()

    if mode == "step":

        def run_step():
            loss = train(xt, yt)
            sync()
            return loss

        return run_step
    epoch, n = [0], x.shape[0]

    def run():
        order = torch.from_numpy(permutation(epoch[0], n)).to(device)
        epoch[0] += 1
        total = torch.zeros((), device=device)
        for idx in batches(order, w.batch):
            total += train(xt.index_select(0, idx), yt.index_select(0, idx)) * idx.numel()
        return float(total) / n  # the host read synchronizes

    return run


# ------------------------------------------------------------------ Keras 3 (JAX)
def import_keras():
    """Keras 3 on JAX, or ``None`` when not installed or already imported on another backend."""
    if importlib.util.find_spec("keras") is None:
        return None
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "jax"
    keras = importlib.import_module("keras")
    if not keras.__version__.startswith("3") or keras.backend.backend() != "jax":
        return None
    return keras


def keras_model(keras, w: Workload, p0: dict):
    """The compiled Keras twin of ``w``'s model with wframe's weights."""
    L = keras.layers
    if w.kind == "mlp":
        layers = [*(L.Dense(k, activation="relu") for k in w.hidden)]
    elif w.kind == "cnn":
        layers = [
            *(L.Conv2D(k, 3, activation="relu") for k in w.hidden),
            L.MaxPooling2D(2),
            L.Flatten(),
        ]
    else:
        layers = [{"lstm": L.LSTM, "gru": L.GRU}[w.kind](w.hidden[0])]
    model = keras.Sequential([keras.Input(w.in_shape), *layers, L.Dense(w.classes)])
    weighted = [layer for layer in model.layers if layer.weights]
    for layer, d in zip(weighted, p0.values(), strict=True):
        if "W_x" in d:  # Keras: kernel, recurrent kernel, bias ((2, 3u) for a GRU)
            bias = np.stack([d["b"], d["b_h"]]) if "b_h" in d else d["b"]
            layer.set_weights([d["W_x"], d["W_h"], bias])
        else:
            layer.set_weights([d["W"], d["b"]])
    ko = keras.optimizers
    optimizer = ko.Adam(w.lr, epsilon=1e-8) if w.optimizer == "adam" else ko.SGD(w.lr)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=optimizer, loss=loss)
    return model


def keras_runner(keras, w: Workload, p0: dict, x, y, mode: str) -> Callable:
    """``run()``: ``train_on_batch`` (step) or ``fit(epochs=1, shuffle=True)`` (epoch). The
    first epoch sees wframe's epoch-0 order unshuffled, so its loss compares with the others'."""
    model = keras_model(keras, w, p0)
    if mode == "step":
        return lambda: float(model.train_on_batch(x, y))
    first = [permutation(0, x.shape[0])]

    def run():
        xs, ys = (x[first[0]], y[first[0]]) if first else (x, y)
        h = model.fit(xs, ys, epochs=1, batch_size=w.batch, verbose=0, shuffle=not first)
        first.clear()
        return h.history["loss"][0]

    return run


def rows(
    w: Workload,
    mode: str,
    backends: list[str],
    p0: dict,
    x,
    y,
    peers: tuple[str, ...] = ("torch", "keras"),
    notes: list[str] | None = None,
) -> list[Row]:
    """Peer rows: PyTorch when installed (kinds with a twin); Keras when installed and ``jax``
    is benchmarked (the MLP, CNN and RNN kinds)."""
    out, notes = [], notes if notes is not None else []
    xs, ys = (x[: w.batch], y[: w.batch]) if mode == "step" else (x, y)
    if "torch" in peers and w.kind in TORCH_TWINS and importlib.util.find_spec("torch"):
        device = torch_device()
        ref = "reference[numpy]" if device == "cpu" and w.kind in HAND_WRITTEN else None
        out.append(
            Row(
                f"torch[{device}]",
                "torch",
                "torch",
                lambda: torch_runner(w, p0, xs, ys, mode),
                ref=ref,
            )
        )
    if "keras" in peers and "jax" in backends and w.kind in HAND_WRITTEN:
        keras = import_keras()
        if keras is None:
            notes.append("keras[jax]: not run (Keras 3 with the jax backend is not importable)")
        else:
            out.append(
                Row(
                    "keras[jax]",
                    "keras",
                    "jax",
                    lambda: keras_runner(keras, w, p0, xs, ys, mode),
                    ref="reference[jax]",
                )
            )
    return out
