"""Frictions a new user met in layers, backends, saving and transfer, each with its message: a
user layer without (or with a wrong) backward, a "/" in a layer name, ``layer.trainable =``,
NCHW images, foreign file suffixes and files, torch arrays shared or passed in."""

from __future__ import annotations

import dataclasses
import re
import warnings
import zipfile
from dataclasses import dataclass

import numpy as np
import pytest

import wframe as wf
from wframe.layers import Conv2D, Dense, Layer
from wframe.layers import Sequential as Chain
from wframe.saving.io import WeightsFileError


@dataclass(frozen=True)
class Scale(Layer):
    """A user layer ``y = x * s``; ``mode`` picks how its backward goes wrong."""

    mode: str = "ok"

    def init(self, key, in_shape, *, dtype="float32"):
        return {"s": wf.get_backend().asarray(np.full(in_shape[-1], 2.0), dtype)}, {}, in_shape

    def forward(self, params, state, x, *, train=False, key=None):
        s, mode = params["s"], self.mode
        if mode == "pair":
            return x * s, state
        if mode == "none":
            return x * s, state, None

        def backprop(dy, input_grad=True):
            ds = (dy * x).sum(axis=0)
            if mode == "shape":
                return dy * s, {"s": ds[:2]}
            if mode == "key":
                return dy * s, {"scale": ds}
            if mode == "dx":
                return dy[:, :2], {"s": ds}
            return dy * s, {"s": ds}

        return x * s, state, backprop


def _chain_backward(mode: str, first: bool = False):
    """The numpy train step's backward through a chain holding ``Scale(mode)``."""
    layers = [Scale(mode, name="scale"), Dense(2)]
    chain = Chain(layers if first else layers[::-1])
    x = np.ones((3, 2), "float32")
    params, state, _ = chain.init(0, (None, 2))
    y, _, backprop = chain.apply(params, state, x, train=True)
    return backprop(np.ones_like(y), input_grad=False)


def test_user_layer_without_backward_names_itself_and_the_fix_on_fit():
    model = wf.Sequential([Scale("none", name="my_scale"), Dense(2)])
    model.compile(loss="mse", optimizer="sgd")
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    with pytest.raises(TypeError, match=r"Scale 'my_scale' has no backward pass") as info:
        model.fit(x, y, epochs=1, verbose=0)
    assert "hand-written" in str(info.value) and "jax" in str(info.value)


def test_user_layer_without_backward_trains_on_jax(jax):
    model = wf.Sequential([Scale("none"), Dense(2)]).to_backend("jax")
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    model.compile(loss="mse", optimizer="sgd")
    model.fit(x, y, epochs=1, verbose=0)
    assert np.all(np.isfinite(wf.to_numpy(model.params["scale_0"]["s"])))


@pytest.mark.parametrize(
    "mode, first, error, message",
    [
        (
            "shape",
            True,
            ValueError,
            r"Scale 'scale': backprop's gradient for param 's' has shape \(2,\), expected \(3,\)",
        ),
        (
            "key",
            True,
            ValueError,
            r"Scale 'scale': backprop returned gradients for \['scale'\], expected one per "
            r"param: \['s'\]",
        ),
        (
            "dx",
            False,
            ValueError,
            r"Scale 'scale': backprop's dx for input has shape \(3, 2\), expected the input's "
            r"shape \(3, 3\)",
        ),
        ("pair", True, TypeError, r"Scale 'scale': forward must return \(y, new_state, backprop"),
    ],
)
def test_user_layer_wrong_backward_is_named(mode, first, error, message):
    layers = [Scale(mode, name="scale"), Dense(2)]
    chain = Chain(layers if first else [Dense(3), layers[0], layers[1]])
    params, state, _ = chain.init(0, (None, 3))
    with pytest.raises(error, match=message):
        y, _, backprop = chain.apply(params, state, np.ones((3, 3), "float32"), train=True)
        backprop(np.ones_like(y), input_grad=False)


def test_a_correct_user_layer_passes_the_checks_with_its_gradients():
    chain = Chain([Scale(name="scale")])
    params, state, _ = chain.init(0, (None, 2))
    x = np.array([[1.0, 2.0], [3.0, 4.0]], "float32")
    y, _, backprop = chain.apply(params, state, x, train=True)
    dx, grads = backprop(np.ones_like(y))
    np.testing.assert_array_equal(grads["scale"]["s"], [4.0, 6.0])
    np.testing.assert_array_equal(dx, np.full((2, 2), 2.0))
    # frozen: the container asks for no grads of the layer; the checks expect none
    _, grads = backprop(np.ones_like(y), input_grad=False, need={})
    assert grads == {}


def test_builtin_layers_are_not_wrapped():
    x = np.ones((2, 3), "float32")
    layer = Dense(2)
    params, state, _ = layer.init(0, (None, 3))
    back = layer.apply(params, state, x)[2]
    assert back.__qualname__.startswith("Dense.")  # Dense's own closure, no checking wrapper


# ------------------------------------------------------------------- names, immutability
@pytest.mark.parametrize("make", [lambda: Dense(3, name="a/b"), lambda: Dense(3).named("a/b")])
def test_a_slash_in_a_layer_name_is_refused_at_construction(make):
    with pytest.raises(ValueError, match=r"name 'a/b' contains '/'.*name='a_b'"):
        make()


def test_a_layer_name_must_be_a_str():
    with pytest.raises(TypeError, match=r"Dense: name must be a non-empty str or None, got 3"):
        Dense(3, name=3)


def test_setting_trainable_on_a_layer_points_to_model_freeze():
    model = wf.Sequential([Dense(3), Dense(2)]).build((None, 4))
    layer = model.layers[0]
    with pytest.raises(AttributeError, match=r"model\.freeze\('dense_0'\)") as info:
        layer.trainable = False
    assert isinstance(info.value, dataclasses.FrozenInstanceError)  # still what it was
    with pytest.raises(dataclasses.FrozenInstanceError, match=r"dataclasses\.replace\(layer"):
        layer.units = 5
    assert layer.units == 3 and not hasattr(layer, "trainable")
    model.freeze("dense_0")  # the fix the message gives works
    assert model.frozen == {"dense_0/W", "dense_0/b"}


def test_user_layer_classes_are_immutable_with_the_same_message():
    with pytest.raises(dataclasses.FrozenInstanceError, match="model.freeze"):
        Scale().trainable = False


# ------------------------------------------------------------------- NCHW
def test_nchw_images_given_to_conv2d_warn_with_the_transpose():
    model = wf.Sequential([Conv2D(4, 3, padding="same")])
    with pytest.warns(UserWarning, match=r"look like NCHW.*x\.transpose\(0, 2, 3, 1\)"):
        model.build((None, 1, 28, 28))


@pytest.mark.parametrize(
    "shape", [(None, 28, 28, 1), (None, 32, 32, 3), (None, 1, 1, 512), (None, 1, 100, 64)]
)
def test_nhwc_shapes_do_not_warn(shape):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Conv2D(4, 1, padding="same").init(0, shape)


# ------------------------------------------------------------------- files
@pytest.mark.parametrize("name", ["w.h5", "w.weights.h5", "m.keras", "m.pt", "m.pkl"])
def test_foreign_suffixes_warn_and_the_file_is_safetensors(name, tmp_path):
    model = wf.Sequential([Dense(2)]).build((None, 3))
    stem = re.escape(name.rsplit(".", 1)[0])
    saves = (model.save_weights, lambda p: wf.save_model(model, p), model.save_checkpoint)
    for save in saves:
        with pytest.warns(UserWarning, match=rf"suffix '\.\w+' names .*/{stem}\.safetensors'$"):
            save(tmp_path / name)
        assert wf.saving.io.read_metadata(tmp_path / name)["format"].startswith("wframe")
    with pytest.warns(UserWarning, match="wframe writes safetensors"):
        wf.callbacks.ModelCheckpoint(str(tmp_path / name))  # at once, not after an epoch


def test_keras_and_torch_files_are_named_on_load(tmp_path):
    h5 = tmp_path / "w.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(500))
    keras = tmp_path / "m.keras"
    with zipfile.ZipFile(keras, "w") as z:
        z.writestr("config.json", "{}")
    model = wf.Sequential([Dense(2)]).build((None, 3))
    for path, kind in ((h5, "an HDF5"), (keras, "a zip archive")):
        for load in (wf.load_model, model.load_weights):
            with pytest.raises(WeightsFileError, match=rf"it looks like {kind}") as info:
                load(path)
            text = str(info.value)
            assert "wframe reads only safetensors" in text and "load_pretrained" in text
            assert "header length" not in text  # not the nonsense its bytes make as a header


# ------------------------------------------------------------------- torch
def test_from_torch_copies_weights_and_batchnorm_statistics():
    torch = pytest.importorskip("torch")
    twin = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    with torch.no_grad():
        twin[1].running_mean.add_(0.5)
    model = wf.Sequential([Dense(4), wf.layers.BatchNorm(epsilon=1e-5)]).build((None, 3))
    wf.transfer.from_torch(model, twin)
    before = {k: wf.to_numpy(v).copy() for k, v in _leaves(model).items()}
    with torch.no_grad():  # training the twin changes its tensors in place
        for t in [*twin.parameters(), twin[1].running_mean, twin[1].running_var]:
            t.add_(1.0)
    after = {k: wf.to_numpy(v) for k, v in _leaves(model).items()}
    assert before.keys() == after.keys() and len(before) == 6
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)


def test_load_pretrained_copies_a_source_models_arrays():
    source = wf.Sequential([Dense(2)], seed=1).build((None, 3))
    target = wf.Sequential([Dense(2)], seed=2).build((None, 3))
    wf.transfer.load_pretrained(target, source)
    w = wf.to_numpy(target.params["dense_0"]["W"]).copy()
    wf.to_numpy(source.params["dense_0"]["W"])[...] = 7.0  # numpy: the source's own buffer
    np.testing.assert_array_equal(wf.to_numpy(target.params["dense_0"]["W"]), w)


def _leaves(model) -> dict:
    return {
        f"{kind}/{k}": v
        for kind, tree in (("params", model.params), ("state", model.state))
        for k, v in wf.tree.flatten(tree)
    }


def test_a_torch_tensor_is_named_with_the_fix_not_a_compat_module():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"a torch\.Tensor .* is not an array of any wframe") as e:
        wf.backend_of(torch.ones(2, 3))
    assert "x.numpy()" in str(e.value) and "array_api_compat" not in str(e.value)
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        wf.backend_of(np.ones(2), torch.ones(2))


def test_model_checkpoint_warns_of_another_formats_suffix_when_made():
    with pytest.warns(UserWarning, match=r"suffix '\.keras' names a Keras 3 model archive"):
        wf.callbacks.ModelCheckpoint("best-{epoch}.keras")
    assert wf.callbacks.ModelCheckpoint("best.safetensors").filepath == "best.safetensors"
