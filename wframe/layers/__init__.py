"""Layers: immutable descriptions whose parameters live in the model's params dict."""

from wframe.layers.attention import MultiHeadAttention
from wframe.layers.base import Layer
from wframe.layers.bidirectional import Bidirectional
from wframe.layers.combinators import Concatenate, Residual, Sequential
from wframe.layers.conv import (
    AveragePooling2D,
    AvgPool2D,
    Conv2D,
    GlobalAveragePooling2D,
    GlobalAvgPool2D,
    MaxPool2D,
    MaxPooling2D,
)
from wframe.layers.conv1d import AveragePooling1D, AvgPool1D, Conv1D, MaxPool1D, MaxPooling1D
from wframe.layers.core import Activation, Dropout, Flatten, Permute, Reshape
from wframe.layers.dense import Dense
from wframe.layers.embedding import Embedding, PositionEmbedding
from wframe.layers.graph import Graph
from wframe.layers.merge import Add, Average, Maximum, Minimum, Multiply, Subtract
from wframe.layers.norm import (
    BatchNorm,
    BatchNormalization,
    LayerNorm,
    LayerNormalization,
    RMSNorm,
    RMSNormalization,
)
from wframe.layers.pool import (
    GlobalAveragePooling1D,
    GlobalAvgPool1D,
    GlobalMaxPool1D,
    GlobalMaxPool2D,
    GlobalMaxPooling1D,
    GlobalMaxPooling2D,
)
from wframe.layers.recurrent import GRU, LSTM, SimpleRNN
from wframe.layers.registry import register
from wframe.layers.symbolic import Input

__all__ = [
    "GRU",
    "LSTM",
    "Activation",
    "Add",
    "Average",
    "AveragePooling1D",
    "AveragePooling2D",
    "AvgPool1D",
    "AvgPool2D",
    "BatchNorm",
    "BatchNormalization",
    "Bidirectional",
    "Concatenate",
    "Conv1D",
    "Conv2D",
    "Dense",
    "Dropout",
    "Embedding",
    "Flatten",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAvgPool1D",
    "GlobalAvgPool2D",
    "GlobalMaxPool1D",
    "GlobalMaxPool2D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "Graph",
    "Input",
    "Layer",
    "LayerNorm",
    "LayerNormalization",
    "MaxPool1D",
    "MaxPool2D",
    "MaxPooling1D",
    "MaxPooling2D",
    "Maximum",
    "Minimum",
    "Multiply",
    "MultiHeadAttention",
    "Permute",
    "PositionEmbedding",
    "RMSNorm",
    "RMSNormalization",
    "Reshape",
    "Residual",
    "Sequential",
    "SimpleRNN",
    "Subtract",
    "register",
]
