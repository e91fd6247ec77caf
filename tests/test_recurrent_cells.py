"""The two forms of the recurrent cells (wframe/layers/recurrent_cells.py): the step JAX scans
and differentiates, and the fused loop NumPy/CuPy unroll for their hand-written BPTT, compute
the same function; ``need`` limits the gradients computed; saturated gates stay finite and agree
with ``jax.grad``; float16 keeps its dtype through both forms.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_recurrent import CASES, JAX_ATOL, JAX_RTOL, _case

import wframe as wf
from wframe.testing import assert_close


@pytest.mark.parametrize("name,return_sequences,with_state", CASES)
def test_scanned_and_unrolled_forwards_agree(name, return_sequences, with_state):
    # JAX scans the per-gate step; NumPy/CuPy unroll the fused one (sigmoid columns halved, one
    # tanh for all gates). Both run here on NumPy in float64: the same function.
    layer, params, x, _, state = _case(name, return_sequences, with_state, "float64")
    with wf.use_backend("numpy") as b:
        unrolled = layer.forward(params, {}, x, initial_state=state)[0]
        inference = layer.forward(params, {}, x, initial_state=state, vjp=False)[0]
        xs, consts = layer._scan_inputs(params, x @ params["W_x"] + params["b"])
        carry0 = layer._check_input(params, x, state)
        last, hs = b.scan(lambda c, z: layer._step(consts, c, z), carry0, xs)
    scanned = np.transpose(hs, (1, 0, 2)) if return_sequences else last[0]
    assert_close(unrolled, scanned, rtol=1e-12, atol=1e-14)
    assert_close(inference, unrolled, rtol=0)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_backprop_computes_only_the_needed_gradients(name):
    layer, params, x, dy, _ = _case(name, True, False, "float64")
    with wf.use_backend("numpy"):
        backprop = layer.forward(params, {}, x)[2]
        dx, grads = backprop(dy)
        dx_some, some = backprop(dy, need={"W_h": None, "b": None})
        dx_none, none = backprop(dy, input_grad=False, need={})
    assert sorted(some) == ["W_h", "b"] and none == {} and dx_none is None
    assert_close(dx_some, dx, rtol=0)
    for k in some:
        assert_close(some[k], grads[k], rtol=0)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_saturated_gates_stay_finite_and_agree_with_jax(jax, jit_as_users, name):
    # Pre-activations of +-1e4: every sigmoid is exactly 0 or 1 and every tanh +-1. No overflow
    # (warnings are errors), no NaN in BPTT, and the same numbers as jax.grad of the scan,
    # compiled as users' programs are (unoptimized XLA's tanh(1e4) is not exactly 1).
    layer, params, x, dy, _ = _case(name, True, False, "float32")
    x = x * np.float32(1e4)
    with wf.use_backend("numpy"):
        y, _, backprop = layer.forward(params, {}, x)
        dx, grads = backprop(dy)
    assert np.isfinite(y).all() and np.isfinite(dx).all()
    assert all(np.isfinite(g).all() for g in grads.values())
    with wf.use_backend("jax") as b:
        jparams, jx, jdy = {k: b.asarray(v) for k, v in params.items()}, b.asarray(x), b.asarray(dy)

        def objective(p, v):
            return b.xp.sum(layer.forward(p, {}, v, vjp=False)[0] * jdy)

        def oracle(p, v):
            return layer.forward(p, {}, v, vjp=False)[0], jax.grad(objective, (0, 1))(p, v)

        jy, (jgrads, jdx) = jit_as_users(oracle)(jparams, jx)
    assert_close(y, jy, rtol=JAX_RTOL, atol=JAX_ATOL)
    for k in params:
        assert_close(grads[k], jgrads[k], rtol=JAX_RTOL, atol=JAX_ATOL)
    assert_close(dx, jdx, rtol=JAX_RTOL, atol=JAX_ATOL)


@pytest.mark.parametrize("name", ["simple_rnn", "lstm", "gru"])
def test_half_precision_keeps_its_dtype(name):
    # float16 flows through both loops and BPTT (no float32 constant promotes it) and stays
    # close to the float32 result.
    layer, params, x, dy, _ = _case(name, True, False, "float32")
    half = {k: v.astype(np.float16) for k, v in params.items()}
    with wf.use_backend("numpy"):
        y, _, backprop = layer.forward(half, {}, x.astype(np.float16))
        dx, grads = backprop(dy.astype(np.float16))
        scanned = layer.forward(half, {}, x.astype(np.float16), vjp=False)[0]
        ref_dx, ref_grads = layer.forward(params, {}, x)[2](dy)
    assert y.dtype == dx.dtype == scanned.dtype == np.float16
    assert all(g.dtype == np.float16 for g in grads.values())
    assert_close(scanned, y, rtol=1e-2, atol=1e-2)
    assert_close(dx, ref_dx, rtol=2e-2, atol=2e-2)
    for k in grads:
        assert_close(grads[k], ref_grads[k], rtol=2e-2, atol=2e-2)
