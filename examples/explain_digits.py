"""Explain the digits MLP: integrated gradients and SmoothGrad, their completeness gaps, and
whether the pixels they call important are those the first layer weighs heavily.

python examples/explain_digits.py                 # the default backend (numpy)
WFRAME_BACKEND=jax python examples/explain_digits.py
python examples/explain_digits.py --quick --out /tmp/attributions

The figures go to ``--out`` (default ``runs/explain_digits/``): ``integrated_gradients.png``
and ``smoothgrad_x_input.png`` (one ``explain_digits.png`` grid without wframe.viz); a path
ending in ``.png`` names the files instead (``attr.png``: ``attr_integrated_gradients.png``, ...
beside it), and ``--no-figures`` writes nothing. Nothing is written anywhere else.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
from _claims import digits, one_blas_thread, verdict
from _out import add_out_argument
from _out import folder as out_folder
from scipy.stats import spearmanr
from sklearn.model_selection import train_test_split
from train_digits import make_model

import wframe as wf
from wframe import explain

SHOWN = 6  # digits drawn: the first test example of classes 0..SHOWN-1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 epochs instead of 30 (~5 s)")
    parser.add_argument("--steps", type=int, default=64, help="integration steps (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    add_out_argument(parser, "explain_digits")
    parser.add_argument("--no-figures", action="store_true", help="write no file")
    return parser.parse_args()


def relative_gaps(delta: np.ndarray, change: np.ndarray) -> str:
    """The completeness gaps |delta| relative to |f(x) - f(baseline)|: median and max."""
    rel = np.abs(delta) / np.maximum(np.abs(change), 1e-6)
    worst = np.abs(delta).max()
    return f"median {np.median(rel):.2e}, max {rel.max():.2e} (max |delta| {worst:.2e})"


def _stem(out: Path) -> str:
    """The files' common start: ``out/`` (a folder, created) or ``out``'s stem plus ``_``."""
    if out.suffix == ".png":
        return str(out_folder(out.parent) / out.stem) + "_"
    return str(out_folder(out)) + "/"


def save_figures(out: Path | None, images: np.ndarray, maps: dict[str, np.ndarray], titles) -> None:
    """One grid per method through wframe.viz when it is there, else one matplotlib grid,
    under ``out`` (see the module's docstring; ``None``: nothing)."""
    if out is None or importlib.util.find_spec("matplotlib") is None:
        print("figure: skipped" + (" (--no-figures)" if out is None else " (no matplotlib)"))
        return
    try:
        from wframe.viz import attribution_map
    except ImportError:
        attribution_map = None
    stem = _stem(out)
    if attribution_map is not None:
        for name, attr in maps.items():
            attribution_map(images, attr, f"{stem}{name}.png", titles=titles, batch=True)
            print(f"figure: {stem}{name}.png")
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1 + len(maps), len(images), figsize=(2 * len(images), 6))
    for j, image in enumerate(images):
        axes[0, j].imshow(image, cmap="gray")
        axes[0, j].set_title(titles[j], fontsize=8)
        for i, (name, attr) in enumerate(maps.items(), start=1):
            limit = np.abs(attr).max() or 1.0
            axes[i, j].imshow(attr[j], cmap="RdBu_r", vmin=-limit, vmax=limit)
            axes[i, 0].set_ylabel(name)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.savefig(f"{stem}explain_digits.png", dpi=100, bbox_inches="tight")
    print(f"figure: {stem}explain_digits.png")


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    x, y = digits()
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=args.seed, stratify=y
    )
    model = make_model(args.seed)
    model.build((None, 64))
    model.fit(
        x_train,
        y_train,
        epochs=5 if args.quick else 30,
        batch_size=32,
        optimizer=wf.optimizers.adam(1e-3),
        verbose=0,
    )
    accuracy = model.evaluate(x_test, y_test)["accuracy"]
    print(f"backend {model.backend.name}: test accuracy {accuracy:.4f}")

    # Integrated gradients of the predicted class over the whole test set, from a black image.
    pred = np.argmax(wf.to_numpy(model.predict(x_test)), axis=1)
    logits = wf.to_numpy(model.predict(np.concatenate([x_test, np.zeros((1, 64), "float32")])))
    change = logits[np.arange(len(pred)), pred] - logits[-1, pred]  # f(x) - f(baseline)
    print(f"\ncompleteness gaps, {len(x_test)} test digits, {args.steps} steps:")
    ig = None
    for method in ("riemann_trapezoid", "gausslegendre"):
        attr, delta = explain.integrated_gradients(
            model, x_test, target=pred, steps=args.steps, method=method
        )
        print(f"  {method:>17}: {relative_gaps(wf.to_numpy(delta), change)}")
        ig = wf.to_numpy(attr) if ig is None else ig

    # The figure: a few digits, integrated gradients and SmoothGrad times the input.
    shown = np.array([np.flatnonzero(y_test == c)[0] for c in range(SHOWN)])
    smooth = wf.to_numpy(explain.smoothgrad(model, x_test[shown], target=pred[shown]))
    maps = {
        "integrated_gradients": ig[shown].reshape(-1, 8, 8),
        "smoothgrad_x_input": (smooth * x_test[shown]).reshape(-1, 8, 8),
    }
    titles = [f"label {y_test[i]}, predicted {pred[i]}" for i in shown]
    save_figures(
        None if args.no_figures else args.out, x_test[shown].reshape(-1, 8, 8), maps, titles
    )

    # Feature importance: mean |IG| per pixel over the test set vs what the first Dense kernel
    # says: the L2 norm of the pixel's row, alone and scaled by the pixel's mean intensity (the
    # size of its contribution to the first layer), with the intensity alone as the control.
    importance = np.abs(ig).mean(axis=0)
    norms = np.linalg.norm(wf.to_numpy(model.params["dense_0"]["W"]), axis=1)
    intensity = np.abs(x_train).mean(axis=0)
    live = (x_train != 0).any(axis=0)  # the others are 0 in every training image
    print(
        f"\n{64 - live.sum()} of 64 pixels are 0 in every training image: mean |IG| at most "
        f"{importance[~live].max(initial=0):.2e} there, but their kernel rows get no gradient "
        f"and keep their initial norms ({norms[~live].mean() if (~live).any() else 0:.2f} on "
        f"average, vs {norms[live].mean():.2f} for the other pixels)"
    )
    print(f"Spearman rank correlation of mean |IG| with, over the {live.sum()} pixels that vary:")
    rho = {}
    proxies = {
        "kernel row norm": norms,
        "row norm x mean intensity": norms * intensity,
        "mean intensity alone": intensity,
    }
    for name, proxy in proxies.items():
        rho[name] = spearmanr(importance[live], proxy[live]).statistic
        print(f"  {name:>26}: {rho[name]:+.3f}")
    for name in ("kernel row norm", "row norm x mean intensity"):
        print(
            verdict(
                f"mean |IG| ranks the pixels as the {name} does (Spearman > 0.5)",
                rho[name] > 0.5,
                f"rho {rho[name]:+.3f} (mean intensity alone: {rho['mean intensity alone']:+.3f})",
            )
        )
    print(f"\ntotal {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    with one_blas_thread():
        main()
