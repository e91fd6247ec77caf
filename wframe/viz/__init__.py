"""Plots of weights, training and attributions, and a one-page HTML report.

Every plot returns a ``matplotlib.figure.Figure`` (Agg canvas, no pyplot state, no display
needed) and writes a PNG when given ``path=``. matplotlib is an optional extra, imported only
when something is drawn: ``pip install 'wframe[viz]'``.
"""

from wframe.viz.attribution import attribution_map
from wframe.viz.curves import gradient_norms, training_curves
from wframe.viz.filters import filters
from wframe.viz.heatmap import weight_heatmap
from wframe.viz.histograms import weight_histograms
from wframe.viz.report import report

__all__ = [
    "attribution_map",
    "filters",
    "gradient_norms",
    "report",
    "training_curves",
    "weight_heatmap",
    "weight_histograms",
]
