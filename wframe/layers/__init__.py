"""Layers: immutable descriptions whose parameters live in the model's params dict."""

from wframe.layers.base import Layer
from wframe.layers.core import Activation, Flatten
from wframe.layers.dense import Dense

__all__ = ["Activation", "Dense", "Flatten", "Layer"]
