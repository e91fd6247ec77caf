"""The device copies ``fit`` keeps of host data between calls: found by content, so an array
edited in place between calls is moved again and the training sees the edit."""

import numpy as np

import wframe as wf
from wframe.model.device_copies import MAX_ENTRIES, DeviceCopies


def test_copy_reused_only_for_the_same_bits(backend):
    cache = DeviceCopies()
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    a = cache.put(backend, x, "float32")
    b = cache.put(backend, x, "float32")
    if backend.traced:  # JAX: the copy made by the first call
        assert a is b
    else:  # NumPy: the array itself, nothing kept
        assert a is x and b is x and not cache._entries  # noqa: SLF001
    x[0, 0] = -7.0  # edited in place: the same object, other bits
    c = cache.put(backend, x, "float32")
    assert float(backend.to_numpy(c)[0, 0]) == -7.0
    x[0, 0] = -0.0
    d = backend.to_numpy(cache.put(backend, x, "float32")).copy()
    x[0, 0] = 0.0  # equal as numbers, not as bits: moved again
    e = backend.to_numpy(cache.put(backend, x, "float32"))
    assert np.signbit(d[0, 0]) and not np.signbit(e[0, 0])
    assert cache.put(backend, x, "float16").dtype == backend.dtype("float16")


def test_a_copy_never_aliases_the_array_it_was_made_from(backend):
    # JAX:CPU aliases aligned host buffers; a cached copy sharing memory with ``x`` would change
    # with it and be handed out for other arrays of ``x``'s old bits.
    cache = DeviceCopies()
    for _ in range(20):  # whatever the buffers' alignment
        base = np.arange(64 * 16, dtype=np.float32).reshape(64, 16)
        x = base.copy()
        cache.put(backend, x, "float32")
        x *= 2  # in place, after the copy was made and kept
        got = backend.to_numpy(cache.put(backend, base, "float32"))  # the old bits
        np.testing.assert_array_equal(got, base)


def test_cache_is_bounded(backend):
    cache = DeviceCopies()
    for i in range(MAX_ENTRIES + 3):
        cache.put(backend, np.full((2, 2), i, np.float32), "float32")
    cache.put(backend, np.arange(7, dtype=np.int32)[::2], "int32")  # not contiguous: not kept
    assert len(cache._entries) == (MAX_ENTRIES if backend.traced else 0)  # noqa: SLF001


def test_fit_sees_data_edited_in_place(backend):
    """Two fits on the same array object edited between them train on the edited values."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 3)).astype(np.float32)
    y = rng.integers(0, 2, 16).astype(np.int32)

    def trained(data):
        model = wf.Sequential([wf.layers.Dense(2)], seed=0)
        model.compile(
            loss=wf.losses.get("sparse_categorical_crossentropy", from_logits=True), optimizer="sgd"
        )
        model.fit(data, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
        return backend.to_numpy(model.params["dense_0"]["W"])

    trained(x)
    x *= 3.0
    fresh = trained(x.copy())  # a new object: never cached with these bits before
    np.testing.assert_allclose(trained(x), fresh, rtol=1e-6)
