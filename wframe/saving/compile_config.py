"""The loss and metrics a model was compiled with, in its file, as Keras keeps its
``compile_config``: :func:`~wframe.saving.model_file.load_model` gives them back, so that the
loaded model's ``evaluate`` and ``fit`` compute what the saved one's did.

The metadata entry ``"compile"`` is JSON::

    {"loss": {"class": "SparseCategoricalCrossentropy",
              "config": {"metric": "accuracy", "from_logits": false}},
     "metrics": ["accuracy", {"class": "AUC", "config": {"num_thresholds": 200, ...}}],
     "unstored": []}

A model of several outputs stores ``{"class": "Outputs", "config": {"losses": [...], "names":
[...], "weights": [...]}}``, and metrics given per output ``{"by_output": {name: ...}}``. Only
the built-in classes (:data:`wframe.losses.registry.CLASSES`,
:data:`wframe.metrics.registry.CLASSES`) with plain option values are written and read: a
user's loss or metric (a function, a subclass) is not stored, ``"unstored"`` says so, and the
loaded model warns and keeps its defaults until ``model.compile(optimizer=None, loss=...,
metrics=...)``: without the loss, neither the loss nor the metrics (chosen for that loss: its
outputs, its kind) are restored; without the metrics, the loss is and the loss's default metric
is logged. Reading builds nothing else: no
import, no code from the file.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

from wframe.losses import Outputs
from wframe.losses import registry as losses_registry
from wframe.metrics import registry as metrics_registry
from wframe.saving.config import ConfigError, fields_config, fields_from_config
from wframe.saving.errors import WeightsFileError

#: The metadata key.
KEY = "compile"
#: The deepest nesting of the metrics read (per output, a list, a metric).
_MAX_DEPTH = 3


# ----------------------------------------------------------------------------- writing
def compile_config(model: Any) -> str:
    """The ``"compile"`` metadata of ``model``: its loss and compiled metrics as JSON, the
    parts a file cannot hold (a user's function or class) left out and named in
    ``"unstored"``."""
    out: dict[str, Any] = {"loss": None, "metrics": None, "unstored": []}
    try:
        out["loss"] = _loss(model.loss)
    except ConfigError:
        out["unstored"].append("loss")
    try:
        out["metrics"] = _metrics(model.compiled_metrics)
    except ConfigError:
        out["unstored"].append("metrics")
    return json.dumps(out)


def _loss(loss: Any) -> dict[str, Any]:
    if type(loss) is Outputs:
        config = {
            "losses": [_loss(one) for one in loss.losses],
            "names": list(loss.names),
            "weights": [float(w) for w in loss.weights],
        }
        return {"class": "Outputs", "config": config}
    return _builtin(loss, losses_registry.CLASSES)


def _metrics(metrics: Any) -> Any:
    if metrics is None or isinstance(metrics, str):
        return metrics
    if isinstance(metrics, (list, tuple)):
        return [_metrics(m) for m in metrics]
    if isinstance(metrics, dict):
        return {"by_output": {str(k): _metrics(v) for k, v in metrics.items()}}
    return _builtin(metrics, metrics_registry.CLASSES)


def _builtin(obj: Any, classes: dict[str, type]) -> dict[str, Any]:
    """``{"class", "config"}`` of an instance of exactly one of ``classes``."""
    name = type(obj).__name__
    if classes.get(name) is not type(obj):
        raise ConfigError(f"{name} is not a built-in class")
    return {"class": name, "config": fields_config(obj)}


# ----------------------------------------------------------------------------- reading
def restore(model: Any, path: str, metadata: dict[str, str]) -> None:
    """Compile ``model`` (just loaded from ``path``) with the loss and metrics its file's
    metadata holds, checked as ``compile`` checks them; its optimizer is left as it is. A
    file without the entry (an older wframe's) changes nothing.

    Raises:
      WeightsFileError: the entry is malformed, names a class that is not built in, an
        option the class does not take, or a loss and metrics that do not fit the model.
    """
    raw = metadata.get(KEY)
    if raw is None:
        return
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or set(doc) != {"loss", "metrics", "unstored"}:
            raise ConfigError("expected an object with 'loss', 'metrics' and 'unstored'")
        unstored = doc["unstored"]
        if not isinstance(unstored, list) or not set(unstored) <= {"loss", "metrics"}:
            raise ConfigError(f"'unstored' must list 'loss' or 'metrics', got {unstored!r}")
        loss = model.loss if doc["loss"] is None else _read_loss(doc["loss"], "loss")
        metrics = _read_metrics(doc["metrics"], "metrics", 0)
    except (ValueError, TypeError, ConfigError) as e:  # (json's errors are ValueErrors)
        raise _error(path, f"its compile config (loss and metrics) is malformed: {e}") from None
    if "loss" in unstored:  # the metrics were chosen for that loss (its outputs, its kind)
        _warn_unstored(path, unstored)
        return
    before = (model.loss, model.compiled_metrics)
    model.loss, model.compiled_metrics = loss, metrics
    try:
        if isinstance(loss, Outputs) and tuple(loss.names) != tuple(model.output_names):
            raise ValueError(
                f"the loss is for the outputs {list(loss.names)}, the model's are "
                f"{list(model.output_names)}"
            )
        model.tracker(loss)  # the metrics against the outputs and the loss, as compile checks
    except (ValueError, TypeError) as e:
        model.loss, model.compiled_metrics = before
        raise _error(path, f"its loss and metrics do not fit the model: {e}") from None
    if unstored:
        _warn_unstored(path, unstored)


def _read_loss(d: Any, where: str) -> Any:
    cls, config = _class_and_config(d, {**losses_registry.CLASSES, "Outputs": Outputs}, where)
    if cls is not Outputs:
        return _build(cls, config, where)
    if set(config) != {"losses", "names", "weights"}:
        raise ConfigError(f"{where}: Outputs takes 'losses', 'names' and 'weights'")
    losses, names, weights = config["losses"], config["names"], config["weights"]
    if not (isinstance(losses, list) and isinstance(names, list) and isinstance(weights, list)):
        raise ConfigError(f"{where}: Outputs' 'losses', 'names' and 'weights' must be lists")
    if not all(isinstance(n, str) for n in names) or not all(
        type(w) in (int, float) for w in weights
    ):
        raise ConfigError(f"{where}: Outputs' names must be strings and weights numbers")
    parts = []
    for i, one in enumerate(losses):
        part = _read_loss(one, f"{where}.losses[{i}]")
        if isinstance(part, Outputs):
            raise ConfigError(f"{where}.losses[{i}]: an output's loss cannot be Outputs")
        parts.append(part)
    if not len(parts) == len(names) == len(weights):
        raise ConfigError(f"{where}: Outputs needs one loss, name and weight per output")
    return Outputs(losses=tuple(parts), names=tuple(names), weights=tuple(map(float, weights)))


def _read_metrics(value: Any, where: str, depth: int) -> Any:
    if value is None or isinstance(value, str):
        if isinstance(value, str):
            metrics_registry.get(value)  # an unknown name raises here, with the known ones
        return value
    if depth >= _MAX_DEPTH:
        raise ConfigError(f"{where}: nested deeper than metrics per output take")
    if isinstance(value, list):
        return [_read_metrics(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict) and set(value) == {"by_output"}:
        per = value["by_output"]
        if not isinstance(per, dict):
            raise ConfigError(f"{where}: 'by_output' must map output names to metrics")
        return {k: _read_metrics(v, f"{where}[{k!r}]", depth + 1) for k, v in per.items()}
    cls, config = _class_and_config(value, metrics_registry.CLASSES, where)
    return _build(cls, config, where)


def _class_and_config(d: Any, classes: dict[str, type], where: str) -> tuple[type, dict]:
    if not isinstance(d, dict) or set(d) != {"class", "config"}:
        raise ConfigError(f"{where}: expected {{'class': ..., 'config': {{...}}}}, got {d!r}")
    name, config = d["class"], d["config"]
    if not isinstance(name, str) or name not in classes:
        raise ConfigError(f"{where}: {name!r} is not one of the built-in {sorted(classes)}")
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: the config of {name} must be an object")
    return classes[name], config


def _build(cls: type, config: dict, where: str) -> Any:
    """``cls`` with ``config``'s options, each a plain value (a number, a string, a bool,
    ``None``, or a list of numbers)."""
    for key, value in config.items():
        plain = value is None or type(value) in (bool, int, float, str)
        if isinstance(value, list):
            plain = all(type(v) in (int, float) for v in value)
        if not plain:
            raise ConfigError(f"{where}.{key}: expected a plain value, got {value!r}")
    try:
        return cls(**fields_from_config(cls, config, where))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {cls.__name__}: {e}") from None


def _error(path: str, problem: str) -> WeightsFileError:
    fix = "load it with wf.load_model(path, compile=False) and compile the model in code"
    return WeightsFileError(f"{path}: {problem}; {fix}", path, (problem,))


def _warn_unstored(path: str, unstored: list[str]) -> None:
    """Say what the file could not hold; without the loss, nothing was restored."""
    what = " and ".join(f"its {part}" for part in unstored)
    kept = "loss and metrics" if "loss" in unstored else "metrics (the loss's own)"
    warnings.warn(
        f"{path}: the model was saved with {what} given as a function or a class of the user's, "
        f"which a file cannot hold; the loaded model has the default {kept} instead: set "
        "yours with model.compile(optimizer=None, loss=..., metrics=...) (which keeps the "
        "loaded optimizer)",
        UserWarning,
        stacklevel=3,
    )
