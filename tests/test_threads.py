"""The BLAS thread policy of wframe's host calls (:mod:`wframe.backends.threads`): one thread
for small work inside ``fit``/``evaluate``/``predict`` on numpy, the user's setting outside."""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe.backends import threads
from wframe.callbacks import Callback

threadpoolctl = pytest.importorskip("threadpoolctl")


def _blas_threads():
    return {
        lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"
    }


def test_policy_overrides_and_errors(monkeypatch):
    monkeypatch.delenv("WFRAME_NUM_THREADS", raising=False)
    assert threads.threads_for(1e4) == 1 and threads.threads_for(1e9) is None
    with wf.num_threads(3):
        assert threads.threads_for(1e4) == threads.threads_for(1e9) == 3
    monkeypatch.setenv("WFRAME_NUM_THREADS", "2")
    assert threads.threads_for(1e9) == 2
    monkeypatch.setenv("WFRAME_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="WFRAME_NUM_THREADS must be a positive int or 'auto'"):
        threads.threads_for(1.0)
    with pytest.raises(ValueError, match="n must be a positive int or None"):
        with wf.num_threads(0):
            pass


def test_small_fit_runs_blas_on_one_thread_and_restores_the_setting():
    seen = []

    class Look(Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(_blas_threads())

    x = np.random.default_rng(0).normal(size=(32, 8)).astype("float32")
    with wf.use_backend("numpy"), threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = _blas_threads()
        model = wf.Sequential([wf.layers.Dense(4)], seed=0)
        model.fit(x, np.arange(32) % 4, epochs=1, verbose=0, callbacks=[Look()])
        assert seen == [{1}] and _blas_threads() == before
        with wf.num_threads(2):
            model.fit(x, np.arange(32) % 4, epochs=1, verbose=0, callbacks=[Look()])
        assert seen[-1] == before


def test_overlapping_calls_restore_the_setting_whatever_order_they_end_in():
    """Two calls overlap (a predict thread during a fit): the first sets the limit, the last
    to leave restores the user's setting, even when the first ends first."""
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = _blas_threads()
        first, second = threads.limited(1.0), threads.limited(1.0)
        first.__enter__()
        second.__enter__()
        assert _blas_threads() == {1}
        first.__exit__(None, None, None)
        assert _blas_threads() == {1}  # the second call still runs
        second.__exit__(None, None, None)
        assert _blas_threads() == before
