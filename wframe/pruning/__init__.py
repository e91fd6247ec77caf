"""Magnitude pruning: masks over the params dict, one-shot (:mod:`.masks`) or on a gradual
schedule (:mod:`.schedule`).

:func:`prune` zeroes the smallest-magnitude weights and sets ``model.masks``; from then on every
train step keeps those weights at exactly zero. :class:`PruningSchedule` raises the sparsity
during ``fit`` as Zhu & Gupta (2017), :func:`sparsity_report` counts the zeros,
:func:`strip_pruning` drops the masks for export and :func:`to_sparse` hands 2-D weights to SciPy.
"""

from wframe.pruning.lottery import IterativeMagnitudePruning
from wframe.pruning.masks import Selector, prune, sparsity_report, strip_pruning, to_sparse
from wframe.pruning.schedule import PruningSchedule
from wframe.pruning.sparse import sparsify
from wframe.pruning.sparse_layers import SparseConv1D, SparseConv2D, SparseDense
from wframe.pruning.structured import prunable_units, prune_units, remove_units, select_units

__all__ = ["PruningSchedule", "Selector", "prune", "sparsity_report", "strip_pruning", "to_sparse"]
__all__ += ["prunable_units", "prune_units", "remove_units", "select_units"]
__all__ += ["IterativeMagnitudePruning", "SparseConv1D", "SparseConv2D", "SparseDense", "sparsify"]
