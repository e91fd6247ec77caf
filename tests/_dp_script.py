"""Run by tests/test_distributed.py in a fresh process with 4 forced CPU devices: data-parallel
fit against single-device fit; prints one JSON line of results."""

import json
import os

# (and the test suite's XLA flags: tests/conftest.py)
os.environ["XLA_FLAGS"] = (
    f"--xla_force_host_platform_device_count=4 {os.environ.get('WFRAME_TESTS_XLA_FLAGS', '')}"
)

import numpy as np  # noqa: E402

import wframe as wf  # noqa: E402
from wframe.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D  # noqa: E402


def mlp():
    return wf.Sequential([Dense(16, activation="relu"), Dropout(0.3), Dense(3)], seed=2)


def cnn():
    return wf.Sequential(
        [Conv2D(4, 3, activation="relu"), MaxPool2D(), Flatten(), Dropout(0.2), Dense(3)], seed=3
    )


def diff(a, b):
    return max(
        float(np.abs(np.asarray(a.params[k][n]) - np.asarray(b.params[k][n])).max())
        for k in a.params
        for n in a.params[k]
    )


rng = np.random.default_rng(0)
data = {
    "mlp": (rng.standard_normal((80, 6)).astype(np.float32), rng.integers(0, 3, 80)),
    "cnn": (rng.standard_normal((80, 8, 8, 1)).astype(np.float32), rng.integers(0, 3, 80)),
}
out, trained = {}, {}
with wf.use_backend("jax"):
    import jax

    out["devices"] = len(jax.devices())
    dp = wf.distributed.DataParallel()
    # Each optimizer and call length once on the MLP, the CNN (sharded convolutions) once: each
    # pair of fits costs seconds of compilation.
    cases = (("mlp", "sgd", 1), ("mlp", "adam", "epoch"), ("cnn", "adam", "epoch"))
    for name, opt, spe in cases:
        x, y = data[name]
        make = {"mlp": mlp, "cnn": cnn}[name]
        single, multi = make(), make()
        # 80 examples, batch 16: 5 steps an epoch, 20 steps in 4 epochs
        hs = single.fit(
            x, y, epochs=4, batch_size=16, optimizer=opt, verbose=0, steps_per_execution=spe
        )
        hm = multi.fit(
            x,
            y,
            epochs=4,
            batch_size=16,
            optimizer=opt,
            verbose=0,
            steps_per_execution=spe,
            strategy=dp,
        )
        out[f"{name}/{opt}/{spe}"] = {
            "max_diff": diff(single, multi),
            "loss": [hs.history["loss"][-1], hm.history["loss"][-1]],
            "replicated": all(
                a.sharding.is_fully_replicated and len(a.sharding.device_set) == 4
                for sub in multi.params.values()
                for a in sub.values()
            ),
        }
        trained[name] = multi
    # XLA inserted the gradient all-reduce: the compiled step is partitioned
    from wframe.training import TrainState

    b = multi.backend
    run = list(multi.trainer.runners().values())[0]
    acc = [v for key, v in multi.trainer.memos().items() if key[0] == "acc"][0]
    key0 = [v for key, v in multi.trainer.memos().items() if key[0] == "key0"][0]
    ts = dp.replicate(b.copy(TrainState(multi.params, multi.state, multi.opt_state, None)))
    order = b.asarray(np.arange(80, dtype=np.int32).reshape(5, 16))
    xy = dp.replicate((b.asarray(x), b.asarray(y)))
    text = run.lower(ts, acc, *xy, order, 0, 0, key0, True).compile().as_text()
    out["all_reduce"] = "all-reduce" in text
    from jax.sharding import PartitionSpec as P

    mp = wf.distributed.ModelParallel((2, 2), {"dense_0/W": P(None, "model")})
    x, y = data["mlp"]
    single, multi = mlp(), mlp()
    single.fit(x, y, epochs=4, batch_size=16, optimizer="adam", verbose=0)
    multi.fit(x, y, epochs=4, batch_size=16, optimizer="adam", verbose=0, strategy=mp)
    w = multi.params["dense_0"]["W"]
    out["model_parallel"] = {
        "max_diff": diff(single, multi),
        "split": not w.sharding.is_fully_replicated,
    }
    try:
        wf.distributed.ModelParallel((2, 2), {"dense_*/W": P(None, "model")}).place(
            wf.TrainState(multi.params, multi.state, multi.opt_state)
        )
    except ValueError as e:
        out["bad_rule"] = str(e)

    # predict / evaluate under the strategies: 83 rows in batches of 16 (all padded to 16 on
    # the strategy's side, the last one holding 3 rows); fit's validation too.
    xq, yq = rng.standard_normal((83, 6)).astype(np.float32), rng.integers(0, 3, 83)
    cq = rng.standard_normal((83, 8, 8, 1)).astype(np.float32)

    def gap(model, xs, ys, strategy):
        a = np.asarray(model.predict(xs, batch_size=16))
        b = np.asarray(model.predict(xs, batch_size=16, strategy=strategy))
        ea = model.evaluate(xs, ys, batch_size=16)
        eb = model.evaluate(xs, ys, batch_size=16, strategy=strategy)
        scale = max(1.0, float(np.abs(a).max()))  # relative to the outputs' scale
        return max(float(np.abs(a - b).max()) / scale, *(abs(ea[k] - eb[k]) for k in ea))

    single, multi = mlp(), mlp()
    hs = single.fit(x, y, epochs=2, batch_size=16, verbose=0, validation_data=(xq, yq))
    hm = multi.fit(x, y, epochs=2, batch_size=16, verbose=0, validation_data=(xq, yq), strategy=dp)
    own = mlp()  # per-process data in one process: the batches fed per call, the same run
    ho = own.fit(
        x,
        y,
        epochs=2,
        batch_size=16,
        verbose=0,
        strategy=wf.distributed.DataParallel(per_process_data=True),
    )
    out["inference"] = {
        "history_keys": sorted(hm.history),
        "history": max(
            abs(a - b)
            for k in hs.history
            for a, b in zip(hs.history[k], hm.history[k], strict=True)
        ),
        "mlp": gap(multi, xq, yq, dp),
        "cnn": gap(trained["cnn"], cq, yq, dp),
        "model_parallel": gap(multi, xq, yq, mp),
        "per_process": max(
            diff(own, single),
            *(
                abs(a - b)
                for k in ho.history
                for a, b in zip(hs.history[k], ho.history[k], strict=True)
            ),
        ),
    }

    from sklearn.datasets import load_digits

    dx, dy = load_digits(return_X_y=True)
    dx, dy = (dx[:1796] / 16).astype(np.float32), dy[:1796]  # 1796 = 56 * 32 + 4: all divide
    accs = []
    for strategy in (None, dp):
        model = wf.Sequential([Dense(64, activation="relu"), Dense(10)], seed=0)
        model.fit(dx, dy, epochs=2, batch_size=32, verbose=0, strategy=strategy)  # 0.87
        accs.append(model.evaluate(dx, dy)["accuracy"])
    out["digits_accuracy"] = accs
    try:
        multi.fit(x[:78], y[:78], epochs=1, batch_size=16, verbose=0, strategy=dp)
    except ValueError as e:
        out["indivisible"] = str(e)
    # drop_remainder: 78 examples in batches of 16 train as the first 64 do (unshuffled), the
    # last 14 left out of every epoch; 4 steps an epoch.
    dropper = wf.distributed.DataParallel(drop_remainder=True)
    single, multi = mlp(), mlp()
    single.fit(x[:64], y[:64], epochs=2, batch_size=16, shuffle=False, verbose=0)
    multi.fit(x[:78], y[:78], epochs=2, batch_size=16, shuffle=False, verbose=0, strategy=dropper)
    out["drop_remainder"] = {
        "max_diff": diff(single, multi),
        "steps": [single.steps, multi.steps],
        "repr": repr(dropper),
    }
    try:
        multi.fit(x[:12], y[:12], epochs=1, batch_size=16, verbose=0, strategy=dropper)
    except ValueError as e:
        out["drop_remainder"]["too_few"] = str(e)
print(json.dumps(out))
