"""What the PyTorch-import tests share: host copies of a model's params, a recurrent twin."""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe.tree import flatten

torch = pytest.importorskip("torch")
nn = torch.nn


def flat_params(tree) -> dict[str, np.ndarray]:
    """``{"dense_0/W": host array}`` of a params tree."""
    return {k: np.array(wf.to_numpy(a)) for k, a in flatten(tree)}


class Recurrent(nn.Module):
    """``rnn`` (batch_first) then ``fc`` on the last step, as wframe's return_sequences=False."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn, self.fc = rnn, nn.Linear(rnn.hidden_size, 3)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][:, -1])
