"""wframe's optimizers against optax (100 float32 steps on NumPy and under jax.jit), state
interchange and structure, the fused in-place NumPy path, and lookup by name."""

from __future__ import annotations

import numpy as np
import pytest

from wframe import optimizers as opt
from wframe.backends import array_namespace
from wframe.testing import assert_close
from wframe.tree import tree_leaves, tree_map

optax = pytest.importorskip("optax")
jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

STEPS = 100
SHAPES = {"dense_0": {"W": (3, 2), "b": (2,)}, "dense_1": {"W": (2, 4), "b": (4,)}}


def schedule(count):
    # Works on numpy and jax counts alike.
    return 0.1 / (1.0 + 0.05 * count)


def decay_schedule(count):
    return 0.2 / (1.0 + count)


def matrices(params):
    return tree_map(lambda x: x.ndim > 1, params)


# name -> factory(module) where module is wframe.optimizers or optax: the same call on both.
CASES = {
    "sgd": lambda m: m.sgd(0.1),
    "sgd_momentum": lambda m: m.sgd(0.1, momentum=0.9),
    "sgd_nesterov": lambda m: m.sgd(0.1, momentum=0.9, nesterov=True),
    "sgd_schedule": lambda m: m.sgd(schedule, momentum=0.5),
    "sgd_schedule_plain": lambda m: m.sgd(schedule),
    "adam": lambda m: m.adam(1e-2),
    "adam_eps_root": lambda m: m.adam(1e-2, eps_root=1e-8),
    "adam_schedule": lambda m: m.adam(schedule),
    "adam_nesterov": lambda m: m.adam(1e-2, nesterov=True),
    "adam_mu_float16": lambda m: m.adam(1e-2, mu_dtype=np.float16),
    "sgd_accumulator_float16": lambda m: m.sgd(0.1, momentum=0.9, accumulator_dtype=np.float16),
    "adamw": lambda m: m.adamw(1e-2, weight_decay=0.1),
    "adamw_mask": lambda m: m.adamw(1e-2, weight_decay=0.1, mask=matrices),
    "adamw_schedules": lambda m: m.adamw(schedule, weight_decay=decay_schedule),
    "adamw_schedules_mask": lambda m: m.adamw(
        schedule, weight_decay=decay_schedule, mask=matrices(_host_params())
    ),
    "rmsprop": lambda m: m.rmsprop(1e-2),
    "rmsprop_centered": lambda m: m.rmsprop(1e-2, centered=True),
    # Bias-corrected and centered, the first variance is 0 up to rounding: eps keeps it stable.
    "rmsprop_centered_bias": lambda m: m.rmsprop(
        1e-2, eps=1e-3, centered=True, bias_correction=True
    ),
    "rmsprop_momentum": lambda m: m.rmsprop(1e-2, momentum=0.9, nesterov=True),
    "rmsprop_bias_correction": lambda m: m.rmsprop(1e-2, bias_correction=True, eps_in_sqrt=False),
    "clip_adam": lambda m: m.chain(
        m.clip_by_global_norm(1.0), m.scale_by_adam(), m.scale_by_learning_rate(1e-2)
    ),
}
NOT_FUSED = {"adam_nesterov", "adam_mu_float16", "sgd_accumulator_float16"}
FUSED = [c for c in CASES if c.startswith(("sgd", "adam")) and c not in NOT_FUSED]


def _host_params():
    rng = np.random.default_rng(0)
    return {
        layer: {k: rng.standard_normal(s).astype(np.float32) for k, s in leaves.items()}
        for layer, leaves in SHAPES.items()
    }


def _grads(params, steps=STEPS, seed=1):
    # Fixed, seeded sequence; scale 2 so clip_by_global_norm(1.0) triggers on most steps.
    rng = np.random.default_rng(seed)
    return [
        tree_map(lambda p: (2 * rng.standard_normal(p.shape)).astype(p.dtype), params)
        for _ in range(steps)
    ]


GRADS = _grads(_host_params())


def _run(tx, params, grads, convert=np.asarray, state=None):
    params = tree_map(convert, params)
    state = tx.init(params) if state is None else state
    for g in grads:
        updates, state = tx.update(tree_map(convert, g), state, params)
        params = opt.apply_updates(params, updates)
    return params, state


def _run_jit(tx, params, grads, state=None, apply_updates=opt.apply_updates):
    # The whole step under jax.jit, as the jax backend's train step runs it.
    @jax.jit
    def step(params, state, g):
        updates, state = tx.update(g, state, params)
        return apply_updates(params, updates), state

    params = tree_map(jnp.asarray, params)
    state = tx.init(params) if state is None else state
    for g in grads:
        params, state = step(params, state, tree_map(jnp.asarray, g))
    return params, state


def _run_fused(tx, params, grads, state=None):
    params = tree_map(np.copy, params)
    state = tx.init(params) if state is None else state
    apply = opt.fused(tx)
    for g in grads:
        params, state = apply(params, g, state)
    return params, state


def _optax_run(tx, params, grads, state=None):
    params = tree_map(jnp.asarray, params)
    state = tx.init(params) if state is None else state
    for g in grads:
        updates, state = tx.update(tree_map(jnp.asarray, g), state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def _close(a, b, rtol=1e-5, atol=1e-6):
    # atol: a param of order 1 that ends near 0 keeps the absolute rounding of its 100 steps
    # (at most ~1e-7 over 30 seeds), which no rtol covers.
    tree_map(lambda x, y: assert_close(x, y, rtol=rtol, atol=atol), a, b)


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


# --- wframe's implementation against optax ---------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_optax_over_100_steps_on_numpy(case):
    tx = CASES[case](opt)
    assert tx.update.__module__.startswith("wframe.optimizers")
    ours, _ = _run(tx, _host_params(), GRADS)
    theirs, _ = _optax_run(CASES[case](optax), _host_params(), GRADS)
    _close(ours, theirs)


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_optax_over_100_steps_under_jax_jit(case):
    tx = CASES[case](opt)
    ours, state = _run_jit(tx, _host_params(), GRADS)
    # optax under the same jit: XLA's fusion rounds differently from eager optax, which matters
    # where an update cancels (rmsprop_centered_bias's first variance, params near 0).
    theirs, _ = _run_jit(CASES[case](optax), _host_params(), GRADS, None, optax.apply_updates)
    _close(ours, theirs)
    assert all(isinstance(leaf, jax.Array) for leaf in tree_leaves(state))


@pytest.mark.parametrize("case", ["sgd_momentum", "adam", "adamw", "rmsprop_centered"])
def test_every_backend_matches_numpy(backend, case):
    tx = CASES[case](opt)  # wframe's own on every backend
    params = tree_map(backend.asarray, _host_params())
    state = tx.init(params)
    for g in GRADS:
        updates, state = tx.update(tree_map(backend.asarray, g), state, params)
        params = opt.apply_updates(params, updates)
    expected, _ = _run(CASES[case](opt), _host_params(), GRADS)
    _close(params, expected)


@pytest.mark.parametrize("case", sorted(CASES))
def test_state_has_the_same_classes_on_numpy_and_jax(case):
    tx = CASES[case](opt)
    on_numpy = tx.init(_host_params())
    on_jax = tx.init(tree_map(jnp.asarray, _host_params()))
    assert _structure(on_numpy) == _structure(on_jax)
    _, after_numpy = _run(tx, _host_params(), GRADS[:2])
    _, after_jax = _run_jit(tx, _host_params(), GRADS[:2])
    assert _structure(after_numpy) == _structure(after_jax) == _structure(on_numpy)


@pytest.mark.parametrize("case", sorted(set(CASES) - {"clip_adam"}))
def test_states_mirror_optax_structure(case):
    ours = CASES[case](opt).init(_host_params())
    theirs = CASES[case](optax).init(tree_map(jnp.asarray, _host_params()))
    assert _structure(ours) == _structure(theirs)


def test_optax_state_continues_under_wframe_and_back():
    half = STEPS // 2
    theirs_tx = optax.adam(1e-2)
    p_mid, s_mid = _optax_run(theirs_tx, _host_params(), GRADS[:half])
    # optax state -> numpy -> wframe's update
    ours, our_state = _run(
        opt.adam(1e-2), tree_map(np.asarray, p_mid), GRADS[half:], state=tree_map(np.asarray, s_mid)
    )
    theirs, _ = _optax_run(theirs_tx, p_mid, GRADS[half:], state=s_mid)
    _close(ours, theirs)
    assert type(our_state[0]).__name__ == "ScaleByAdamState"
    assert our_state[0].count.dtype == np.int32 and int(our_state[0].count) == STEPS
    # and wframe's state -> jax -> optax's update
    _, s_ours_mid = _run(opt.adam(1e-2), _host_params(), GRADS[:half])
    back, _ = _optax_run(theirs_tx, p_mid, GRADS[half:], state=tree_map(jnp.asarray, s_ours_mid))
    _close(back, theirs)


def test_numpy_state_continues_under_jax_jit():
    half = STEPS // 2
    tx = opt.adamw(1e-2, weight_decay=0.1)
    p_mid, s_mid = _run(tx, _host_params(), GRADS[:half])
    moved, _ = _run_jit(tx, p_mid, GRADS[half:], state=tree_map(jnp.asarray, s_mid))
    expected, _ = _run(tx, _host_params(), GRADS)
    _close(moved, expected)


def test_count_saturates_like_optax():
    top = np.iinfo(np.int32).max
    tx = opt.adam(1e-2)
    state = tx.init(_host_params())
    state = (state[0]._replace(count=np.asarray(top - 1, np.int32)), state[1])
    _, state = _run(tx, _host_params(), GRADS[:2], state=state)
    assert int(state[0].count) == top and state[0].count.dtype == np.int32


def test_empty_params():
    for tx in (opt.adam(1e-2), opt.sgd(schedule), opt.rmsprop(1e-2, bias_correction=True)):
        state = tx.init({})
        updates, state = tx.update({}, state, {})
        assert updates == {}
        assert opt.fused(tx) is None or opt.fused(tx)({}, {}, state)[0] == {}


def test_runs_on_array_api_strict():
    # Only standard array-API calls: what lets the same code run on CuPy (and any xp).
    xs = pytest.importorskip("array_api_strict")

    def standard_schedule(count):
        xp = array_namespace(count)
        return 0.1 / (1.0 + 0.05 * xp.astype(count, xp.float32))

    for tx in (
        opt.adamw(standard_schedule, weight_decay=standard_schedule, mask=matrices),
        opt.adam(1e-2, nesterov=True, eps_root=1e-8),
        opt.sgd(standard_schedule, momentum=0.9, nesterov=True),
        opt.rmsprop(1e-2, centered=True, bias_correction=True, momentum=0.9),
        CASES["clip_adam"](opt),
    ):
        ours, state = _run(tx, _host_params(), GRADS[:5], xs.asarray)
        expected, _ = _run(tx, _host_params(), GRADS[:5])
        _close(tree_map(np.asarray, ours), expected, rtol=1e-6, atol=0)
        assert _structure(tree_map(np.asarray, state)) == _structure(tx.init(_host_params()))
        apply = opt.fused(tx)
        if apply is not None:  # no in-place kernels for this namespace: the pure path runs
            new, _ = apply(ours, tree_map(xs.asarray, GRADS[0]), state)
            assert new is not ours
            assert {type(leaf) for leaf in tree_leaves(new)} == {type(xs.asarray(0.0))}


# --- the fused in-place NumPy path -----------------------------------------------------------


@pytest.mark.parametrize("case", FUSED)
def test_fused_matches_pure_path_and_optax_over_100_steps(case):
    tx = CASES[case](opt)
    fused, fused_state = _run_fused(tx, _host_params(), GRADS)
    pure, pure_state = _run(tx, _host_params(), GRADS)
    theirs, _ = _optax_run(CASES[case](optax), _host_params(), GRADS)
    _close(fused, pure)
    _close(fused, theirs)
    assert _structure(fused_state) == _structure(pure_state)
    _close(fused_state, pure_state)


@pytest.mark.parametrize("case", ["adamw_schedules_mask", "sgd_schedule"])
def test_fused_state_continues_under_the_pure_path_and_optax(case):
    half = STEPS // 2
    tx = CASES[case](opt)
    p_mid, s_mid = _run_fused(tx, _host_params(), GRADS[:half])
    expected, _ = _optax_run(CASES[case](optax), _host_params(), GRADS)
    pure, _ = _run(tx, p_mid, GRADS[half:], state=s_mid)
    _close(pure, expected)
    theirs, _ = _optax_run(
        CASES[case](optax), p_mid, GRADS[half:], state=tree_map(jnp.asarray, s_mid)
    )
    _close(theirs, expected)


@pytest.mark.parametrize("case", ["sgd", "sgd_nesterov", "adam", "adamw_mask"])
def test_fused_updates_in_place(case):
    tx = CASES[case](opt)
    params = tree_map(np.copy, _host_params())
    state = tx.init(params)
    leaves, state_leaves = tree_leaves(params), tree_leaves(state)
    before = tree_map(np.copy, params)
    new_params, new_state = opt.fused(tx)(params, GRADS[0], state)
    assert new_params is params and new_state is state
    assert all(a is b for a, b in zip(tree_leaves(new_params), leaves, strict=True))
    assert all(a is b for a, b in zip(tree_leaves(new_state), state_leaves, strict=True))
    assert not np.array_equal(params["dense_0"]["W"], before["dense_0"]["W"])


def test_fused_blocks_of_large_leaves_and_float64():
    # Over 1M elements the kernels run in cache-sized blocks; float64 leaves keep float64 math.
    rng = np.random.default_rng(2)
    params = {"big": rng.standard_normal((1100, 1000)).astype(np.float32), "x": np.ones(3)}
    grads = _grads(params, steps=3)
    for tx in (opt.adamw(1e-2, weight_decay=0.1), opt.sgd(0.1, momentum=0.9, nesterov=True)):
        fused, _ = _run_fused(tx, params, grads)
        pure, _ = _run(tx, params, grads)
        _close(fused, pure)
        assert fused["x"].dtype == np.float64


def test_fused_returns_none_for_other_transformations():
    hand_made = opt.chain(opt.scale_by_adam(), opt.scale_by_learning_rate(1e-2))
    others = [
        hand_made,
        optax.adam(1e-2),
        opt.rmsprop(1e-2),
        opt.adam(1e-2, nesterov=True),
        opt.adam(1e-2, mu_dtype=np.float64),
        opt.sgd(0.1, momentum=0.9, accumulator_dtype=np.float64),
        object(),
    ]
    assert [opt.fused(tx) for tx in others] == [None] * len(others)
    assert callable(opt.fused(opt.get("adam")))


def test_fused_falls_back_to_the_pure_path_on_other_arrays():
    tx = opt.adam(1e-2)
    expected, _ = _run(tx, _host_params(), GRADS[:3])
    # jax arrays: new arrays from the pure path
    params = tree_map(jnp.asarray, _host_params())
    state = tx.init(params)
    for g in GRADS[:3]:
        params, state = opt.fused(tx)(params, tree_map(jnp.asarray, g), state)
    _close(params, expected)
    # read-only numpy views (np.asarray of jax arrays): inputs left untouched
    params = tree_map(np.asarray, tree_map(jnp.asarray, _host_params()))
    state = tree_map(np.asarray, tx.init(tree_map(jnp.asarray, _host_params())))
    new, new_state = opt.fused(tx)(params, GRADS[0], state)
    assert new is not params and int(state[0].count) == 0 and int(new_state[0].count) == 1
    _close(params, _host_params(), rtol=0, atol=0)


# --- lookup ----------------------------------------------------------------------------------


def _first_update(tx, params):
    updates, _ = tx.update(GRADS[0], tx.init(params), params)
    return updates


def test_get_by_name_case_insensitive_with_keras_defaults():
    params = _host_params()
    g = GRADS[0]
    _close(_first_update(opt.get("SGD"), params), tree_map(lambda x: -0.01 * x, g))
    # Adam's first step is -lr * sign(g) (up to eps)
    _close(_first_update(opt.get("AdAm"), params), tree_map(lambda x: -1e-3 * np.sign(x), g))
    _close(_first_update(opt.get("adamw"), params), _first_update(opt.adamw(1e-3), params))
    expected = tree_map(lambda x: -0.5 * x / np.sqrt(0.1 * x * x + 1e-8), g)
    _close(_first_update(opt.get("RMSprop", learning_rate=0.5), params), expected)
    assert opt.get("adam").update.__module__.startswith("wframe.optimizers")


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
