"""Past one device, on JAX's own machinery: :class:`DataParallel` shards each batch over a
``jax.sharding.Mesh`` and keeps params and optimizer state replicated; the train step is the
same compiled function, and XLA inserts the gradient all-reduce (GSPMD).

``model.fit(x, y, strategy=wf.distributed.DataParallel())`` on a model of the jax backend.
Every batch must divide evenly over the devices (the last partial batch included): a batch that
does not is refused before training with the sizes that would work, rather than padded. The
dropout masks are those of single-device training (they hash global element indices), so a
data-parallel run equals the single-device run on the full batch to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class DataParallel:
    """Data parallelism over ``devices`` (default: all of JAX's) along a mesh axis ``"data"``.

    Args:
      devices: the JAX devices to use, e.g. ``jax.devices()[:4]``.
    """

    axis = "data"

    def __init__(self, devices: Sequence[Any] | None = None):
        import jax
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        devices = list(jax.devices() if devices is None else devices)
        if not devices:
            raise ValueError("DataParallel: devices is empty; pass JAX devices or None for all")
        self.devices = devices
        self.mesh = Mesh(np.array(devices), (self.axis,))
        self._jax = jax
        self._batch = NamedSharding(self.mesh, PartitionSpec(self.axis))
        self._replicated = NamedSharding(self.mesh, PartitionSpec())

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    def __repr__(self) -> str:
        return f"DataParallel({self.num_devices} devices: {self.devices[0].platform})"

    def check(self, model: Any, batch_size: int, n: int) -> None:
        """Refuse a model off JAX, or batches (``batch_size``, and the last one of ``n``
        examples) that do not divide over the devices."""
        if not model.backend.has_autodiff or model.backend.name != "jax":
            raise ValueError(
                f"fit: strategy={self!r} needs a model on the jax backend, but it lives on "
                f"'{model.backend.name}'; move it with model.to_backend('jax')"
            )
        d, rest = self.num_devices, n % batch_size
        bad = [f"batch_size={batch_size}"] if batch_size % d else []
        if rest % d:
            bad.append(f"the last batch of {rest} examples ({n} % {batch_size})")
        if bad:
            raise ValueError(
                f"fit: with {d} devices every batch must divide evenly over them, but "
                f"{' and '.join(bad)} do not; use a batch_size and a number of examples that "
                f"are multiples of {d} (e.g. x[: {n - n % d}]), or fewer devices"
            )

    def replicate(self, tree: Any) -> Any:
        """``tree`` copied to every device (params, state, optimizer state, data). With several
        processes each one must pass the same values (same seed, same data); each places its
        own devices' copies."""
        jax = self._jax
        if jax.process_count() == 1:
            return jax.device_put(tree, self._replicated)

        def place(a):
            host = np.asarray(a)  # this process's copy (replicated arrays are whole here)
            return jax.make_array_from_callback(host.shape, self._replicated, lambda i: host[i])

        return jax.tree.map(place, tree)

    def shard_batch(self, x: Any) -> Any:
        """Inside the compiled step: ``x`` split along its first axis over the devices."""
        return self._jax.lax.with_sharding_constraint(x, self._batch)

    def keep_replicated(self, tree: Any) -> Any:
        """Inside the compiled step: the train state kept as placed (whole on every device)."""
        return self._jax.lax.with_sharding_constraint(tree, self._replicated)

    def place(self, ts: Any) -> Any:
        """The train state on the mesh (replicated here; :class:`ModelParallel` splits)."""
        return self.replicate(ts)


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
    """

    def __init__(self, mesh_shape: tuple[int, int], rules: dict[str, Any],
                 devices: Sequence[Any] | None = None):  # fmt: skip
        import jax
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        super().__init__(devices)
        data, model = mesh_shape
        if data * model != len(self.devices):
            raise ValueError(
                f"ModelParallel: mesh_shape {tuple(mesh_shape)} needs {data * model} devices, "
                f"there are {len(self.devices)}"
            )
        self.mesh = Mesh(np.array(self.devices).reshape(data, model), (self.axis, "model"))
        self.rules = dict(rules)
        self._jax = jax
        self._named = lambda spec: NamedSharding(self.mesh, spec)
        self._batch = self._named(PartitionSpec(self.axis))
        self._replicated = self._named(PartitionSpec())
        self._data_devices = data

    @property
    def num_devices(self) -> int:  # batches divide along the data axis only
        return self._data_devices

    def __repr__(self) -> str:
        return f"ModelParallel(mesh {dict(self.mesh.shape)}, {len(self.rules)} rules)"

    def _spec(self, name: str) -> Any:
        import fnmatch

        for pattern, spec in self.rules.items():
            if fnmatch.fnmatchcase(name, pattern):
                return spec
        return None

    def _shardings(self, params: Any) -> Any:
        from wframe.tree import flatten, map_at

        specs = {n: self._spec(n) for n, _ in flatten(params)}
        return map_at(params, {n: (lambda _, s=s: self._named(s) if s is not None
                                   else self._replicated) for n, s in specs.items()})

    def place(self, ts: Any) -> Any:
        from wframe.tree import flatten

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
        params = self._jax.device_put(placed.params, self._shardings(placed.params))
        return placed._replace(params=params)

    def keep_replicated(self, ts: Any) -> Any:
        constrain = self._jax.lax.with_sharding_constraint
        return ts._replace(params=constrain(ts.params, self._shardings(ts.params)))


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, **kwargs: Any) -> None:
    """Join a multi-process JAX run: :func:`jax.distributed.initialize`, before any JAX array.

    Arguments left ``None`` come from ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID`` when set, else JAX detects them (SLURM, Open MPI, Kubernetes, ...).
    On CPU the processes' collectives go through gloo. Then ``DataParallel()`` spans every
    process's devices; each process runs the same script on the same data and seed.
    """
    import os

    import jax

    env = os.environ
    coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and "JAX_NUM_PROCESSES" in env:
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and "JAX_PROCESS_ID" in env:
        process_id = int(env["JAX_PROCESS_ID"])
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id, **kwargs)


def is_writer() -> bool:
    """True in the process that writes files (process 0; the only one without JAX's
    multi-process run)."""
    import sys

    jax = sys.modules.get("jax")
    return jax is None or jax.process_index() == 0
