"""Past one device on JAX's own machinery: :class:`DataParallel` shards each batch over a
``jax.sharding.Mesh`` and keeps params and optimizer state replicated; the train step is the
same compiled function, and XLA inserts the gradient all-reduce (GSPMD). :class:`ModelParallel`
also splits params by name rules on a 2-D mesh.

In ``fit`` every batch must divide evenly over the devices (the last partial batch included): a
batch that does not is refused before training with the sizes that would work, unless the
strategy was made with ``drop_remainder=True``: then each epoch's last partial batch is left out
(as ``tf.data``'s ``drop_remainder`` and PyTorch's ``drop_last``; with ``shuffle`` a different
few examples each epoch). ``predict`` and ``evaluate`` pad instead
(:mod:`wframe.distributed.inference`). The dropout masks are those of
single-device training (they hash global element indices), so a data-parallel run equals the
single-device run on the full batch to float32 rounding.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

import numpy as np

from wframe.distributed import inference
from wframe.tree import flatten, map_at


class DataParallel:
    """Data parallelism over ``devices`` (default: all of JAX's) along a mesh axis ``"data"``.

    Args:
      devices: the JAX devices to use, e.g. ``jax.devices()[:4]``.
      per_process_data: with several processes, each one passes only its own share of the
        data (the same number of examples everywhere) to ``fit`` and ``batch_size`` stays the
        global batch: every process shuffles its share with the same permutation (same seed),
        takes ``batch_size / processes`` rows per step, and JAX assembles the global batch
        from the processes' rows (``jax.make_array_from_process_local_data``). Training equals
        single-process training whose every batch is the processes' batches concatenated in
        process order. ``evaluate`` then returns the mean over every process's examples (their
        counts may differ) and ``predict`` each process's own predictions. Default: every
        process passes the same, whole data.
      drop_remainder: in ``fit``, leave out each epoch's last partial batch (its
        ``n % batch_size`` examples, a different few each epoch when shuffling) instead of
        refusing data whose last batch does not divide over the devices. Only ``fit``:
        ``predict`` and ``evaluate`` always see every example (they pad and mask).
    """

    axis = "data"

    def __init__(
        self,
        devices: Sequence[Any] | None = None,
        *,
        per_process_data: bool = False,
        drop_remainder: bool = False,
    ):
        if not isinstance(drop_remainder, bool):
            raise TypeError(
                f"{type(self).__name__}: drop_remainder must be True or False, got "
                f"{drop_remainder!r}"
            )
        self.drop_remainder = drop_remainder

        import jax
        from jax.sharding import Mesh

        devices = list(jax.devices() if devices is None else devices)
        if not devices:
            raise ValueError("DataParallel: devices is empty; pass JAX devices or None for all")
        # Each process's devices side by side (a stable sort): a global batch is then the
        # processes' rows in process order.
        self.devices = sorted(devices, key=lambda d: d.process_index)
        self.per_process_data = bool(per_process_data)
        self.jax = jax
        self._set_mesh(Mesh(np.array(self.devices), (self.axis,)))

    def _set_mesh(self, mesh: Any) -> None:
        from jax.sharding import NamedSharding, PartitionSpec

        self.mesh = mesh
        self._named = lambda spec: NamedSharding(self.mesh, spec)
        self.batch_sharding = self._named(PartitionSpec(self.axis))
        self._stacked = self._named(PartitionSpec(None, self.axis))  # (steps, batch, ...)
        self.replicated = self._named(PartitionSpec())
        feeders = self.feeders
        if self.num_devices % feeders:
            raise ValueError(
                f"{type(self).__name__}: per_process_data needs as many devices on the data axis "
                f"in every process, but {self.num_devices} do not divide over {feeders} processes"
            )

    @property
    def num_devices(self) -> int:
        """Devices along the data axis (each batch is split in this many parts)."""
        return len(self.devices)

    @property
    def feeders(self) -> int:
        """How many processes each pass a share of every batch (1: each passes all of it)."""
        return self.jax.process_count() if self.per_process_data else 1

    @property
    def feeds_batches(self) -> bool:
        """Whether ``fit`` hands each compiled call its batches (:meth:`feed`) instead of the
        whole data once."""
        return self.per_process_data

    def __repr__(self) -> str:
        share = ", per-process data" if self.per_process_data else ""
        share += ", drop_remainder" if self.drop_remainder else ""
        return f"DataParallel({self.num_devices} devices: {self.devices[0].platform}{share})"

    # ------------------------------------------------------------------ checks
    def check_model(self, model: Any, what: str) -> None:
        """Refuse a model off JAX, or one of several inputs or outputs."""
        inference.check_single_io(self, model, what)
        if not model.backend.has_autodiff or model.backend.name != "jax":
            raise ValueError(
                f"{what}: strategy={self!r} needs a model on the jax backend, but it lives on "
                f"'{model.backend.name}'; move it with model.to_backend('jax')"
            )

    def check(self, model: Any, batch_size: int, n: int) -> None:
        """Refuse a model off JAX, or batches (``batch_size``, and the last one of ``n``
        examples unless ``drop_remainder``) that do not divide over the devices; with
        per-process data, also processes that pass different numbers of examples or batch
        sizes."""
        self.check_model(model, "fit")
        d, p = self.num_devices, self.feeders
        if p > 1:
            counts, sizes = self.gather_ints(n, batch_size)
            if len(set(counts)) > 1 or len(set(sizes)) > 1:
                raise ValueError(
                    f"fit: with per_process_data every process must pass as many examples and "
                    f"the same batch_size, got {counts} examples and batch sizes {sizes} on "
                    f"processes 0..{p - 1}"
                )
        b = batch_size // p
        rest = n % b if b else 0
        if self.drop_remainder and b and n < b:
            raise ValueError(
                f"fit: {self!r} drops each epoch's last partial batch, but {n} examples "
                f"make no full batch of {batch_size}"
                + (f" ({b} rows per process)" if p > 1 else "")
                + f"; pass at least {b} examples or use a smaller batch_size"
            )
        bad = [f"batch_size={batch_size}"] if batch_size % d else []
        if rest % (d // p) and not self.drop_remainder:
            bad.append(
                f"the last batch of {rest * p} examples "
                + (f"({n} % {batch_size})" if p == 1 else f"({p} processes x {n} % {b})")
            )
        if bad:
            raise ValueError(
                f"fit: with {d} devices every batch must divide evenly over them, but "
                f"{' and '.join(bad)} do not; use a batch_size and a number of examples that "
                f"are multiples of {d // p} (e.g. x[: {n - n % (d // p)}]), fewer devices"
                + (
                    f", or {type(self).__name__}(..., drop_remainder=True) to leave each "
                    "epoch's last partial batch out"
                    if len(bad) == 1 and not bad[0].startswith("batch_size")
                    else ""
                )
            )

    def gather_ints(self, *values: int) -> list[list[int]]:
        """Each of ``values`` as every process has it (a list per value, in process order)."""
        from jax.experimental import multihost_utils

        table = np.asarray(multihost_utils.process_allgather(np.asarray(values, np.int64)))
        return [[int(v) for v in column] for column in table.reshape(-1, len(values)).T]

    # ------------------------------------------------------------------ placement (host side)
    def replicate(self, tree: Any) -> Any:
        """``tree`` copied to every device (params, state, optimizer state, data). With several
        processes each one must pass the same values (same seed, same data); each places its
        own devices' copies."""
        jax = self.jax
        if jax.process_count() == 1:
            return jax.device_put(tree, self.replicated)

        def place(a):
            host = np.asarray(a)  # this process's copy (replicated arrays are whole here)
            return jax.make_array_from_callback(host.shape, self.replicated, lambda i: host[i])

        return jax.tree.map(place, tree)

    def place(self, ts: Any) -> Any:
        """The train state on the mesh (replicated here; :class:`ModelParallel` splits)."""
        return self.replicate(ts)

    def process_batch(self, batch_size: int) -> int:
        """The rows of each batch this process passes (``batch_size / processes`` with
        per-process data)."""
        return batch_size // self.feeders

    def data(self, x: Any, y: Any) -> tuple[Any, Any]:
        """The training data as ``fit``'s steps read it: on every device (each step gathers and
        shards its batch), or, per-process, on the host for :meth:`feed`."""
        if self.per_process_data:
            return np.asarray(x), np.asarray(y)
        return self.replicate((x, y))

    def feed(self, x: np.ndarray, y: np.ndarray, rows: Any, start: int, steps: int) -> tuple:
        """``(xs, ys, order, start)`` for one compiled call of ``fit``: this process's rows of
        the ``steps`` batches ``rows[start : start + steps]``, gathered on the host, stacked as
        ``(steps, batch, ...)`` and assembled over the processes (split along the batch)."""
        idx = np.asarray(rows)[start : start + steps]
        xs, ys = (self.assemble(a[idx], self._stacked, axis=1) for a in (x, y))
        return xs, ys, self.jax.numpy.arange(steps, dtype=np.int32), 0

    def assemble(self, local: Any, sharding: Any, axis: int = 0) -> Any:
        """A global array from this process's ``local`` rows: with per-process data the
        processes' rows side by side along ``axis``, otherwise every process passes all."""
        jax = self.jax
        if jax.process_count() == 1:
            return jax.device_put(local, sharding)
        shape = list(local.shape)
        shape[axis] *= self.feeders
        return jax.make_array_from_process_local_data(sharding, np.asarray(local), tuple(shape))

    def local_rows(self, a: Any) -> np.ndarray:
        """This process's rows of a batch-sharded global array, on the host."""
        if self.jax.process_count() == 1 or self.feeders == 1:
            return np.asarray(a)
        shards = {s.index[0].start or 0: s.data for s in a.addressable_shards}
        return np.concatenate([np.asarray(shards[k]) for k in sorted(shards)])

    # ------------------------------------------------------------------ inside compiled steps
    def shard_batch(self, x: Any) -> Any:
        """Inside the compiled step: ``x`` split along its first axis over the devices."""
        return self.jax.lax.with_sharding_constraint(x, self.batch_sharding)

    def keep_replicated(self, tree: Any) -> Any:
        """Inside the compiled step: the train state kept as placed (whole on every device)."""
        return self.jax.lax.with_sharding_constraint(tree, self.replicated)

    def fold_key(self, key: Any) -> Any:
        """The dropout key of ``fit``: unchanged (the masks hash global element indices)."""
        return key

    # ------------------------------------------------------------------ inference
    def predict(self, model: Any, x: Any, size: int) -> Any:
        """``model.predict(x, strategy=self)``; see :func:`wframe.distributed.inference.predict`."""

        return inference.predict(self, model, x, size)

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
        """``model.evaluate(..., strategy=self)``; see
        :func:`wframe.distributed.inference.evaluate`."""

        return inference.evaluate(self, model, x, y, loss, size, params, state)


class ModelParallel(DataParallel):
    """Data and model parallelism on a 2-D mesh ``("data", "model")`` of ``mesh_shape``: each
    batch split along ``"data"``, and the params whose flat names match ``rules`` split as the
    rule's ``PartitionSpec`` says, e.g. ``{"dense_*/W": P(None, "model")}`` (Dense/Conv kernels
    along their output axis). The GSPMD way: shardings on the params, XLA inserts the
    collectives. Params matching no rule, the state and the optimizer state start replicated.

    Args:
      mesh_shape: ``(data, model)`` device counts; their product must be the device count.
      rules: ``{glob on flat param names: PartitionSpec}``; the first match wins.
      devices: the devices (default all of JAX's).
      per_process_data, drop_remainder: as :class:`DataParallel`'s.

    A rule that matches no parameter (a typo, a renamed layer) is refused when training or
    inference places the params, with the parameter names it could have matched.
    """

    def __init__(
        self,
        mesh_shape: tuple[int, int],
        rules: dict[str, Any],
        devices: Sequence[Any] | None = None,
        *,
        per_process_data: bool = False,
        drop_remainder: bool = False,
    ):
        from jax.sharding import Mesh

        super().__init__(devices, per_process_data=per_process_data, drop_remainder=drop_remainder)
        data, model = mesh_shape
        if data * model != len(self.devices):
            raise ValueError(
                f"ModelParallel: mesh_shape {tuple(mesh_shape)} needs {data * model} devices, "
                f"there are {len(self.devices)}"
            )
        self.rules = dict(rules)
        self._data_devices = data
        self._set_mesh(Mesh(np.array(self.devices).reshape(data, model), (self.axis, "model")))

    @property
    def num_devices(self) -> int:  # batches divide along the data axis only
        return getattr(self, "_data_devices", len(self.devices))

    def __repr__(self) -> str:
        return f"ModelParallel(mesh {dict(self.mesh.shape)}, {len(self.rules)} rules)"

    def _spec(self, name: str) -> Any:
        for pattern, spec in self.rules.items():
            if fnmatch.fnmatchcase(name, pattern):
                return spec
        return None

    def _shardings(self, params: Any) -> Any:

        specs = {n: self._spec(n) for n, _ in flatten(params)}
        return map_at(
            params,
            {
                n: (lambda _, s=s: self._named(s) if s is not None else self.replicated)
                for n, s in specs.items()
            },
        )

    def check_rules(self, names: list[str]) -> None:
        """Refuse a rule that matches none of the flat param ``names``: it would split
        nothing, silently."""
        unused = [r for r in self.rules if not any(fnmatch.fnmatchcase(n, r) for n in names)]
        if unused:
            shown = ", ".join(repr(n) for n in names[:20])
            more = f" and {len(names) - 20} more" if len(names) > 20 else ""
            raise ValueError(
                f"ModelParallel: rule {unused[0]!r} matches no parameter"
                + (f" (nor do {unused[1:]})" if len(unused) > 1 else "")
                + f"; the model's parameters are {shown}{more}. Fix the glob (e.g. "
                f"'dense_*/W') or remove the rule"
            )

    def place(self, ts: Any) -> Any:

        self.check_rules([name for name, _ in flatten(ts.params)])
        for name, a in flatten(ts.params):
            spec = self._spec(name)
            for axis, part in enumerate(spec or ()):
                names = () if part is None else part if isinstance(part, tuple) else (part,)
                n = int(np.prod([self.mesh.shape[p] for p in names]))
                if axis >= a.ndim or a.shape[axis] % n:
                    raise ValueError(
                        f"ModelParallel: rule {spec} for {name!r} splits axis {axis} in {n}, "
                        f"but the param has shape {tuple(a.shape)}; change the rule or the size"
                    )
        placed = self.replicate(ts)
        params = self.jax.device_put(placed.params, self._shardings(placed.params))
        return placed._replace(params=params)

    def keep_replicated(self, ts: Any) -> Any:
        constrain = self.jax.lax.with_sharding_constraint
        return ts._replace(params=constrain(ts.params, self._shardings(ts.params)))
