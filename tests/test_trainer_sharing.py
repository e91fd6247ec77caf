"""Compile once per architecture (:func:`wframe.training.trainer_for`): on JAX a second model of
an architecture compiled before shares its trainer and traces nothing, trains as it would
alone, and the cache keeps no model alive."""

from __future__ import annotations

import gc
import weakref

import numpy as np

import wframe as wf
from wframe import training
from wframe.backends import to_numpy
from wframe.precision import DynamicLossScale, Policy
from wframe.tree import tree_map

X = np.random.default_rng(0).normal(size=(48, 6)).astype("float32")
Y = np.arange(48) % 3


def _mlp(seed=0, activation="relu", dtype="float32"):
    layers = [wf.layers.Dense(8, activation=activation), wf.layers.Dropout(0.2), wf.layers.Dense(3)]
    return wf.Sequential(layers, seed=seed, dtype=dtype)


def _traces(model):
    return sum(run._cache_size() for run in model.trainer.runners().values())


def test_a_second_model_of_the_architecture_compiles_nothing(jax):
    with wf.use_backend("jax"):
        training.forget_shared()
        a = _mlp(seed=0)
        a.fit(X, Y, epochs=1, batch_size=16, verbose=0)
        traced = _traces(a)
        b = _mlp(seed=1)
        b.fit(X, Y, epochs=2, batch_size=16, verbose=0)
        assert b.trainer is a.trainer and _traces(b) == traced
        alone = tree_map(to_numpy, b.params)
        training.forget_shared()  # the same training with nothing shared
        c = _mlp(seed=1)
        c.fit(X, Y, epochs=2, batch_size=16, verbose=0)
        assert c.trainer is not a.trainer
        for (k, got), want in zip(
            tree_map(to_numpy, c.params).items(), alone.values(), strict=True
        ):
            np.testing.assert_array_equal(got["W"], want["W"], err_msg=k)


def test_what_makes_an_architecture(jax):
    with wf.use_backend("jax"):
        a, same = _mlp().build((None, 6)), _mlp(seed=9).build((None, 6))
        assert same.trainer is a.trainer  # the seed is data, not program
        others = [
            _mlp(activation="tanh").build((None, 6)),
            _mlp().build((None, 7)),
            _mlp().build((None, 6)).freeze("dense_0"),
            _mlp(dtype="mixed_bfloat16").build((None, 6)),
            _mlp(dtype=Policy("mixed_float16", DynamicLossScale(period=3))).build((None, 6)),
        ]
        fp16 = _mlp(dtype=Policy("mixed_float16", DynamicLossScale(period=5))).build((None, 6))
        assert fp16.trainer is not others[-1].trainer  # the loss scaling is compiled in
        assert all(other.trainer is not a.trainer for other in others)


def test_the_cache_keeps_no_model_alive(jax):
    with wf.use_backend("jax"):
        a = _mlp(seed=5)
        a.fit(X, Y, epochs=1, batch_size=16, verbose=0)
        a.predict(X)
        gone = weakref.ref(a)
        del a
        gc.collect()
        assert gone() is None


def test_numpy_models_keep_their_own_trainer():
    with wf.use_backend("numpy"):
        a, b = _mlp().build((None, 6)), _mlp().build((None, 6))
        assert a.trainer is not b.trainer


def test_a_second_fit_traces_nothing_at_all(jax):
    # Every compiled function, not only the runners: JAX reports each trace it makes.
    import jax.monitoring as monitoring

    traces = []

    def listen(event, seconds, **kwargs):
        if event.endswith("jaxpr_trace_duration"):
            traces.append(event)

    with wf.use_backend("jax"):
        training.forget_shared()
        for spe in (1, "epoch"):
            model = _mlp(seed=0)
            model.fit(X, Y, epochs=1, batch_size=16, steps_per_execution=spe, verbose=0)
            model.evaluate(X, Y, verbose=0)
            monitoring.register_event_duration_secs_listener(listen)
            try:
                for seed in (0, 1):  # the same model again, and a second one
                    again = model if seed == 0 else _mlp(seed=1)
                    again.fit(X, Y, epochs=2, batch_size=16, steps_per_execution=spe, verbose=0)
                    again.evaluate(X, Y, verbose=0)
            finally:
                monitoring.unregister_event_duration_listener(listen)
            assert traces == [], spe
