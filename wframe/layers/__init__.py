"""Layers: immutable descriptions whose parameters live in the model's params dict."""

from wframe.layers.base import Layer
from wframe.layers.combinators import Concatenate, Residual, Sequential
from wframe.layers.conv import AvgPool2D, Conv2D, GlobalAvgPool2D, MaxPool2D
from wframe.layers.core import Activation, Dropout, Flatten
from wframe.layers.dense import Dense
from wframe.layers.norm import BatchNorm, LayerNorm
from wframe.layers.recurrent import GRU, LSTM, SimpleRNN
from wframe.layers.registry import register

__all__ = [
    "GRU",
    "LSTM",
    "Activation",
    "AvgPool2D",
    "BatchNorm",
    "Concatenate",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "GlobalAvgPool2D",
    "Layer",
    "LayerNorm",
    "MaxPool2D",
    "Residual",
    "Sequential",
    "SimpleRNN",
    "register",
]
