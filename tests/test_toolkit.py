"""The training toolkit together: schedules evaluated inside the compiled step (no retrace),
penalties, clipping and schedules composed with steps_per_execution, numpy equal to jax."""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe.layers import Dense, Dropout
from wframe.testing import assert_close


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 6)).astype(np.float32), rng.integers(0, 3, n)


def test_scheduled_learning_rate_never_retraces_on_jax(jax):
    traces = []
    cosine = wf.schedules.cosine_decay_schedule(0.05, decay_steps=30, alpha=0.1)

    def schedule(count):  # runs once per trace on JAX: the count is a traced array
        traces.append(1)
        return cosine(count)

    x, y = _data()
    with wf.use_backend("jax"):
        model = wf.Sequential([Dense(8, activation="relu"), Dense(3)])
        opt = wf.optimizers.sgd(schedule, momentum=0.9)
        model.fit(x, y, epochs=1, batch_size=16, optimizer=opt, verbose=0)
        first = len(traces)  # one per compiled shape: full batches and the last partial one
        model.fit(x, y, epochs=5, batch_size=16, optimizer=opt, verbose=0)
    assert first == 2 and len(traces) == first
    # and the values used were the schedule's: the optimizer's count moved 3 steps an epoch
    assert int(model.opt_state[1].count) == 18


@pytest.mark.parametrize("spe", [1, 2, "epoch"])
def test_everything_composes_with_steps_per_execution_and_matches_jax(jax, spe):
    """l2 penalty + dropout + clipping + a warmup-cosine Adam: numpy and jax agree, and any
    steps_per_execution gives the same run."""
    x, y = _data(44)
    lr = wf.schedules.warmup_cosine_decay_schedule(0.0, 0.02, warmup_steps=4, decay_steps=20)
    runs = {}
    for name in ("numpy", "jax"):
        with wf.use_backend(name):
            model = wf.Sequential(
                [
                    Dense(16, activation="relu", kernel_regularizer=wf.regularizers.l2(1e-3)),
                    Dropout(0.2),
                    Dense(3, kernel_regularizer="l1"),
                ],
                seed=4,
            )
            hist = model.fit(
                x,
                y,
                epochs=3,
                batch_size=16,
                optimizer=wf.optimizers.adam(lr),
                clipnorm=0.5,
                steps_per_execution=spe,
                verbose=0,
            )
            runs[name] = hist.history, model.params
    (h_np, p_np), (h_jax, p_jax) = runs["numpy"], runs["jax"]
    assert list(h_np) == ["loss", "accuracy", "penalty", "grad_norm"]
    for key in h_np:
        assert_close(h_np[key], h_jax[key], rtol=1e-4)
    assert_close(p_np["dense_1"]["W"], p_jax["dense_1"]["W"], rtol=1e-4, atol=1e-6)
    with wf.use_backend("numpy"):
        model = wf.Sequential(
            [
                Dense(16, activation="relu", kernel_regularizer=wf.regularizers.l2(1e-3)),
                Dropout(0.2),
                Dense(3, kernel_regularizer="l1"),
            ],
            seed=4,
        )
        ref = model.fit(
            x, y, epochs=3, batch_size=16, optimizer=wf.optimizers.adam(lr), clipnorm=0.5, verbose=0
        )
    for key in h_np:
        assert_close(h_np[key], ref.history[key], rtol=1e-5)
