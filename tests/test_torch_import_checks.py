"""What from_torch refuses before it changes the model: entries that are not floating-point
(integers, booleans, complex numbers), values a cast would make inf, NaN and inf, negative
running variances, tensors without values (sparse, meta, quantized); and its messages stay
short whatever the source holds."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import wframe as wf
from wframe.saving import io
from wframe.transfer import from_torch
from wframe.tree import flatten

torch = pytest.importorskip("torch")


def _pair(seed=0):
    """A wframe model and its torch twin's state_dict."""
    torch.manual_seed(seed)
    twin = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3, eps=1e-3))
    model = wf.Sequential([wf.layers.Dense(3), wf.layers.BatchNorm()], seed=seed)
    model.build((None, 2))
    return model, twin, {k: v.clone() for k, v in twin.state_dict().items()}


def _host(model):
    return {n: np.array(wf.to_numpy(a)) for n, a in flatten((model.params, model.state))}


def _refused(model, source, error, match, **kw):
    before = _host(model)
    with pytest.raises(error, match=match) as info:
        from_torch(model, source, **kw)
    after = _host(model)
    assert all(np.array_equal(before[k], after[k], equal_nan=True) for k in before)
    assert len(str(info.value)) < 2000
    return info.value


@pytest.mark.parametrize("dtype", ["int64", "int32", "uint8", "bool", "complex64", "complex128"])
def test_entries_that_are_not_floating_point_are_refused(backend, dtype):
    model, _, sd = _pair()
    sd["0.weight"] = sd["0.weight"].to(getattr(torch, dtype))
    error = _refused(model, sd, TypeError, f"'0.weight' for 'dense_0' is {dtype}")
    assert ("t.real" in str(error)) == dtype.startswith("complex")


def test_a_float64_value_that_overflows_float32_is_refused(backend):
    model, _, sd = _pair()
    sd["0.weight"] = torch.full((3, 2), 1e300, dtype=torch.float64)
    _refused(model, sd, ValueError, r"torch '0.weight': dense_0/W holds values up to 1e\+300")
    sd["0.weight"] = torch.full((3, 2), 0.1, dtype=torch.float64)  # rounds, fits: loads
    from_torch(model, sd)
    assert np.array_equal(wf.to_numpy(model.params["dense_0"]["W"]), np.full((2, 3), 0.1, "f4"))


def test_nan_and_negative_variances_are_refused(backend):
    model, _, sd = _pair()
    sd["1.running_mean"][1] = float("nan")
    sd["1.running_var"][2] = -0.5
    error = _refused(model, sd, ValueError, "non-finite values in @state/batch_norm_0/mean")
    assert "'1.running_var': @state/batch_norm_0/var is a variance" in str(error)
    sd["1.running_var"][2] = 0.5
    from_torch(model, sd, allow_nonfinite=True)  # for debugging a diverged twin
    assert np.isnan(wf.to_numpy(model.state["batch_norm_0"]["mean"])[1])
    sd["1.running_var"][2] = -0.5
    _refused(model, sd, ValueError, "is a variance", allow_nonfinite=True)


def test_a_module_with_bfloat16_and_a_counter_loads(on_numpy):
    model, twin, _ = _pair()
    twin.to(torch.bfloat16)  # every bfloat16 value is exact in float32
    from_torch(model, twin)
    want = twin[0].weight.detach().float().numpy().T
    assert np.array_equal(wf.to_numpy(model.params["dense_0"]["W"]), want)


def test_tensors_without_values_are_refused(on_numpy):
    model, _, sd = _pair()
    cases = {
        "sparse": (
            sd["0.weight"].to_sparse(),
            "is a sparse_coo \\(sparse\\) tensor; pass t.to_dense",
        ),
        "meta": (torch.empty((3, 2), device="meta"), "is on the 'meta' device"),
        "none": (None, "is a NoneType \\(None\\), not a tensor"),
        "text": ("abc", "is a str"),
        "objects": (np.array([[None] * 2] * 3), "is a ndarray .* not a tensor or array of numbers"),
    }
    with warnings.catch_warnings():  # torch deprecates quantized tensors
        warnings.simplefilter("ignore")
        q = torch.quantize_per_tensor(torch.zeros(3, 2), 0.1, 0, torch.qint8)
    cases["quantized"] = (q, "is a quantized tensor \\(torch.qint8\\); pass t.dequantize")
    for value, match in cases.values():
        _refused(model, {**sd, "0.weight": value}, TypeError, "'0.weight' " + match)


def test_a_file_source_is_refused_with_a_weights_file_error(on_numpy, tmp_path):
    model, _, sd = _pair()
    arrays = {k: v.numpy() for k, v in sd.items()}
    path = tmp_path / "twin.safetensors"
    io.write_safetensors(path, {**arrays, "0.weight": arrays["0.weight"].astype("int32")})
    error = _refused(model, path, io.WeightsFileError, "is int32, not floating-point")
    assert error.path == str(path) and str(path) in str(error)
    io.write_safetensors(path, {**arrays, "0.bias": np.full(3, np.inf, np.float32)})
    _refused(model, path, io.WeightsFileError, "non-finite values in dense_0/b")


def test_messages_about_many_modules_stay_short(on_numpy):
    model, _, sd = _pair()
    extra = {f"extra{i}.weight": np.zeros(1, np.float32) for i in range(20_000)}
    error = _refused(model, {**sd, **extra}, ValueError, "left over: torch modules")
    assert "and 19990 more" in str(error)
    flat = {f"w{i}": np.zeros(1, np.float32) for i in range(20_000)}  # one module, 20k entries
    _refused(model, flat, ValueError, "and 19992 more")
    _refused(model, sd, ValueError, "names a missing module", mapping={"x" * 10_000: "dense_0"})


def test_options_are_checked(on_numpy):
    model, _, sd = _pair()
    with pytest.raises(TypeError, match="allow_nonfinite must be True or False"):
        from_torch(model, sd, allow_nonfinite="no")
    with pytest.raises(TypeError, match="keys must be str"):
        from_torch(model, {0: sd["0.weight"]})


@pytest.fixture
def on_numpy():
    with wf.use_backend("numpy") as b:
        yield b


@pytest.mark.parametrize(
    ("size", "padding", "mode", "refused"),
    [
        (8, 1, "zeros", "pads 1 before each side, where padding='same' with stride 2 pads 0"),
        (9, 1, "zeros", None),  # an odd size: 1 before and 1 after, as PyTorch's padding=1
        (9, 0, "zeros", "pads 0 before each side"),
        (9, 1, "reflect", "padding_mode='reflect' differs from the layer's zeros"),
    ],
)
def test_a_strided_same_convolution_is_checked_against_the_input_size(
    on_numpy, size, padding, mode, refused
):
    """ResNet's downsampling Conv2d(3, stride=2, padding=1) is TensorFlow's "same" only on odd
    sizes (on even ones "same" pads 0 before and 1 after): imported anyway, its outputs were
    up to 2.85 off."""
    torch.manual_seed(0)
    module = torch.nn.Conv2d(3, 4, 3, stride=2, padding=padding, padding_mode=mode)
    model = wf.Sequential([wf.layers.Conv2D(4, 3, strides=2, padding="same")], seed=0)
    model.build((None, size, size, 3))
    if refused is not None:
        with pytest.raises(ValueError, match=refused):
            from_torch(model, torch.nn.Sequential(module))
        return
    from_torch(model, torch.nn.Sequential(module))
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    got = wf.to_numpy(model.predict(x))
    np.testing.assert_allclose(got, expected.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_a_recurrent_module_without_biases_loads_zeros(on_numpy, kind):
    """bias=False: its biases are zeros (the report says so); it crashed with a KeyError."""
    torch.manual_seed(0)
    module = getattr(torch.nn, kind)(3, 4, batch_first=True, bias=False)
    layer = {"LSTM": wf.layers.LSTM, "GRU": wf.layers.GRU, "RNN": wf.layers.SimpleRNN}[kind]
    model = wf.Sequential([layer(4, return_sequences=True)], seed=0).build((None, 5, 3))
    report = from_torch(model, module)
    assert "(absent: zeros)" in str(report)
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(wf.to_numpy(model.predict(x)), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("padding", "dilation", "ok"), [(2, 1, True), (4, 2, True), (0, 1, False), (1, 1, False)]
)
def test_a_causal_convolution_takes_pytorchs_causal_idiom_only(on_numpy, padding, dilation, ok):
    """PyTorch's causal Conv1d pads dilation * (k - 1) on both sides and keeps the first T
    steps; any other padding is another layer (it loaded before, its outputs shifted)."""
    torch.manual_seed(0)
    module = torch.nn.Conv1d(3, 4, 3, padding=padding, dilation=dilation)
    layer = wf.layers.Conv1D(4, 3, padding="causal", dilation_rate=dilation)
    model = wf.Sequential([layer], seed=0).build((None, 7, 3))
    if not ok:
        with pytest.raises(ValueError, match="differs from padding='causal'"):
            from_torch(model, torch.nn.Sequential(module))
        return
    from_torch(model, torch.nn.Sequential(module))
    x = np.random.default_rng(0).normal(size=(2, 7, 3)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x.transpose(0, 2, 1).copy())).numpy()
    got = wf.to_numpy(model.predict(x))
    np.testing.assert_allclose(got, expected.transpose(0, 2, 1)[:, :7], rtol=1e-5, atol=1e-6)
