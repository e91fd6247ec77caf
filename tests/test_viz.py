"""wframe.viz: figures, axes, labels, colorbars, PNG files, the HTML report and the errors."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

import wframe as wf
from wframe import viz
from wframe.callbacks import History

L = wf.layers
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _matplotlib():
    pytest.importorskip("matplotlib")


def _mlp(seed=0):
    return wf.Sequential([L.Dense(6, activation="relu"), L.Dense(3)], seed=seed).build((None, 4))


def _cnn(cin=3, filters=5):
    layers = [L.Conv2D(filters, 3), L.Conv2D(2, 3), L.Flatten(), L.Dense(3)]
    return wf.Sequential(layers, seed=0).build((None, 7, 7, cin))


def _history(grads=True):
    h = History()
    for e, (loss, acc) in enumerate([(1.2, 0.4), (0.9, 0.6), (0.7, 0.7)]):
        h.on_epoch_end(
            e, {"loss": loss, "accuracy": acc, "val_loss": loss + 0.1, "val_accuracy": acc - 0.1}
        )
    if grads:
        h.steps["grad_norm/dense_0/W"] = list(np.linspace(1.0, 0.1, 12))
        h.steps["grad_norm/dense_1/W"] = list(np.linspace(2.0, 0.5, 12))
        h.steps["update_ratio/dense_0/W"] = [1e-3] * 12
        h.steps["step"] = list(range(1, 24, 2))  # GradientMonitor's x axis
    h.steps["learning_rate"] = [1e-3] * 12
    return h


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG


def _colorbars(fig):
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def test_weight_heatmap_of_a_dense_kernel(backend, tmp_path):
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure

    model = _mlp()
    fig = viz.weight_heatmap(model, "dense_0/W", path=tmp_path / "w.png")
    assert isinstance(fig, Figure) and _is_png(tmp_path / "w.png")
    (ax,) = [a for a in fig.axes if a not in _colorbars(fig)]
    assert len(_colorbars(fig)) == 1
    assert (ax.get_ylabel(), ax.get_xlabel()) == ("input unit", "output unit")
    (im,) = ax.get_images()
    w = wf.to_numpy(model.params["dense_0"]["W"])
    np.testing.assert_allclose(im.get_array(), w)  # rows: inputs, columns: outputs
    norm = im.norm
    assert isinstance(norm, TwoSlopeNorm) and norm.vcenter == 0.0
    assert norm.vmin == -norm.vmax == pytest.approx(-np.abs(w).max())


def test_weight_heatmap_of_a_conv_kernel_is_a_grid_of_filters():
    fig = viz.weight_heatmap(_cnn(cin=3, filters=5), "conv2d_0/W")
    assert len(fig.axes) == 5 + 1 and len(_colorbars(fig)) == 1
    ims = [ax.get_images()[0] for ax in fig.axes[:5]]
    assert ims[0].get_array().shape == (3, 3 * (3 + 1) - 1)  # 3 input channels side by side
    assert all(im.norm.vcenter == 0 and im.norm is ims[0].norm for im in ims)  # one scale
    few = viz.weight_heatmap(_cnn(cin=3, filters=5), "conv2d_0/W", max_filters=2)
    assert len(few.axes) == 3
    bias = viz.weight_heatmap(_mlp(), "dense_0/b")  # 1-D: one row
    assert bias.axes[0].get_images()[0].get_array().shape == (1, 6)


def test_weight_histograms_mark_the_initializer_std(tmp_path):
    from wframe.inspect import expected_std

    model = _cnn(cin=1)
    fig = viz.weight_histograms(model, path=tmp_path / "h.png")
    assert _is_png(tmp_path / "h.png")
    matrices = ["conv2d_0/W", "conv2d_1/W", "dense_0/W"]
    assert len(fig.axes) == len(matrices)
    stds = expected_std(model)
    for ax, name in zip(fig.axes, matrices, strict=True):
        assert ax.get_title().startswith(name) and ax.get_xlabel() == "value"
        xs = sorted(line.get_xdata()[0] for line in ax.get_lines())
        assert xs == pytest.approx([-stds[name], stds[name]])
    only = viz.weight_histograms(model, names="dense_0")
    assert len(only.axes) == 1


def test_filters_rgb_and_channel_mean(tmp_path):
    fig = viz.filters(_cnn(cin=3, filters=5), "conv2d_0", path=tmp_path / "f.png")
    assert _is_png(tmp_path / "f.png")
    assert len(fig.axes) == 5 and not _colorbars(fig)  # RGB images, no colorbar
    assert fig.axes[0].get_images()[0].get_array().shape == (3, 3, 3)
    gray = viz.filters(_cnn(cin=2, filters=4), "conv2d_0")
    assert len(gray.axes) == 4 + 1 and len(_colorbars(gray)) == 1
    im = gray.axes[0].get_images()[0]
    assert im.get_array().shape == (3, 3) and im.norm.vcenter == 0


def test_training_curves_from_history_and_dict(tmp_path):
    fig = viz.training_curves(_history(), path=tmp_path / "c.png")
    assert _is_png(tmp_path / "c.png")
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy"]
    loss_ax = fig.axes[0]
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["loss", "val_loss"]
    assert loss_ax.get_xlabel() == "epoch"
    np.testing.assert_allclose(loss_ax.get_lines()[0].get_xydata(), [[1, 1.2], [2, 0.9], [3, 0.7]])
    from_dict = viz.training_curves({"loss": [3.0, 2.0], "mae": [1.0, 0.5], "val_mae": [1, 1]})
    assert [ax.get_title() for ax in from_dict.axes] == ["loss", "mae"]
    with pytest.raises(ValueError, match="no epochs"):
        viz.training_curves(History())


def test_gradient_norms_plot_every_series_on_a_log_axis(tmp_path):
    fig = viz.gradient_norms(_history(), path=tmp_path / "g.png")
    assert _is_png(tmp_path / "g.png")
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["dense_0/W", "dense_1/W"]  # update_ratio and learning_rate left out
    np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), np.arange(1, 24, 2))
    assert ax.get_xlabel() == "optimizer step"
    bare = viz.gradient_norms({"grad_norm/dense_0/W": [1.0, np.nan, 0.5]})  # a steps dict
    np.testing.assert_array_equal(bare.axes[0].get_lines()[0].get_xdata(), [0, 1, 2])
    with pytest.raises(ValueError, match="GradientMonitor"):
        viz.gradient_norms(_history(grads=False))


def test_attribution_map_shapes(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.random((8, 8))
    fig = viz.attribution_map(img, img - 0.5, path=tmp_path / "a.png")
    assert _is_png(tmp_path / "a.png")
    assert len(fig.axes) == 2 and len(_colorbars(fig)) == 1
    gray, overlay = fig.axes[0].get_images()
    assert gray.get_cmap().name == "gray"
    assert overlay.norm.vcenter == 0 and overlay.norm.vmin == -overlay.norm.vmax
    rgb = rng.random((8, 8, 3))
    one = viz.attribution_map(rgb, rgb - 0.5)  # summed over channels
    np.testing.assert_allclose(one.axes[0].get_images()[1].get_array(), (rgb - 0.5).sum(-1))
    batch = rng.random((5, 8, 8, 3))
    grid = viz.attribution_map(batch, batch[..., 0], titles=[f"x{i}" for i in range(5)])
    assert len(grid.axes) == 5 + 1 and grid.axes[4].get_title() == "x4"
    grays = viz.attribution_map(batch[..., 0], batch[..., 0])  # (N, H, W): a gray batch
    assert len(grays.axes) == 5 + 1
    with pytest.raises(ValueError, match=r"\(8, 7\).*\(8, 8\)"):
        viz.attribution_map(img, np.zeros((8, 7)))
    with pytest.raises(ValueError, match="image must be"):
        viz.attribution_map(np.zeros(8), np.zeros(8))
    with pytest.raises(ValueError, match="NaN"):
        viz.attribution_map(img, np.full((8, 8), np.nan))


def test_report_is_one_self_contained_page(tmp_path):
    model = _mlp()
    path = viz.report(model, _history(), tmp_path / "r.html", title="<mlp>")
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert path == str(tmp_path / "r.html")
    # curves + histograms + 2 heatmaps (the two 2-D kernels) + gradient norms
    images = re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 5 == text.count("<img ")
    import base64

    assert all(base64.b64decode(data)[:8] == PNG for data in images)
    assert model.summary(print_fn=lambda s: None) in text.replace("&#x27;", "'")
    assert "dense_0/W" in text and "glorot_uniform" in text and "near_zero" in text
    assert "&lt;mlp&gt;" in text and "<mlp>" not in text  # escaped
    assert 'src="http' not in text and "href=" not in text
    bare = viz.report(model, None, tmp_path / "bare.html")
    with open(bare, encoding="utf-8") as f:
        assert f.read().count("<img ") == 3


def test_bad_names_list_the_names():
    model = _cnn()
    with pytest.raises(ValueError, match=r"'dense_0/Q'.*conv2d_0/W.*dense_0/b"):
        viz.weight_heatmap(model, "dense_0/Q")
    with pytest.raises(ValueError, match=r"layer 'dense_0' holds \['dense_0/W', 'dense_0/b'\]"):
        viz.weight_heatmap(model, "dense_0")
    with pytest.raises(ValueError, match=r"unknown layer 'conv9'.*\['conv2d_0', 'conv2d_1'\]"):
        viz.filters(model, "conv9")
    with pytest.raises(ValueError, match=r"'dense_0' has no conv kernel.*\['conv2d_0', 'conv"):
        viz.filters(model, "dense_0")
    with pytest.raises(ValueError, match=r"'nope'.*conv2d_0/W"):
        viz.weight_histograms(model, names="nope")


def test_a_model_never_built_is_a_clear_error():
    model = wf.Sequential([L.Dense(3)])
    for call in (
        lambda: viz.weight_heatmap(model, "dense_0/W"),
        lambda: viz.weight_histograms(model),
        lambda: viz.filters(model, "conv2d_0"),
        lambda: viz.report(model, None, "unused.html"),
    ):
        with pytest.raises(RuntimeError, match="never built"):
            call()


def test_missing_matplotlib_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'wframe\[viz\]'"):
        viz.weight_heatmap(_mlp(), "dense_0/W")
    with pytest.raises(ModuleNotFoundError, match="pip install"):
        viz.training_curves(_history())


def test_importing_viz_does_not_import_matplotlib():
    code = "import sys, wframe.viz, wframe.inspect; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
