"""Per-group optimizers (discriminative fine-tuning): :func:`partition`, as optax's
``multi_transform``, with the groups chosen by flat parameter name."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from wframe.optimizers.base import GradientTransformation
from wframe.tree import flatten, merge, split


class MultiTransformState(NamedTuple):
    """optax's name: each group's inner state, by label.

    Attributes:
      inner_states: label -> the state of that group's transformation.
    """

    inner_states: dict[str, Any]


def partition(
    transforms: Mapping[str, GradientTransformation],
    labels: Callable[[str], str] | Mapping[str, str],
) -> GradientTransformation:
    """Apply ``transforms[label]`` to each group of params, as ``optax.multi_transform``.

    ``partition({"body": sgd(1e-4), "head": adam(1e-3)}, {"head*": "head", "*": "body"})``
    trains the head with Adam at 1e-3 and everything else with SGD at 1e-4.

    Args:
      transforms: label -> optimizer.
      labels: a function of the flat param name (``"block_0/dense_1/W"``) returning a label,
        or a dict ``{pattern: label}``: the first pattern that is the name, a prefix of it
        (``"block_0"``) or a glob matching it (``"head*"``) gives the label.

    Returns:
      The transformation; its state is a :class:`MultiTransformState` of each group's state.
    """
    transforms = dict(transforms)
    if not transforms or not all(callable(getattr(t, "update", None)) for t in transforms.values()):
        raise TypeError("partition: transforms must be a non-empty dict {label: optimizer}")
    groups = _grouping(transforms, labels)

    def init_fn(params):
        return MultiTransformState(
            {
                label: tx.init(_pick(params, g))
                for (label, tx), g in zip(transforms.items(), groups(params).values(), strict=True)
            }
        )

    def update_fn(updates, state, params=None):
        out: dict = {}
        inner = {}
        for label, names in groups(updates).items():
            sub_params = None if params is None else _pick(params, names)
            new, inner[label] = transforms[label].update(
                _pick(updates, names), state.inner_states[label], sub_params
            )
            out = merge(out, new, updates)
        return out, MultiTransformState(inner)

    return GradientTransformation(init_fn, update_fn)


def _grouping(
    transforms: Mapping[str, GradientTransformation],
    labels: Callable[[str], str] | Mapping[str, str],
) -> Callable[[Any], dict[str, frozenset[str]]]:
    """``params -> {label: flat param names}``, every label of ``transforms`` in order."""
    cache: dict[tuple[str, ...], dict[str, frozenset[str]]] = {}

    def groups(params: Any) -> dict[str, frozenset[str]]:
        names = tuple(name for name, _ in flatten(params))
        if names not in cache:  # once per params structure (trace time on JAX)
            out: dict[str, set[str]] = {label: set() for label in transforms}
            for name in names:
                label = _label(labels, name)
                if label not in transforms:
                    raise ValueError(
                        f"partition: param {name!r} has label {label!r}, which has no optimizer; "
                        f"the labels with one are {sorted(transforms)}"
                    )
                out[label].add(name)
            cache[names] = {k: frozenset(v) for k, v in out.items()}
        return cache[names]

    return groups


def _pick(tree: Any, names: frozenset[str]) -> Any:
    return split(tree, names)[1]


def _label(labels: Callable[[str], str] | Mapping[str, str], name: str) -> str:
    if callable(labels):
        return labels(name)
    for pattern, label in labels.items():
        if name == pattern or name.startswith(pattern + "/") or fnmatch.fnmatchcase(name, pattern):
            return label
    raise ValueError(
        f"partition: no pattern of {list(labels)} matches the param {name!r}; add one (e.g. "
        f"'*' last for the rest)"
    )
