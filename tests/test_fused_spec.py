"""The fused path is declared, not discovered: every named optimizer carries an OptimizerSpec
(with its in-place update as a FusedSpec), :func:`fused` and the learning-rate readers act on
those fields only, and a transformation that declares nothing gets the pure path."""

from __future__ import annotations

import types

import numpy as np
import pytest

from wframe import optimizers as opt
from wframe.backends import resolve
from wframe.testing import assert_close
from wframe.training.step import _update_fn
from wframe.tree import tree_leaves, tree_map

SHAPES = {"dense_0": {"W": (4, 3), "b": (3,)}, "dense_1": {"W": (3, 2), "b": (2,)}}


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {
        layer: {k: rng.standard_normal(s).astype(np.float32) for k, s in leaves.items()}
        for layer, leaves in SHAPES.items()
    }


GRADS = [_params(seed) for seed in range(1, 11)]


def schedule(count):
    return 0.1 / (1.0 + 0.05 * count)


def matrices(params):
    return tree_map(lambda x: x.ndim > 1, params)


def _pure(tx, steps=GRADS):
    params = _params()
    state = tx.init(params)
    for g in steps:
        updates, state = tx.update(g, state, params)
        params = opt.apply_updates(params, updates)
    return params, state


def _fused(tx, steps=GRADS):
    params = _params()
    state, apply = tx.init(params), opt.fused(tx)
    for g in steps:
        new, state = apply(params, g, state)
        assert new is params  # in place: the declared kernel ran
    return params, state


def _exact(a, b):
    tree_map(np.testing.assert_array_equal, a, b)


# --- each named optimizer declares its spec ----------------------------------------------------

DECLARED = {  # name -> (optimizer, kind of its fused update, the hyper-parameters it declares)
    "sgd": (opt.sgd(0.1, momentum=0.9), "sgd", opt.SgdHyperparams(0.1, 0.9, False)),
    "adam": (opt.adam(1e-2, b1=0.8), "adam", opt.AdamHyperparams(1e-2, 0.8)),
    "adamw": (
        opt.adamw(schedule, weight_decay=0.1, mask=matrices),
        "adam",
        opt.AdamHyperparams(schedule, weight_decay=0.1, mask=matrices),
    ),
    "rmsprop": (
        opt.rmsprop(1e-2, eps=1e-6, momentum=0.5),
        "rmsprop",
        opt.RmspropHyperparams(1e-2, eps=1e-6, momentum=0.5),
    ),
}


@pytest.mark.parametrize("name", sorted(DECLARED))
def test_each_named_optimizer_declares_its_spec(name):
    tx, kind, hyper = DECLARED[name]
    spec = opt.spec_of(tx)
    assert isinstance(tx, opt.DeclaredTransformation) and isinstance(spec, opt.OptimizerSpec)
    assert spec.name == name and spec.learning_rate == hyper.learning_rate
    assert spec.fused == opt.FusedSpec(kind, hyper)
    state = tx.init(_params())
    assert spec.fits(state) and len(spec.parts) == len(state)
    assert spec.part(state, "learning_rate") is state[spec.parts.index("learning_rate")]


def test_variants_without_a_kernel_declare_none():
    plain = [
        opt.adam(1e-2, nesterov=True),
        opt.adam(1e-2, mu_dtype=np.float64),
        opt.sgd(0.1, momentum=0.9, accumulator_dtype=np.float64),
        opt.rmsprop(1e-2, centered=True),
        opt.rmsprop(1e-2, bias_correction=True),
    ]
    for tx in plain:
        assert isinstance(opt.spec_of(tx), opt.OptimizerSpec)  # still a named optimizer
        assert opt.spec_of(tx).fused is None and opt.fused(tx) is None


def test_injected_optimizers_declare_what_they_were_made_from():
    tx = opt.inject_hyperparams(opt.adamw, static_args="mask")(schedule, mask=matrices)
    spec = opt.spec_of(tx)
    assert isinstance(spec, opt.InjectedSpec) and spec.factory is opt.adamw
    assert spec.schedules == {"learning_rate": schedule} and spec.static["mask"] is matrices
    assert "weight_decay" in spec.numeric and "learning_rate" not in spec.numeric
    inner = spec.inner_spec()
    assert inner.name == "adamw" and inner.fused.kind == "adam"
    assert opt.is_scheduled(tx, "learning_rate") and not opt.is_scheduled(tx, "weight_decay")
    by_name = opt.spec_of(opt.get("sgd"))
    assert by_name.factory is opt.sgd and by_name.numeric == ("learning_rate",)


# --- the dispatcher uses the declaration ---------------------------------------------------------

FUSED_CASES = {
    "sgd": lambda: opt.sgd(0.1),
    "sgd_nesterov": lambda: opt.sgd(0.1, momentum=0.9, nesterov=True),
    "sgd_schedule": lambda: opt.sgd(schedule, momentum=0.5),
    "adam": lambda: opt.adam(1e-2),
    "adamw_schedule_mask": lambda: opt.adamw(schedule, weight_decay=schedule, mask=matrices),
    "inject_sgd": lambda: opt.inject_hyperparams(opt.sgd)(schedule, momentum=0.9),
    "inject_adamw": lambda: opt.get("adamw", weight_decay=0.1),
}


@pytest.mark.parametrize("case", sorted(FUSED_CASES))
def test_fused_result_equals_the_pure_result(case):
    fused, fused_state = _fused(FUSED_CASES[case]())
    pure, pure_state = _pure(FUSED_CASES[case]())
    tree_map(lambda a, b: assert_close(a, b, rtol=1e-6, atol=1e-7), fused, pure)
    tree_map(lambda a, b: assert_close(a, b, rtol=1e-6, atol=1e-7), fused_state, pure_state)
    assert [np.asarray(a).dtype for a in tree_leaves(fused_state)] == [
        np.asarray(b).dtype for b in tree_leaves(pure_state)
    ]


def test_sgd_fused_is_bit_identical_to_pure():
    for make in (FUSED_CASES["sgd"], FUSED_CASES["sgd_nesterov"]):
        _exact(_fused(make())[0], _pure(make())[0])


def test_the_kernel_follows_the_declaration_not_the_functions():
    # The same hand-built chain, once declared: only the declaration makes it fused, and the
    # kernel runs with the declared hyper-parameters (here, on purpose, not the chain's).
    chain = opt.chain(opt.identity(), opt.scale_by_learning_rate(0.1))
    assert opt.fused(chain) is None
    declared = opt.OptimizerSpec(
        "sgd", 0.2, ("momentum", "learning_rate"), opt.FusedSpec("sgd", opt.SgdHyperparams(0.2))
    )
    tx = opt.DeclaredTransformation(chain.init, chain.update, declared)
    _exact(_fused(tx)[0], _pure(opt.sgd(0.2))[0])
    assert not np.array_equal(_fused(tx)[0]["dense_0"]["W"], _pure(chain)[0]["dense_0"]["W"])


def test_a_replaced_pair_no_longer_declares_anything():
    tx = opt.adam(1e-2)
    replaced = tx._replace(update=tx.update)
    assert type(replaced) is opt.GradientTransformation and opt.spec_of(replaced) is None
    assert opt.fused(replaced) is None


def test_a_state_of_another_layout_takes_the_pure_path():
    tx = opt.adam(1e-2)
    with pytest.raises(ValueError, match="called init first"):
        opt.fused(tx)(_params(), GRADS[0], (tx.init(_params())[0],))


# --- what declares nothing gets nothing ----------------------------------------------------------


def test_hand_built_chains_and_optax_objects_get_no_fused_path():
    optax = pytest.importorskip("optax")
    others = [
        opt.chain(opt.scale_by_adam(), opt.scale_by_learning_rate(1e-2)),  # adam, by hand
        opt.chain(opt.trace(0.9), opt.scale_by_learning_rate(0.1)),  # sgd, by hand
        opt.chain(opt.clip_by_global_norm(1.0), opt.adam(1e-2)),  # a named one inside a chain
        optax.adam(1e-2),
        optax.sgd(0.1),
        opt.inject_hyperparams(optax.adam)(1e-2),
        object(),
    ]
    for tx in others:
        assert opt.fused(tx) is None
    assert opt.spec_of(optax.adam(1e-2)) is None
    assert opt.learning_rate(others[0], others[0].init(_params())) is None


def test_update_fn_fuses_only_declared_untraced_in_place_updates():
    numpy_backend = resolve("numpy")
    traced = types.SimpleNamespace(traced=True)
    params, grads = _params(), GRADS[0]
    for tx, in_place, backend, expect_in_place in [
        (opt.adam(1e-2), True, numpy_backend, True),
        (opt.adam(1e-2), False, numpy_backend, False),
        (opt.adam(1e-2), True, traced, False),
        (
            opt.chain(opt.scale_by_adam(), opt.scale_by_learning_rate(1e-2)),
            True,
            numpy_backend,
            False,
        ),
    ]:
        state = tx.init(params)
        new, _ = _update_fn(tx, backend, in_place)(params, grads, state)
        assert (new is params) == expect_in_place


# --- still the (init, update) pair of optax ------------------------------------------------------


def test_a_declared_optimizer_is_still_an_init_update_pair():
    tx = opt.adam(1e-2)
    init, update = tx
    assert len(tx) == 2 and isinstance(tx, opt.GradientTransformation)
    assert (init, update) == tx and hash(tx) == hash((init, update))
    _exact(_pure(opt.GradientTransformation(init, update))[0], _pure(tx)[0])


def test_optax_combinators_take_a_declared_optimizer():
    optax = pytest.importorskip("optax")
    jnp = pytest.importorskip("jax.numpy")
    ours = optax.chain(optax.clip_by_global_norm(1.0), opt.adam(1e-2))
    theirs = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    results = []
    for tx in (ours, theirs):
        params = tree_map(jnp.asarray, _params())
        state = tx.init(params)
        for g in GRADS:
            updates, state = tx.update(tree_map(jnp.asarray, g), state, params)
            params = optax.apply_updates(params, updates)
        results.append(params)
    tree_map(lambda a, b: assert_close(a, b, rtol=1e-5, atol=1e-6), *results)


# --- the learning-rate readers use the declaration too -------------------------------------------


def test_learning_rate_and_update_count_read_the_spec():
    tx = opt.adamw(schedule, weight_decay=0.1)
    params, state = _pure(tx, GRADS[:3])
    assert opt.update_count(tx, state) == 3
    assert opt.learning_rate(tx, state) == pytest.approx(schedule(3))
    assert opt.learning_rate(tx, state, 7) == pytest.approx(schedule(7))
    constant = opt.sgd(0.3)
    assert opt.update_count(constant, constant.init(params)) is None  # nothing counts updates
    assert opt.learning_rate(constant, constant.init(params)) == pytest.approx(0.3)
    injected = opt.get("adam")
    assert opt.update_count(injected, _pure(injected, GRADS[:2])[1]) == 2
