"""One of the two processes of tests/test_distributed.py's loopback run: 2 CPU devices each,
jax.distributed over 127.0.0.1, data-parallel fit over the 4 devices; prints its params."""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import numpy as np  # noqa: E402

import wframe as wf  # noqa: E402

port, pid = sys.argv[1], int(sys.argv[2])
wf.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid,
                          initialization_timeout=60)  # fmt: skip
rng = np.random.default_rng(0)
x, y = rng.standard_normal((80, 6)).astype(np.float32), rng.integers(0, 3, 80)
with wf.use_backend("jax"):
    import jax

    model = wf.Sequential([wf.layers.Dense(16, activation="relu"), wf.layers.Dropout(0.3),
                           wf.layers.Dense(3)], seed=2)  # fmt: skip
    dp = wf.distributed.DataParallel()
    model.fit(x, y, epochs=4, batch_size=16, optimizer="adam", verbose=0, strategy=dp)
    params = {f"{k}/{n}": np.asarray(a).tolist() for k, v in model.params.items()
              for n, a in v.items()}  # fmt: skip
print(json.dumps({"pid": pid, "processes": jax.process_count(), "devices": jax.device_count(),
                  "writer": wf.distributed.is_writer(), "params": params}))  # fmt: skip
