"""wframe's optimizers against optax (100 float32 steps on NumPy and under jax.jit), state
interchange and structure, the fused in-place NumPy path, hyper-parameters injected in the
state, and lookup by name."""

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
# inject_hyperparams of each kind: the hyper-parameters live in the state (optax's class differs).
INJECTED = {
    "inject_sgd": lambda m: m.inject_hyperparams(m.sgd)(0.1),
    "inject_sgd_schedule_momentum": lambda m: m.inject_hyperparams(m.sgd)(
        schedule, momentum=0.9, nesterov=True
    ),
    "inject_adam": lambda m: m.inject_hyperparams(m.adam)(1e-2),
    "inject_adam_schedule_b1": lambda m: m.inject_hyperparams(m.adam)(schedule, b1=0.8),
    "inject_adamw_schedules_mask": lambda m: m.inject_hyperparams(m.adamw, static_args="mask")(
        schedule, weight_decay=decay_schedule, mask=matrices
    ),
    "inject_rmsprop_centered": lambda m: m.inject_hyperparams(m.rmsprop)(1e-2, centered=True),
}
CASES.update(INJECTED)
NOT_FUSED = {"adam_nesterov", "adam_mu_float16", "sgd_accumulator_float16"}
FUSED = [
    c
    for c in CASES
    if c.startswith(("sgd", "adam", "inject_sgd", "inject_adam")) and c not in NOT_FUSED
]


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


def _optax_run(tx, params, grads, state=None, eager=False):
    """optax's 100 steps, its step compiled once (op by op, they dispatch thousands of small
    programs) or, ``eager``, op by op: only that rounds as NumPy does where an update cancels
    (rmsprop_centered_bias's first variance: the jitted step ends 6e-5 away)."""
    if not eager:
        return _run_jit(tx, params, grads, state, optax.apply_updates)
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
    eager = case == "rmsprop_centered_bias"
    theirs, _ = _optax_run(CASES[case](optax), _host_params(), GRADS, eager=eager)
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


@pytest.mark.parametrize("case", sorted(set(CASES) - {"clip_adam", *INJECTED}))
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


@pytest.mark.parametrize("case", ["sgd", "sgd_nesterov", "adam", "adamw_mask", "inject_adam"])
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


def test_fused_sgd_runs_a_models_tree_in_one_pass_or_falls_back_writing_nothing():
    # {layer: {name: array}}: NumPy's sgd_tree_inplace, bit for bit the pure update, in place.
    rng = np.random.default_rng(3)

    def tree(dtype=np.float32):
        return {
            "dense_0": {"W": rng.standard_normal((4, 3)).astype(dtype), "b": np.ones(3, dtype)},
            "dense_1": {"W": rng.standard_normal((3, 2)).astype(dtype)},
        }

    tx, params = opt.sgd(0.1), tree()
    grads, state = tree(), tx.init(params)
    expected, _ = _run(tx, tree_map(np.copy, params), [grads])
    new, _ = opt.fused(tx)(params, grads, state)
    assert new is params
    tree_map(lambda a, e: np.testing.assert_array_equal(a, e), new, expected)
    # What the one pass does not take goes to the general path, nothing written before.
    read_only = tree_map(np.copy, params)
    read_only["dense_1"]["W"].flags.writeable = False
    wide = {**grads, "dense_1": {"W": grads["dense_1"]["W"].astype(np.float64)}}
    for p, g in ((read_only, grads), (tree_map(np.copy, params), wide)):
        before = tree_map(np.copy, p)
        out, _ = opt.fused(tx)(p, g, state)
        assert out is not p  # the pure path: new arrays, the inputs untouched
        tree_map(lambda a, e: np.testing.assert_array_equal(a, e), p, before)


def test_fused_sgd_takes_a_nested_chains_three_level_params():
    # {chain: {layer: {name: array}}} (a Sequential inside a model) once crashed the plain
    # path, which took the inner dicts for leaves; now the general walk runs them in place.
    params = {"sequential_0": {"dense_0": {"W": np.ones((2, 2), np.float32)}}}
    grads = {"sequential_0": {"dense_0": {"W": np.full((2, 2), 0.5, np.float32)}}}
    tx = opt.sgd(0.1)
    expected, _ = _run(tx, tree_map(np.copy, params), [grads])
    new, _ = opt.fused(tx)(params, grads, tx.init(params))
    assert new is params
    np.testing.assert_array_equal(
        new["sequential_0"]["dense_0"]["W"], expected["sequential_0"]["dense_0"]["W"]
    )


def test_fused_returns_none_for_other_transformations():
    hand_made = opt.chain(opt.scale_by_adam(), opt.scale_by_learning_rate(1e-2))
    others = [
        hand_made,
        optax.adam(1e-2),
        opt.rmsprop(1e-2, centered=True),
        opt.adam(1e-2, nesterov=True),
        opt.adam(1e-2, mu_dtype=np.float64),
        opt.sgd(0.1, momentum=0.9, accumulator_dtype=np.float64),
        object(),
    ]
    others += [opt.rmsprop(1e-2, bias_correction=True), opt.inject_hyperparams(optax.adam)(1e-2)]
    others += [opt.inject_hyperparams(opt.adam)(1e-2, nesterov=True)]
    assert [opt.fused(tx) for tx in others] == [None] * len(others)
    names = ("adam", "adamw", "sgd", "rmsprop")  # rmsprop: in place on CuPy only
    assert all(callable(opt.fused(opt.get(name))) for name in names)


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


# --- hyper-parameters in the state --------------------------------------------------------------


def _leafwise(tree, convert):
    # Every leaf converted, every container (optax's classes included) kept.
    return jax.tree_util.tree_map(convert, tree)


@pytest.mark.parametrize(
    "make, scheduled",
    [
        (lambda m: m.inject_hyperparams(m.adam)(learning_rate=1e-2), False),
        (lambda m: m.inject_hyperparams(m.sgd)(schedule, momentum=0.9), True),
    ],
    ids=["adam", "sgd_schedule"],
)
def test_inject_state_interchanges_with_optax(make, scheduled):
    h = 4  # steps per stretch
    expected, _ = _optax_run(make(optax), _host_params(), GRADS[: 2 * h])
    p_mid, s_mid = _optax_run(make(optax), _host_params(), GRADS[:h])
    # optax's state -> numpy -> wframe's update (eager, and under jax.jit from the jax state)
    on_host = _leafwise(s_mid, np.asarray)
    ours, our_state = _run(make(opt), _leafwise(p_mid, np.asarray), GRADS[h : 2 * h], state=on_host)
    _close(ours, expected, rtol=1e-6, atol=1e-7)
    assert type(our_state).__name__ == "InjectStatefulHyperparamsState"  # its class is kept
    assert int(our_state.count) == 2 * h
    jitted, _ = _run_jit(make(opt), p_mid, GRADS[h : 2 * h], state=s_mid)
    _close(jitted, expected, rtol=1e-6, atol=1e-7)
    # ... and back to optax's update, its schedules' own counts advanced
    on_jax = _leafwise(our_state, jnp.asarray)
    third, _ = _optax_run(make(optax), ours, GRADS[2 * h : 3 * h], on_jax)
    _close(third, _optax_run(make(optax), _host_params(), GRADS[: 3 * h])[0], rtol=1e-6, atol=1e-7)
    # wframe's own state -> jax -> optax's update (with no schedule: optax's update reads a
    # schedule's count from its hyperparams_states field, which wframe's state has not)
    w_mid, ws_mid = _run(make(opt), _host_params(), GRADS[:h])
    assert type(ws_mid) is opt.InjectHyperparamsState
    if not scheduled:
        back, _ = _optax_run(make(optax), w_mid, GRADS[h : 2 * h], _leafwise(ws_mid, jnp.asarray))
        _close(back, expected, rtol=1e-6, atol=1e-7)


def test_inject_stores_hyperparams_in_the_params_dtype():
    for dtype in (np.float32, np.float64):
        cast = lambda a, dtype=dtype: a.astype(dtype)  # noqa: E731
        params = tree_map(cast, _host_params())
        tx = opt.inject_hyperparams(opt.sgd)(1, momentum=0.5)  # an int: stored as a float
        state = tx.init(params)
        assert {k: v.dtype for k, v in state.hyperparams.items()} == {
            "learning_rate": dtype,
            "momentum": dtype,
        }
        updates, state = tx.update(tree_map(cast, GRADS[0]), state, params)
        assert {u.dtype for u in tree_leaves(updates)} == {np.dtype(dtype)}  # no float64 upcast
        assert {v.dtype for v in state.hyperparams.values()} == {np.dtype(dtype)}
    mixed = {"a": np.ones(2, np.float16), "b": np.ones(2, np.float32)}
    assert opt.get("sgd").init(mixed).hyperparams["learning_rate"].dtype == np.float32  # widest
    given = opt.inject_hyperparams(opt.adam, hyperparam_dtype="float64")(1e-3)
    assert given.init(_host_params()).hyperparams["learning_rate"].dtype == np.float64
    # dtypes (types, hence callable) are passed as given, not taken for schedules
    low = opt.inject_hyperparams(opt.adam)(1e-3, mu_dtype=np.float16).init(_host_params())
    assert sorted(low.hyperparams) == ["b1", "b2", "eps", "eps_root", "learning_rate"]
    assert {a.dtype for a in tree_leaves(low.inner_state[0].mu)} == {np.dtype(np.float16)}


def test_changed_hyperparam_is_used_without_retracing():
    tx = opt.get("sgd", momentum=0.9)
    traces = []

    @jax.jit
    def step(params, state, g):
        traces.append(1)
        updates, state = tx.update(g, state, params)
        return opt.apply_updates(params, updates), state

    params = tree_map(jnp.asarray, _host_params())
    state = tx.init(params)
    params, state = step(params, state, tree_map(jnp.asarray, GRADS[0]))
    state = opt.set_hyperparam(state, "learning_rate", 0.5)
    params, state = step(params, state, tree_map(jnp.asarray, GRADS[1]))
    assert len(traces) == 1
    # the same two steps with plain SGD at 0.01 then 0.5 (same momentum buffer)
    manual = _host_params()
    trace = tree_map(np.zeros_like, manual)
    for g, lr in ((GRADS[0], 0.01), (GRADS[1], 0.5)):
        trace = tree_map(lambda t, g_: g_ + np.float32(0.9) * t, trace, g)
        manual = tree_map(lambda p, t, lr=lr: p - np.float32(lr) * t, manual, trace)
    _close(params, manual, rtol=1e-6, atol=1e-7)


def test_get_and_set_hyperparam(backend):
    params = tree_map(backend.asarray, _host_params())
    tx = opt.chain(opt.clip_by_global_norm(10.0), opt.get("adam"))  # found inside a chain
    state = tx.init(params)
    assert opt.get_hyperparam(state, "learning_rate") == pytest.approx(1e-3)
    new = opt.set_hyperparam(state, "learning_rate", 0.25)
    assert opt.get_hyperparam(new, "learning_rate") == 0.25
    assert opt.get_hyperparam(state, "learning_rate") == pytest.approx(1e-3)  # functional
    old_lr, new_lr = state[1].hyperparams["learning_rate"], new[1].hyperparams["learning_rate"]
    assert new_lr.dtype == old_lr.dtype and type(new_lr) is type(old_lr)
    assert new[1].inner_state is state[1].inner_state and new[0] is state[0]
    # the next update uses it: Adam's first step is -lr * sign(g)
    updates, _ = tx.update(tree_map(backend.asarray, GRADS[0]), new, params)
    _close(tree_map(backend.to_numpy, updates), tree_map(lambda g: -0.25 * np.sign(g), GRADS[0]))


def test_hyperparam_errors_say_how_to_get_one():
    plain = opt.adam(1e-3).init(_host_params())
    for call in (
        lambda: opt.get_hyperparam(plain, "learning_rate"),
        lambda: opt.set_hyperparam(plain, "learning_rate", 0.1),
    ):
        with pytest.raises(ValueError, match="holds no injected hyper-parameters") as info:
            call()
        assert "wf.optimizers.inject_hyperparams(wf.optimizers.adam)" in str(info.value)
        assert 'optimizer="adam"' in str(info.value)
    with pytest.raises(
        ValueError,
        match=r"are \['b1', 'b2', 'eps', 'eps_root', 'learning_rate'\]; received "
        r"name='momentum'",
    ):
        opt.get_hyperparam(opt.get("adam").init(_host_params()), "momentum")
    with pytest.raises(ValueError, match="static_args must name parameters of adam"):
        opt.inject_hyperparams(opt.adam, static_args="mask")


def test_learning_rate_of_each_kind_of_optimizer():
    params = _host_params()
    const = lambda count: 0.5  # noqa: E731

    def after(tx, steps):
        return tx, _run(tx, params, GRADS[:steps])[1]

    cases = [
        (after(opt.get("adam"), 2), None, 1e-3),
        (after(opt.inject_hyperparams(opt.sgd)(schedule), 3), None, schedule(3)),
        (after(opt.inject_hyperparams(opt.sgd)(schedule), 3), 10, schedule(10)),
        (after(opt.inject_hyperparams(opt.sgd)(const), 1), None, 0.5),
        (after(opt.sgd(0.3, momentum=0.9), 2), 7, 0.3),
        (after(opt.adam(schedule), 4), None, schedule(4)),
        (after(opt.adamw(schedule), 4), 1, schedule(1)),
        (after(opt.rmsprop(schedule, momentum=0.9), 2), None, schedule(2)),
    ]
    for (tx, state), count, expected in cases:
        assert opt.learning_rate(tx, state, count) == pytest.approx(expected, rel=1e-6)
    theirs = optax.inject_hyperparams(optax.sgd)(0.2)
    state = theirs.init(tree_map(jnp.asarray, params))
    assert opt.learning_rate(theirs, state) == pytest.approx(0.2)  # from optax's state
    assert opt.learning_rate(optax.adam(1e-3), optax.adam(1e-3).init(params)) is None
    hand_made = opt.chain(opt.scale_by_adam(), opt.scale_by_learning_rate(1e-2))
    assert opt.learning_rate(hand_made, hand_made.init(params)) is None


def test_fused_injected_falls_back_to_the_pure_path_on_other_arrays():
    tx = opt.inject_hyperparams(opt.adam)(schedule)
    expected, _ = _run(tx, _host_params(), GRADS[:3])
    params = tree_map(jnp.asarray, _host_params())
    state = tx.init(params)
    for g in GRADS[:3]:
        params, state = opt.fused(tx)(params, tree_map(jnp.asarray, g), state)
    _close(params, expected)
    assert int(state.count) == 3 and isinstance(state.count, jax.Array)
    # a read-only count: nothing is written, the pure path runs
    params = tree_map(np.copy, _host_params())
    state = tx.init(params)
    state.count.flags.writeable = False
    new, new_state = opt.fused(tx)(params, GRADS[0], state)
    assert new is not params and int(state.count) == 0 and int(new_state.count) == 1
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
    state = opt.get("adamw", weight_decay=0.5).init(params)
    assert type(state) is opt.InjectHyperparamsState
    assert {k: float(v) for k, v in state.hyperparams.items()} == pytest.approx(
        {
            "learning_rate": 1e-3,
            "b1": 0.9,
            "b2": 0.999,
            "eps": 1e-8,
            "eps_root": 0.0,
            "weight_decay": 0.5,
        }
    )


def test_get_passes_transformations_through():
    tx = optax.adam(1e-3)
    assert opt.get(tx) is tx
    ours = opt.chain(opt.identity())
    assert opt.get(ours) is ours


def test_get_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="adamm") as info:
        opt.get("adamm")
    names = "['adafactor', 'adagrad', 'adam', 'adamax', 'adamw', 'lion', 'nadam', 'rmsprop', 'sgd']"
    assert names in str(info.value)


def test_get_bad_type_names_it():
    with pytest.raises(TypeError, match="Received: int"):
        opt.get(3)
