"""Schedules: hand-computed values on every backend, optax 0.2.8 over a range of counts, one trace
under jax.jit for 50 counts, use inside optax, host calls, lookup by name and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

import wframe as wf
from wframe import schedules as sch
from wframe.backends import array_namespace


def _at(b, schedule, k):
    """``schedule`` at an int32 count of the backend; checks the result is a 0-d float of it."""
    v = schedule(b.xp.asarray(k, dtype=b.xp.int32))
    assert array_namespace(v) is b.xp
    assert v.shape == () and v.dtype == b.xp.asarray(0.0).dtype
    return float(v)


def _check(b, schedule, expected: dict[int, float]):
    got = {k: _at(b, schedule, k) for k in expected}
    np.testing.assert_allclose(list(got.values()), list(expected.values()), rtol=1e-6, atol=0)


# --- hand-computed values ----------------------------------------------------------------------


def test_constant(backend):
    _check(backend, sch.constant_schedule(0.5), {0: 0.5, 1: 0.5, 1000: 0.5})


def test_polynomial_and_linear(backend):
    s = sch.polynomial_schedule(1.0, 0.01, 2, 100, transition_begin=5)
    # (1 - 0.01) * (1 - t/100)**2 + 0.01, t = count - 5 clipped to [0, 100]
    _check(
        backend,
        s,
        {0: 1.0, 5: 1.0, 6: 0.99 * 0.99**2 + 0.01, 55: 0.99 * 0.25 + 0.01, 105: 0.01, 200: 0.01},
    )
    s = sch.linear_schedule(0.1, 1.0, 20, transition_begin=10)
    _check(backend, s, {0: 0.1, 10: 0.1, 15: 0.325, 20: 0.55, 30: 1.0, 99: 1.0})
    # optax: transition_steps <= 0 holds init_value; a negative transition_begin counts as 0
    _check(backend, sch.linear_schedule(0.3, 1.0, 0), {0: 0.3, 10: 0.3})
    _check(backend, sch.linear_schedule(0.0, 1.0, 10, -3), {0: 0.0, 5: 0.5, 10: 1.0})
    # A fractional power: exactly end_value from the end of the transition on (no NaN).
    s = sch.polynomial_schedule(1.0, 0.0, 0.5, 16)
    _check(backend, s, {0: 1.0, 12: 0.5, 15: 0.25, 16: 0.0, 40: 0.0})


def test_piecewise_constant(backend):
    # The scale applies from its boundary on (count >= boundary).
    s = sch.piecewise_constant_schedule(1.0, {200: 0.01, 100: 0.1})
    _check(backend, s, {0: 1.0, 99: 1.0, 100: 0.1, 199: 0.1, 200: 0.001, 250: 0.001})
    _check(backend, sch.piecewise_constant_schedule(0.7), {0: 0.7, 50: 0.7})


def test_exponential_decay(backend):
    s = sch.exponential_decay(1.0, 10, 0.5, transition_begin=5)
    _check(backend, s, {0: 1.0, 5: 1.0, 10: 0.5**0.5, 15: 0.5, 25: 0.25})
    s = sch.exponential_decay(1.0, 10, 0.5, transition_begin=5, staircase=True)
    _check(backend, s, {0: 1.0, 14: 1.0, 15: 0.5, 24: 0.5, 25: 0.25, 35: 0.125})
    s = sch.exponential_decay(1.0, 10, 0.5, transition_begin=5, end_value=0.3)  # a lower bound
    _check(backend, s, {15: 0.5, 25: 0.3, 100: 0.3})
    s = sch.exponential_decay(0.1, 5, 2.0, end_value=0.5)  # growth: an upper bound
    _check(backend, s, {0: 0.1, 5: 0.2, 10: 0.4, 15: 0.5, 50: 0.5})
    _check(backend, sch.exponential_decay(1.0, 5, 0.0), {0: 1.0, 50: 1.0})  # as optax
    _check(backend, sch.exponential_decay(1.0, 0, 0.5), {0: 1.0, 50: 1.0})


def test_cosine_decay(backend):
    _check(backend, sch.cosine_decay_schedule(2.0, 40), {0: 2.0, 20: 1.0, 40: 0.0, 50: 0.0})
    s = sch.cosine_decay_schedule(2.0, 40, alpha=0.1, exponent=2.0)
    quarter = 2.0 * (0.9 * (0.5 * (1 + math.cos(math.pi / 4))) ** 2 + 0.1)
    _check(backend, s, {0: 2.0, 10: quarter, 20: 2.0 * (0.9 * 0.25 + 0.1), 40: 0.2, 99: 0.2})


def test_warmup_schedules(backend):
    s = sch.warmup_cosine_decay_schedule(0.0, 1.0, 10, 50, end_value=0.05)
    _check(backend, s, {0: 0.0, 5: 0.5, 10: 1.0, 30: 0.95 * 0.5 + 0.05, 50: 0.05, 60: 0.05})
    s = sch.warmup_exponential_decay_schedule(
        0.0, 1.0, 10, 5, 0.8, transition_begin=3, staircase=True, end_value=0.3
    )
    _check(
        backend,
        s,
        {
            0: 0.0,
            5: 0.5,
            10: 1.0,
            13: 1.0,
            17: 1.0,
            18: 0.8,
            23: 0.64,
            28: 0.8**3,
            33: 0.8**4,
            38: 0.8**5,
            43: 0.3,
            90: 0.3,
        },
    )


def test_piecewise_interpolate(backend):
    s = sch.piecewise_interpolate_schedule("linear", 1.0, {4: 0.1, 8: 0.01})
    _check(backend, s, {0: 1.0, 2: 0.55, 4: 0.1, 6: 0.0505, 8: 0.001, 10: 0.001})
    s = sch.piecewise_interpolate_schedule("cosine", 1.0, {4: 0.1, 8: 0.01})
    _check(
        backend,
        s,
        {
            0: 1.0,
            1: 0.1 + 0.45 * (math.cos(math.pi / 4) + 1),
            2: 0.55,
            4: 0.1,
            6: 0.0505,
            8: 0.001,
            10: 0.001,
        },
    )
    _check(backend, sch.piecewise_interpolate_schedule("linear", 0.7), {0: 0.7, 9: 0.7})


def test_onecycle(backend):
    end = 1.0 / 25 / 1e4
    s = sch.cosine_onecycle_schedule(100, 1.0)
    _check(backend, s, {0: 0.04, 15: 0.52, 30: 1.0, 65: (1.0 + end) / 2, 100: end, 200: end})
    s = sch.linear_onecycle_schedule(100, 1.0)
    end = 0.04 / 1e4  # peak / div_factor / final_div_factor
    _check(
        backend,
        s,
        {
            0: 0.04,
            15: 0.52,
            30: 1.0,
            50: 1.0 - 0.96 * 20 / 55,
            85: 0.04,
            90: 0.04 + (end - 0.04) / 3,
            100: end,
            200: end,
        },
    )


def test_join_schedules(backend):
    s = sch.join_schedules(
        [sch.constant_schedule(1.0), sch.linear_schedule(1.0, 0.0, 10), lambda n: 0.01], [5, 15]
    )
    _check(backend, s, {0: 1.0, 4: 1.0, 5: 1.0, 10: 0.5, 14: 0.1, 15: 0.01, 20: 0.01})


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("triangular", {0: 0.1, 2: 0.55, 4: 1.0, 6: 0.55, 8: 0.1, 12: 1.0, 20: 1.0}),
        ("triangular2", {0: 0.1, 2: 0.55, 4: 1.0, 8: 0.1, 12: 0.55, 16: 0.1, 20: 0.325}),
        (
            "exp_range",
            {
                0: 0.1,
                2: 0.1 + 0.45 * 0.9**2,
                4: 0.1 + 0.9 * 0.9**4,
                8: 0.1,
                12: 0.1 + 0.9 * 0.9**12,
            },
        ),
    ],
)
def test_cyclical(backend, mode, expected):
    # base 0.1, max 1.0, step_size 4: base at 0, max at 4, base at 8, peak again at 12
    _check(backend, sch.cyclical_schedule(0.1, 1.0, 4, mode=mode, gamma=0.9), expected)


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_cyclical_matches_the_papers_formula(backend, mode):
    base, top, size, gamma = 0.001, 0.006, 5, 0.99
    s = sch.cyclical_schedule(base, top, size, mode=mode, gamma=gamma)
    for it in range(41):  # Smith (2017), section 3.1, and his exp_range / triangular2 policies
        cycle = math.floor(1 + it / (2 * size))
        x = abs(it / size - 2 * cycle + 1)
        scale = {"triangular": 1.0, "triangular2": 1 / 2 ** (cycle - 1), "exp_range": gamma**it}
        want = base + (top - base) * max(0.0, 1 - x) * scale[mode]
        assert _at(backend, s, it) == pytest.approx(want, rel=1e-6)


# --- against optax -----------------------------------------------------------------------------

# name -> factory(module), module being wframe.schedules or optax: the same call on both.
CASES = {
    "constant": lambda m: m.constant_schedule(0.5),
    "polynomial": lambda m: m.polynomial_schedule(1.0, 0.01, 2, 30, transition_begin=5),
    "polynomial_no_steps": lambda m: m.polynomial_schedule(1.0, 0.01, 2, 0),
    # An integer power: jitted optax gives NaN at the end of a fractional one (see below).
    "polynomial_negative_begin": lambda m: m.polynomial_schedule(1.0, 0.1, 3, 20, -3),
    "linear": lambda m: m.linear_schedule(0.1, 1.0, 20, 10),
    "piecewise_constant": lambda m: m.piecewise_constant_schedule(1.0, {10: 0.5, 30: 0.1, 20: 2.0}),
    "piecewise_constant_none": lambda m: m.piecewise_constant_schedule(0.3),
    "exponential": lambda m: m.exponential_decay(1.0, 10, 0.5, transition_begin=5),
    "exponential_staircase": lambda m: m.exponential_decay(1.0, 10, 0.5, 5, staircase=True),
    "exponential_floor": lambda m: m.exponential_decay(1.0, 5, 0.5, end_value=0.2),
    "exponential_growth_cap": lambda m: m.exponential_decay(0.1, 5, 2.0, end_value=0.5),
    "exponential_zero_rate": lambda m: m.exponential_decay(1.0, 5, 0.0),
    "exponential_no_steps": lambda m: m.exponential_decay(1.0, 0, 0.5),
    "cosine": lambda m: m.cosine_decay_schedule(2.0, 40),
    "cosine_alpha_exponent": lambda m: m.cosine_decay_schedule(2.0, 40, alpha=0.1, exponent=2.0),
    "warmup_cosine": lambda m: m.warmup_cosine_decay_schedule(0.0, 1.0, 10, 50, end_value=0.05),
    "warmup_cosine_exponent": lambda m: m.warmup_cosine_decay_schedule(
        0.1, 1.0, 10, 50, exponent=0.5
    ),
    "warmup_cosine_zero_peak": lambda m: m.warmup_cosine_decay_schedule(0.0, 0.0, 5, 20),
    "warmup_exponential": lambda m: m.warmup_exponential_decay_schedule(
        0.0, 1.0, 10, 5, 0.8, transition_begin=3, staircase=True, end_value=0.3
    ),
    "interpolate_linear": lambda m: m.piecewise_interpolate_schedule(
        "linear", 1.0, {10: 0.5, 25: 0.2, 40: 3.0}
    ),
    "interpolate_cosine": lambda m: m.piecewise_interpolate_schedule(
        "cosine", 1.0, {10: 0.5, 25: 0.2, 40: 3.0}
    ),
    "interpolate_none": lambda m: m.piecewise_interpolate_schedule("linear", 0.7),
    "cosine_onecycle": lambda m: m.cosine_onecycle_schedule(50, 1.0),
    "cosine_onecycle_custom": lambda m: m.cosine_onecycle_schedule(40, 0.5, 0.25, 10.0, 100.0),
    "linear_onecycle": lambda m: m.linear_onecycle_schedule(50, 1.0),
    "join": lambda m: m.join_schedules(
        [
            m.linear_schedule(0.0, 1.0, 10),
            m.cosine_decay_schedule(1.0, 20),
            m.constant_schedule(0.01),
        ],
        [10, 30],
    ),
}
COUNTS = np.arange(61, dtype=np.int32)  # past every transition above


@pytest.fixture(scope="module")
def optax_jnp():
    optax = pytest.importorskip("optax")
    return optax, pytest.importorskip("jax"), pytest.importorskip("jax.numpy")


@pytest.fixture(scope="module")
def optax_values(optax_jnp):
    """``{x64: {case: optax's values at COUNTS}}``, float64 (x64) for NumPy and CuPy, float32
    for JAX: one compiled call per width (eager JAX would compile each of optax's ops)."""
    optax, jax, jnp = optax_jnp
    cache = {}

    def values(x64):
        if x64 not in cache:
            with jax.enable_x64(x64):
                fns = {k: jax.vmap(f(optax)) for k, f in CASES.items()}
                # A float count under x64: optax's piecewise_interpolate divides int32 counts
                # in float32 even then.
                counts = jnp.asarray(COUNTS, dtype=jnp.float64 if x64 else jnp.int32)
                out = jax.jit(lambda c: {k: f(c) for k, f in fns.items()})(counts)
                cache[x64] = {k: np.asarray(v) for k, v in out.items()}
        return cache[x64]

    return values


def _all_schedules():
    modes = {f"cyclical_{m}": sch.cyclical_schedule(0.1, 1.0, 4, m, 0.9) for m in sch.MODES}
    return {**{k: f(sch) for k, f in CASES.items()}, **modes}


_OURS: dict[str, dict[str, np.ndarray]] = {}


def _ours(b):
    """``{schedule: its values at COUNTS}`` on backend ``b``, from one vector count; on JAX
    inside one compiled function (eager JAX would compile every op for the new shape)."""
    if b.name not in _OURS:
        schedules, counts = _all_schedules(), b.asarray(COUNTS)
        fn = b.jit(lambda c: {k: s(c) for k, s in schedules.items()})
        _OURS[b.name] = {k: b.to_numpy(v) for k, v in fn(counts).items()}
    return _OURS[b.name]


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_optax(backend, optax_values, case):
    x64 = backend.xp.asarray(0.0).dtype == np.float64
    # float32: XLA fuses our graph and optax's differently, and where a value is a small
    # difference of values near the peak (a cosine's tail: 0.03 from 1.0 - 0.97), one float32
    # ulp of the peak (6e-8) is 2e-6 of the value.
    rtol = 1e-6 if x64 else 1e-5
    np.testing.assert_allclose(_ours(backend)[case], optax_values(x64)[case], rtol=rtol, atol=0)


def _close(got, want, name):
    # Eager float32 against the compiled values (XLA fuses, and divides by a constant through
    # its reciprocal): equal to a few ulp, but a small difference of large numbers (the trough
    # of a cosine) loses that relatively, so compare to 1e-6 of the schedule's scale there.
    atol = 1e-6 * np.max(np.abs(want))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=atol, err_msg=name)


def test_scalar_counts_equal_vector_counts(backend):
    for name, s in _all_schedules().items():
        counts = [0, 3, 10, 17, 29, 30, 45, 60]
        _close([_at(backend, s, k) for k in counts], _ours(backend)[name][counts], name)


def test_python_numbers_give_host_values():
    for name, s in _all_schedules().items():
        want = s(COUNTS)
        for k in (0, 7, 17, 60):
            assert isinstance(s(k), np.ndarray) and s(k).dtype == np.float64, name
            assert s(k).shape == () and float(s(k)) == want[k], name
        assert float(s(17.0)) == float(s(17)) == float(s(np.int64(17))), name


def test_jit_traces_once_for_50_counts(jax):
    jnp = jax.numpy
    schedules, traces = _all_schedules(), {}

    def f(count):  # every schedule in one compiled function: one compile for the test
        for name in schedules:
            traces[name] = traces.get(name, 0) + 1
        return {name: s(count) for name, s in schedules.items()}

    jitted = jax.jit(f)
    got = [jitted(jnp.asarray(k, dtype=jnp.int32)) for k in range(50)]
    assert traces == dict.fromkeys(schedules, 1)
    with wf.use_backend("jax") as b:
        for name in schedules:
            want = _ours(b)[name][:50]
            np.testing.assert_allclose([float(g[name]) for g in got], want, rtol=1e-6, err_msg=name)


def test_exact_under_jit_where_optax_is_not(jax):
    jnp = jax.numpy
    # XLA divides by 41 through its rounded reciprocal: optax's staircase then steps at 42, 83.
    s = jax.jit(sch.exponential_decay(1.0, 41, 0.5, staircase=True))
    got = [float(s(jnp.asarray(k, dtype=jnp.int32))) for k in (40, 41, 81, 82, 83)]
    assert got == [1.0, 0.5, 0.5, 0.25, 0.25]
    # 1 - 20 / 20 is -1.5e-8 there: optax gives NaN from step 20 on for a fractional power.
    s = jax.jit(sch.polynomial_schedule(1.0, 0.1, 1.5, 20))
    got = [float(s(jnp.asarray(k, dtype=jnp.int32))) for k in (19, 20, 21, 100)]
    assert np.isfinite(got).all() and got[1:] == [pytest.approx(0.1, rel=1e-7)] * 3


def test_works_inside_optax(optax_jnp):
    optax, jax, jnp = optax_jnp
    ours = optax.sgd(sch.warmup_cosine_decay_schedule(0.0, 0.1, 5, 20))
    theirs = optax.sgd(optax.warmup_cosine_decay_schedule(0.0, 0.1, 5, 20))
    params = {"w": jnp.ones(3)}

    def run(tx):
        @jax.jit
        def step(p, state):
            updates, state = tx.update({"w": jnp.full(3, 0.5)}, state, p)
            return optax.apply_updates(p, updates), state

        p, state = params, tx.init(params)
        for _ in range(25):
            p, state = step(p, state)
        return np.asarray(p["w"])

    np.testing.assert_allclose(run(ours), run(theirs), rtol=1e-6)


def test_drives_wframe_optimizers(backend):
    from wframe import optimizers as opt

    tx = opt.sgd(sch.linear_schedule(1.0, 0.0, 4))
    grads = {"w": backend.asarray(np.ones(2, dtype=np.float32))}

    def step(params, state):
        updates, state = tx.update(grads, state, params)
        return opt.apply_updates(params, updates), state

    step = backend.jit(step)
    params = {"w": backend.asarray(np.zeros(2, dtype=np.float32))}
    state = tx.init(params)
    for _ in range(6):
        params, state = step(params, state)
    # learning rates 1, 0.75, 0.5, 0.25, 0, 0; the parameters stay float32
    assert params["w"].dtype == backend.xp.float32
    np.testing.assert_allclose(backend.to_numpy(params["w"]), [-2.5, -2.5], rtol=1e-6)


# --- lookup and bad input ----------------------------------------------------------------------


def test_get():
    def f(n):
        return 0.1

    assert sch.get(f) is f
    assert float(sch.get(0.1)(5)) == 0.1
    assert float(sch.get(3)(0)) == 3.0
    s = sch.get("cosine_decay_schedule", init_value=1.0, decay_steps=10)
    assert float(s(5)) == pytest.approx(0.5)
    with pytest.raises(
        ValueError,
        match=r"Unknown schedule 'cosine'\. Expected one of \["
        r"'constant_schedule', 'cosine_decay_schedule'",
    ):
        sch.get("cosine")
    with pytest.raises(TypeError, match="name, a number or a callable"):
        sch.get(True)
    with pytest.raises(TypeError, match="takes no arguments"):
        sch.get(0.1, decay_steps=3)


BAD = [
    (
        lambda: sch.cyclical_schedule(0.1, 1.0, 0),
        r"cyclical_schedule: expected step_size > 0\. "
        r"Received: step_size=0\.",
    ),
    (
        lambda: sch.cyclical_schedule(0.1, 1.0, 4, mode="sine"),
        r"mode in \('triangular', 'triangular2', 'exp_range'\)\. Received: mode='sine'",
    ),
    (lambda: sch.cyclical_schedule(0.1, 1.0, 4, "exp_range", -0.5), "gamma >= 0.*gamma=-0.5"),
    (lambda: sch.cosine_decay_schedule(1.0, 0), "cosine_decay_schedule: .*decay_steps=0"),
    (lambda: sch.cosine_decay_schedule(1.0, -3), "decay_steps > 0.*decay_steps=-3"),
    (
        lambda: sch.warmup_cosine_decay_schedule(0.0, 1.0, 10, 10),
        "warmup_cosine_decay_schedule: expected decay_steps > warmup_steps",
    ),
    (
        lambda: sch.join_schedules([sch.constant_schedule(1.0)] * 3, [10, 5]),
        r"join_schedules: expected strictly increasing boundaries\. Received: boundaries=\[10, 5\]",
    ),
    (lambda: sch.join_schedules([sch.constant_schedule(1.0)] * 3, [5, 5]), "strictly increasing"),
    (
        lambda: sch.join_schedules([sch.constant_schedule(1.0)] * 2, [5, 6]),
        r"len\(boundaries\) == len\(schedules\) - 1",
    ),
    (lambda: sch.join_schedules([], []), "non-empty sequence of callables"),
    (lambda: sch.join_schedules([0.1, 0.2], [5]), "non-empty sequence of callables"),
    (
        lambda: sch.piecewise_constant_schedule(1.0, {5: -0.1}),
        r"piecewise_constant_schedule: expected scales >= 0\. Received: boundaries_and_scales=",
    ),
    (lambda: sch.piecewise_interpolate_schedule("linear", 1.0, {5: -1.0}), "scales >= 0"),
    (
        lambda: sch.piecewise_interpolate_schedule("cubic", 1.0),
        "piecewise_interpolate_schedule: expected 'cosine' or 'linear'.*'cubic'",
    ),
    (lambda: sch.exponential_decay(1.0, 10, -0.5), "exponential_decay: .*decay_rate=-0.5"),
    (lambda: sch.polynomial_schedule(1.0, 0.0, -1.0, 10), "polynomial_schedule: .*power=-1.0"),
    (lambda: sch.cosine_onecycle_schedule(0, 1.0), "cosine_onecycle_schedule: .*steps=0"),
    (lambda: sch.cosine_onecycle_schedule(10, 1.0, pct_start=1.0), "0 <= pct_start < 1"),
    (lambda: sch.linear_onecycle_schedule(-5, 1.0), "linear_onecycle_schedule: .*=-5"),
    (
        lambda: sch.linear_onecycle_schedule(1, 1.0),
        r"linear_onecycle_schedule: .*Received: "
        r"transition_steps=1, pct_start=0\.3, pct_final=0\.85",
    ),
    (lambda: sch.linear_onecycle_schedule(100, 1.0, 0.9, 0.5), "pct_final=0.5"),
]


@pytest.mark.parametrize("make, match", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_raises(make, match):
    with pytest.raises(ValueError, match=match):
        make()
