"""Files: the safetensors reader and writer (:mod:`.io`), a model's weights (:mod:`.weights`),
configs (:mod:`.config`), whole models (:mod:`.model_file`), training checkpoints
(:mod:`.checkpoint`), and other frameworks' files told apart (:mod:`.formats`). They see a
model through its public surface only."""

from wframe.saving import checkpoint, config, formats, io, model_file, weights
from wframe.saving.config import (
    ConfigError,
    fields_config,
    fields_from_config,
    layer_config,
    layer_from_config,
    model_config,
    model_from_config,
)
from wframe.saving.io import WeightsFileError
from wframe.saving.model_file import load_model, save_model

__all__ = [
    "ConfigError",
    "WeightsFileError",
    "checkpoint",
    "config",
    "fields_config",
    "fields_from_config",
    "formats",
    "io",
    "layer_config",
    "layer_from_config",
    "load_model",
    "model_config",
    "model_file",
    "model_from_config",
    "save_model",
    "weights",
]
