""":class:`NcclDataParallel`: data parallelism for the backends with hand-written backprop
(CuPy on the GPUs of one machine through NCCL; NumPy through TCP for CPU runs and tests).

One process per GPU, each with its own share of the data. Every train step all-reduces the
gradients (with the loss, the metric and float layer state) in one call, before clipping and
the optimizer, so every rank applies the same update to the same params.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wframe.backends import backend_of
from wframe.distributed import inference, process
from wframe.distributed.comm import NcclComm, TcpComm
from wframe.random import fold_in
from wframe.training import TrainState
from wframe.training.evaluate import array_batches, evaluate_sums
from wframe.training.logs import results
from wframe.tree import tree_leaves, tree_map


class NcclDataParallel:
    """Data parallelism over processes, one per GPU, for models on the cupy backend.

    ``model.fit(x_mine, y_mine, batch_size=B, strategy=NcclDataParallel())`` in every process:
    each passes its own share of the data (as many examples on every rank) and ``B`` is the
    global batch, ``B / ranks`` rows per rank and step. Every rank shuffles its share with the
    same permutation (same seed); the initial params, state and optimizer state are broadcast
    from rank 0; each step the gradients are averaged over the ranks (one NCCL all-reduce, on
    the current stream) before clipping and the optimizer. So training equals single-process
    training whose every batch is the ranks' batches concatenated, to float rounding, except
    that each rank draws its own dropout masks and BatchNorm normalizes with each rank's batch
    statistics (its running statistics are averaged over the ranks every step). The logged
    loss and metric are the global batch's, ``evaluate`` (and ``fit``'s validation) gives the
    mean over every rank's examples, ``predict`` each rank's own predictions, and only rank 0
    writes checkpoints.

    Create it first in each process: with NCCL it makes GPU ``LOCAL_RANK`` current, so the
    model's arrays go there. Start one process per GPU with
    ``python -m wframe.distributed.launch --nproc N script.py`` (or torchrun; both set
    ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).

    The NCCL path has not yet run on GPUs (none was available while it was written): it follows
    CuPy's documented ``cupy.cuda.nccl`` API, and everything else (the step's all-reduce, the
    broadcast, the rank checks, the launcher and the rendezvous) is tested on CPU with NumPy
    models and ``comm="tcp"``. Under the cupy backend's CUDA-graph ``jit`` the all-reduce is
    recorded into the step's graph (NCCL supports stream capture since 2.9); should that
    misbehave, ``WFRAME_CUPY_GRAPHS=0`` runs the steps eagerly. With ``comm="tcp"`` on CuPy the
    host copies make the capture fall back to eager steps by themselves.

    Args:
      comm: ``"nccl"`` (default; CuPy, one GPU per process), ``"tcp"`` (host arrays through
        rank 0 over TCP: CPU runs, tests), or a communicator object (``rank``, ``size``,
        ``all_reduce(a)``, ``broadcast(a, root)``; see :mod:`wframe.distributed.comm`).
      timeout: seconds to wait for the other ranks (rendezvous, each message on TCP).
    """

    feeds_batches = False  # each rank gathers its own batches from its own data

    def __init__(self, comm: Any = "nccl", *, timeout: float = 300.0):
        if comm == "nccl":
            comm = NcclComm.from_env(timeout)
        elif comm == "tcp":
            comm = TcpComm.from_env(timeout)
        elif isinstance(comm, str):
            raise ValueError(
                f"NcclDataParallel: comm must be 'nccl', 'tcp' or a communicator, got {comm!r}"
            )
        self.comm = comm
        self.rank, self.world_size = comm.rank, comm.size
        process.set_group_rank(self.rank)

    def __repr__(self) -> str:
        return f"NcclDataParallel(rank {self.rank} of {self.world_size}, {self.comm!r})"

    def close(self) -> None:
        """Release the communicator (its sockets or NCCL communicator)."""
        close = getattr(self.comm, "close", None)
        if close is not None:
            close()

    @property
    def num_devices(self) -> int:
        return self.world_size

    # ------------------------------------------------------------------ checks
    def check_model(self, model: Any, what: str) -> None:
        """Refuse a JAX model (DataParallel's job), or one off CuPy with NCCL, or one of
        several inputs or outputs."""
        inference.check_single_io(self, model, what)
        if model.backend.has_autodiff:
            raise ValueError(
                f"{what}: strategy={self!r} runs the hand-written backprop of the numpy and cupy "
                f"backends, but the model lives on '{model.backend.name}'; use "
                "wf.distributed.DataParallel for jax models"
            )
        if isinstance(self.comm, NcclComm) and model.backend.name != "cupy":
            raise ValueError(
                f"{what}: strategy={self!r} needs a model on the cupy backend, but it lives on "
                f"'{model.backend.name}'; move it with model.to_backend('cupy'), or use "
                "NcclDataParallel(comm='tcp') on CPU"
            )

    def check(self, model: Any, batch_size: int, n: int) -> None:
        """Refuse ranks that pass different numbers of examples or batch sizes, and a global
        ``batch_size`` that does not divide over the ranks."""
        self.check_model(model, "fit")
        counts, sizes = self.gather_ints(n, batch_size, backend=model.backend)
        if len(set(counts)) > 1 or len(set(sizes)) > 1:
            raise ValueError(
                f"fit: every NcclDataParallel rank must pass as many examples and the same "
                f"batch_size, got {counts} examples and batch sizes {sizes} on ranks "
                f"0..{self.world_size - 1}"
            )
        if batch_size % self.world_size:
            raise ValueError(
                f"fit: batch_size={batch_size} is the global batch and must divide over the "
                f"{self.world_size} ranks; use a multiple of {self.world_size}"
            )

    def gather_ints(self, *values: int, backend: Any) -> list[list[int]]:
        """Each of ``values`` as every rank has it (a list per value, in rank order): an
        all-reduce of a table that is zero but for this rank's column."""
        table = np.zeros((len(values), self.world_size), np.int64)
        table[:, self.rank] = values
        total = backend.to_numpy(self.comm.all_reduce(backend.asarray(table)))
        return [[int(v) for v in row] for row in np.asarray(total)]

    # ------------------------------------------------------------------ fit's hooks
    def process_batch(self, batch_size: int) -> int:
        """The rows of each batch this rank trains on."""
        return batch_size // self.world_size

    def data(self, x: Any, y: Any) -> tuple[Any, Any]:
        return x, y  # each rank's own share, on its own device

    def place(self, ts: Any) -> Any:
        """The train state broadcast from rank 0 (every array of it)."""

        return tree_map(lambda a: self.comm.broadcast(a) if hasattr(a, "shape") else a, ts)

    def replicate(self, tree: Any) -> Any:
        return self.place(tree)

    def shard_batch(self, x: Any) -> Any:
        return x  # the batch is this rank's already

    def keep_replicated(self, tree: Any) -> Any:
        return tree

    def fold_key(self, key: Any) -> Any:
        """Rank 0 keeps ``fit``'s dropout key; the others draw their own masks."""

        return key if self.rank == 0 else fold_in(key, self.rank)

    def sync(self, value: Any, grads: Any, logged: list, state: Any) -> tuple:
        """Inside a train step: the loss, the gradients, the logged metrics and the float
        layer state averaged over the ranks, in one all-reduce of one flat buffer."""

        xp = backend_of(value).xp
        leaves = tree_leaves(grads)
        floats = [a for a in tree_leaves(state) if xp.isdtype(a.dtype, "real floating")]
        parts = [value, *logged, *leaves, *floats]
        dtype = leaves[0].dtype if leaves else value.dtype
        flat = xp.concat([xp.reshape(xp.astype(a, dtype), (-1,)) for a in parts])
        flat = self.comm.all_reduce(flat) * (1.0 / self.world_size)
        out, at = [], 0
        for a in parts:
            size = int(np.prod(a.shape))
            out.append(xp.astype(xp.reshape(flat[at : at + size], a.shape), a.dtype))
            at += size
        value, logged = out[0], out[1 : 1 + len(logged)]
        done = iter(out[1 + len(logged) :])
        grads = tree_map(lambda _: next(done), grads)
        state = tree_map(lambda a: next(done) if xp.isdtype(a.dtype, "real floating") else a, state)
        return value, grads, logged, state

    # ------------------------------------------------------------------ inference
    def predict(self, model: Any, x: Any, size: int) -> Any:
        """This rank's predictions of its ``x`` (no communication)."""
        self.check_model(model, "predict")
        return model.predict(x, batch_size=size)

    def evaluate(
        self,
        model: Any,
        x: Any,
        y: Any,
        loss: Any,
        size: int,
        params: Any = None,
        state: Any = None,
    ) -> dict[str, float]:
        """The mean loss (and metric) over every rank's examples, the same on every rank."""
        self.check_model(model, "evaluate")
        arrays = None if params is None else TrainState(params, state, None)
        batches = array_batches(x, y, size)
        layout, sums, count = evaluate_sums(model, batches, loss, arrays)
        # Every sum is additive: the ranks' add up to the sums over all the examples.
        flat = np.concatenate([np.ravel(s) for s in sums] + [np.array([count], np.float64)])
        backend = model.backend
        total = np.asarray(backend.to_numpy(self.comm.all_reduce(backend.asarray(flat))))
        if not total[-1]:
            return {}
        parts = np.split(total[:-1], np.cumsum([max(n, 1) for n in layout.sizes()])[:-1])
        sizes = layout.sizes()
        return results(
            layout, [p if n else p[0] for p, n in zip(parts, sizes, strict=True)], total[-1]
        )
