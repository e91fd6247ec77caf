"""One of the two processes of tests/test_distributed.py's loopback run: 2 CPU devices each,
jax.distributed over 127.0.0.1, data-parallel fit over the 4 devices (every process with all
the data, then each with its own half); prints its results as one JSON line."""

import json
import os
import sys

# (and the test suite's XLA flags, tests/conftest.py)
os.environ["XLA_FLAGS"] = (
    f"--xla_force_host_platform_device_count=2 {os.environ.get('WFRAME_TESTS_XLA_FLAGS', '')}"
)

import numpy as np  # noqa: E402

import wframe as wf  # noqa: E402

port, pid = sys.argv[1], int(sys.argv[2])
wf.distributed.initialize(
    f"127.0.0.1:{port}", num_processes=2, process_id=pid, initialization_timeout=60
)
rng = np.random.default_rng(0)
x, y = rng.standard_normal((80, 6)).astype(np.float32), rng.integers(0, 3, 80)
xv, yv = rng.standard_normal((17, 6)).astype(np.float32), rng.integers(0, 3, 17)
mine = slice(0, 40) if pid == 0 else slice(40, 80)  # this process's share
val_mine = slice(0, 10) if pid == 0 else slice(10, 17)  # unequal shares: padded, masked


def mlp():
    return wf.Sequential(
        [wf.layers.Dense(16, activation="relu"), wf.layers.Dropout(0.3), wf.layers.Dense(3)], seed=2
    )


def flat(model):
    return {
        f"{k}/{n}": np.asarray(a).tolist() for k, v in model.params.items() for n, a in v.items()
    }


with wf.use_backend("jax"):
    import jax

    model = mlp()
    dp = wf.distributed.DataParallel()
    model.fit(x, y, epochs=4, batch_size=16, optimizer="adam", verbose=0, strategy=dp)
    out = {
        "pid": pid,
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "writer": wf.distributed.is_writer(),
        "params": flat(model),
    }
    # Every process all the data: predict and evaluate over the 4 devices, 17 rows padded.
    out["predict"] = np.asarray(model.predict(xv, batch_size=8, strategy=dp)).tolist()
    out["evaluate"] = model.evaluate(xv, yv, batch_size=8, strategy=dp)

    # Each process its own half: global batch 12 = 6 rows here (3 per device); 40 rows make 6
    # batches and a last one of 4 (8 over the 4 devices); 3 steps per compiled call.
    own = wf.distributed.DataParallel(per_process_data=True)
    model = mlp()
    history = model.fit(
        x[mine],
        y[mine],
        epochs=3,
        batch_size=12,
        optimizer="adam",
        verbose=0,
        steps_per_execution=3,
        validation_data=(xv[val_mine], yv[val_mine]),
        strategy=own,
    )
    out["own"] = {
        "params": flat(model),
        "history": history.history,
        # 2 rows a process per batch: 5 batches, process 1's last one all padding
        "predict": np.asarray(model.predict(xv[val_mine], batch_size=4, strategy=own)).tolist(),
        # the batch of fit's validation: its compiled function again
        "evaluate": model.evaluate(xv[val_mine], yv[val_mine], batch_size=256, strategy=own),
    }
    try:  # the processes disagree on the example count: every process refuses, none hangs
        model.fit(
            x[mine][: 36 + 2 * pid], y[mine][: 36 + 2 * pid], batch_size=12, verbose=0, strategy=own
        )
    except ValueError as e:
        out["unequal"] = str(e)
print(json.dumps(out))
