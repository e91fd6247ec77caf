"""wframe's optimizers against optax: 100 float32 steps, state interchange, lookup, rebuild."""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe import optimizers as opt
from wframe.testing import assert_close
from wframe.tree import tree_map

optax = pytest.importorskip("optax")
jnp = pytest.importorskip("jax.numpy")

STEPS = 100
SHAPES = {"dense_0": {"W": (3, 2), "b": (2,)}}


def schedule(count):
    # Works on numpy and jax counts alike.
    return 0.1 / (1.0 + 0.05 * count)


# name -> factory(module) where module is wframe.optimizers or optax: the same call on both.
CASES = {
    "sgd": lambda m: m.sgd(0.1),
    "sgd_momentum": lambda m: m.sgd(0.1, momentum=0.9),
    "sgd_nesterov": lambda m: m.sgd(0.1, momentum=0.9, nesterov=True),
    "sgd_schedule": lambda m: m.sgd(schedule, momentum=0.5),
    "adam": lambda m: m.adam(1e-2),
    "adam_nesterov": lambda m: m.adam(1e-2, nesterov=True),
    "adamw": lambda m: m.adamw(1e-2, weight_decay=0.1),
    "adamw_mask": lambda m: m.adamw(
        1e-2, weight_decay=0.1, mask=lambda p: tree_map(lambda x: x.ndim > 1, p)
    ),
    "rmsprop": lambda m: m.rmsprop(1e-2),
    "rmsprop_centered": lambda m: m.rmsprop(1e-2, centered=True),
    "rmsprop_momentum": lambda m: m.rmsprop(1e-2, momentum=0.9, nesterov=True),
    "rmsprop_bias_correction": lambda m: m.rmsprop(1e-2, bias_correction=True, eps_in_sqrt=False),
    "clip_adam": lambda m: m.chain(
        m.clip_by_global_norm(1.0), m.scale_by_adam(), m.scale_by_learning_rate(1e-2)
    ),
}


def _params():
    rng = np.random.default_rng(0)
    return {
        layer: {k: rng.standard_normal(s).astype(np.float32) for k, s in leaves.items()}
        for layer, leaves in SHAPES.items()
    }


def _grads():
    # Fixed, seeded sequence; scale 2 so clip_by_global_norm(1.0) triggers on most steps.
    rng = np.random.default_rng(1)
    return [
        tree_map(lambda p: (2 * rng.standard_normal(p.shape)).astype(np.float32), _params())
        for _ in range(STEPS)
    ]


GRADS = _grads()


def _run(tx, params, grads, convert=np.asarray, state=None):
    params = tree_map(convert, params)
    state = tx.init(params) if state is None else state
    for g in grads:
        updates, state = tx.update(tree_map(convert, g), state, params)
        params = opt.apply_updates(params, updates)
    return params, state


def _optax_run(tx, params, grads, state=None):
    params = tree_map(jnp.asarray, params)
    state = tx.init(params) if state is None else state
    for g in grads:
        updates, state = tx.update(tree_map(jnp.asarray, g), state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def _wframe_numpy(case):
    with wf.use_backend("numpy"):
        return CASES[case](opt)


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_optax_over_100_steps(case):
    tx = _wframe_numpy(case)
    assert tx.update.__module__ == "wframe.optimizers"
    ours, _ = _run(tx, _params(), GRADS, np.asarray)
    theirs, _ = _optax_run(CASES[case](optax), _params(), GRADS)
    tree_map(lambda a, b: assert_close(a, b, rtol=1e-5), ours, theirs)


@pytest.mark.parametrize("case", ["sgd_momentum", "adam", "adamw", "rmsprop_centered"])
def test_every_backend_matches_numpy(backend, case):
    tx = CASES[case](opt)  # optax's own on jax, wframe's elsewhere
    params = tree_map(backend.asarray, _params())
    state = tx.init(params)
    for g in GRADS:
        updates, state = tx.update(tree_map(backend.asarray, g), state, params)
        params = opt.apply_updates(params, updates)
    expected, _ = _run(_wframe_numpy(case), _params(), GRADS, np.asarray)
    tree_map(lambda a, b: assert_close(a, b, rtol=1e-5), params, expected)


def test_optax_state_continues_under_wframe_and_back():
    half = STEPS // 2
    theirs_tx = optax.adam(1e-2)
    p_mid, s_mid = _optax_run(theirs_tx, _params(), GRADS[:half])
    to_np = np.asarray
    # optax state -> numpy -> wframe's update
    ours, our_state = _run(
        _wframe_numpy("adam"),
        tree_map(to_np, p_mid),
        GRADS[half:],
        to_np,
        state=tree_map(to_np, s_mid),
    )
    theirs, _ = _optax_run(theirs_tx, p_mid, GRADS[half:], state=s_mid)
    tree_map(lambda a, b: assert_close(a, b, rtol=1e-5), ours, theirs)
    assert type(our_state[0]).__name__ == "ScaleByAdamState"
    assert our_state[0].count.dtype == np.int32 and int(our_state[0].count) == STEPS
    # and wframe's state -> jax -> optax's update
    _, s_ours_mid = _run(_wframe_numpy("adam"), _params(), GRADS[:half], np.asarray)
    back, _ = _optax_run(theirs_tx, p_mid, GRADS[half:], state=tree_map(jnp.asarray, s_ours_mid))
    tree_map(lambda a, b: assert_close(a, b, rtol=1e-5), back, theirs)


def test_states_mirror_optax_structure():
    params = _params()
    for case in CASES:
        if case == "clip_adam":
            continue
        ours = _wframe_numpy(case).init(params)
        theirs = CASES[case](optax).init(tree_map(jnp.asarray, params))
        assert _structure(ours) == _structure(theirs), case


def _structure(state):
    if isinstance(state, tuple):
        return (
            type(state).__name__,
            getattr(state, "_fields", None),
            tuple(_structure(s) for s in state),
        )
    if isinstance(state, dict):
        return {k: _structure(v) for k, v in state.items()}
    return (np.asarray(state).dtype.name, np.shape(state))


def test_jit_of_numpy_built_update_on_jax_arrays():
    jax = pytest.importorskip("jax")
    tx = _wframe_numpy("adamw")
    params = tree_map(jnp.asarray, _params())
    state = tx.init(params)
    update = jax.jit(tx.update)
    for g in GRADS[:10]:
        updates, state = update(tree_map(jnp.asarray, g), state, params)
        params = opt.apply_updates(params, updates)
    expected, _ = _optax_run(optax.adamw(1e-2, weight_decay=0.1), _params(), GRADS[:10])
    tree_map(lambda a, b: assert_close(a, b, rtol=1e-5), params, expected)


def test_get_by_name_case_insensitive_with_keras_defaults():
    with wf.use_backend("numpy"):
        tx = opt.get("AdAm")
        assert tx.update.__module__ == "wframe.optimizers"
        assert opt._MADE[tx.update] == ("adam", (), {"learning_rate": 1e-3})
        assert opt._MADE[opt.get("sgd").update][2] == {"learning_rate": 0.01}
        assert opt._MADE[opt.get("RMSprop", learning_rate=0.5).update][2]["learning_rate"] == 0.5


def test_get_passes_transformations_through():
    tx = optax.adam(1e-3)
    assert opt.get(tx) is tx
    ours = opt.chain(opt.identity())
    assert opt.get(ours) is ours


def test_get_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="adamm") as info:
        opt.get("adamm")
    assert "['adam', 'adamw', 'rmsprop', 'sgd']" in str(info.value)


def test_get_bad_type_names_it():
    with pytest.raises(TypeError, match="Received: int"):
        opt.get(3)


def test_rebuild_moves_numpy_optimizer_to_optax():
    with wf.use_backend("numpy"):
        tx = opt.adamw(1e-2, weight_decay=0.1)
    with wf.use_backend("jax"):
        moved = opt.rebuild(tx)
    assert moved.update.__module__.startswith("optax")
    assert opt._MADE[moved.update] == opt._MADE[tx.update]
    # same state layout: wframe's state, converted, runs under optax
    state = tree_map(jnp.asarray, tx.init(_params()))
    moved.update(tree_map(jnp.asarray, GRADS[0]), state, tree_map(jnp.asarray, _params()))
    with wf.use_backend("numpy"):
        assert opt.rebuild(moved).update.__module__ == "wframe.optimizers"
    other = opt.scale(2.0)
    assert opt.rebuild(other) is other
