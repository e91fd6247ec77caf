"""wframe.transfer.torch_layers: stacked and bidirectional RNNs, Embedding, Conv1d, RMSNorm,
LayerNorm and MultiheadAttention against PyTorch (outputs to 1e-5, gradients, round trips)."""

from __future__ import annotations

import numpy as np
import pytest

import wframe as wf
from wframe import transfer
from wframe.layers import GRU, LSTM, Bidirectional, Dense, LayerNorm, SimpleRNN

torch = pytest.importorskip("torch")
nn = torch.nn

from _torch_twins import Recurrent as _Recurrent  # noqa: E402
from _torch_twins import flat_params as _flat  # noqa: E402


class _BiRecurrent(nn.Module):
    """A bidirectional ``rnn`` then ``fc`` on the last layer's two final states ``h_n[-2:]``:
    wframe's Bidirectional with return_sequences=False (not ``output[:, -1]``)."""

    def __init__(self, rnn, classes=3):
        super().__init__()
        self.rnn, self.fc = rnn, nn.Linear(2 * rnn.hidden_size, classes)

    def forward(self, x):
        h_n = self.rnn(x)[1]
        h_n = h_n[0] if isinstance(h_n, tuple) else h_n  # LSTM: (h_n, c_n)
        return self.fc(torch.cat([h_n[-2], h_n[-1]], dim=-1))


def _stacked(kind):
    """A two-layer torch module against two wframe layers (Bidirectional ones for "bi")."""
    if kind == "bigru":
        twin = _BiRecurrent(nn.GRU(5, 4, num_layers=2, bidirectional=True, batch_first=True))
        layers = [Bidirectional(GRU(4, return_sequences=True)), Bidirectional(GRU(4))]
    elif kind == "bilstm":
        twin = _BiRecurrent(nn.LSTM(5, 4, bidirectional=True, batch_first=True))
        layers = [Bidirectional(LSTM(4))]
    else:
        twin = _Recurrent(nn.LSTM(5, 4, num_layers=2, batch_first=True))
        layers = [LSTM(4, return_sequences=True), LSTM(4)]
    return twin, wf.Sequential([*layers, Dense(3)], seed=1), (None, 6, 5)


def _out(twin, x):
    with torch.no_grad():
        return twin(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("kind", ["lstm2", "bigru", "bilstm"])
def test_stacked_twins_match_and_round_trip(backend, kind):
    torch.manual_seed(0)
    twin, model, shape = _stacked(kind)
    model.build(shape)
    transfer.from_torch(model, twin.state_dict())
    x = np.random.default_rng(0).normal(size=(3, *shape[1:])).astype("float32")
    want = _out(twin, x)
    np.testing.assert_allclose(wf.to_numpy(model.predict(x)), want, rtol=1e-5, atol=1e-6)
    # One module per wframe layer, in torch's order: the twin takes them zipped to its names.
    sd = transfer.to_torch_state_dict(model)
    fresh = _stacked(kind)[0]
    fresh.load_state_dict(
        {k: torch.from_numpy(v) for k, v in zip(fresh.state_dict(), sd.values(), strict=True)}
    )
    np.testing.assert_allclose(_out(fresh, x), want, atol=1e-6)
    other = wf.Sequential(list(model.layers), seed=7).build(shape)
    transfer.from_torch(other, sd)
    a, b = _flat(model.params), _flat(other.params)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- stacked RNNs
def _bigru():
    torch.manual_seed(0)
    twin = _BiRecurrent(nn.GRU(8, 16, num_layers=2, bidirectional=True, batch_first=True), 4)
    with torch.no_grad():  # b_ih != b_hh, so a misplaced GRU bias shows
        for name, p in twin.rnn.named_parameters():
            if name.startswith("bias_hh"):
                p.uniform_(-1, 1)
    layers = [Bidirectional(GRU(16, return_sequences=True)), Bidirectional(GRU(16)), Dense(4)]
    return twin, wf.Sequential(layers, seed=1).build((None, 5, 8))


def test_bidirectional_two_layer_gru_outputs_and_gradients_match_torch(backend):
    twin, model = _bigru()
    report = transfer.from_torch(model, twin)
    loaded = {row[0]: row[2] for row in report.loaded}
    assert loaded["rnn.weight_hh_l1_reverse"] == "bidirectional_1/backward/W_h"
    assert loaded["rnn.bias_ih_l0"] == "bidirectional_0/forward/b"
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 5, 8)).astype("float32"), np.array([0, 3, 1])
    np.testing.assert_allclose(wf.to_numpy(model.predict(x)), _out(twin, x), rtol=1e-5, atol=1e-6)
    value, grads = model.value_and_grad(x, y)
    loss = nn.functional.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    np.testing.assert_allclose(float(value), loss.item(), rtol=1e-5)
    # Every GRU conversion is a transposition or a permutation (no sums), so the torch
    # gradients convert to wframe's layout as the weights do.
    expect = wf.Sequential(list(model.layers)).build((None, 5, 8))
    transfer.from_torch(expect, {k: p.grad for k, p in twin.named_parameters()})
    got, want = _flat(grads), _flat(expect.params)
    assert got.keys() == want.keys() and len(got) == 2 * 2 * 4 + 2
    for k in got:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_stacked_modules_map_by_lists_and_refuse_mismatches():
    twin, model = _bigru()
    sd = twin.state_dict()
    with pytest.raises(ValueError, match=r"gives 1 layer names, but the module holds 2"):
        transfer.from_torch(model, sd, {"rnn": "bidirectional_1"})
    report = transfer.from_torch(
        model, sd, {"rnn": ["bidirectional_0", "bidirectional_1"], "fc": "dense_0"}
    )
    assert not report.missing and len(report.loaded) == 2 * 2 * 4 + 2
    one_way = wf.Sequential([GRU(16, return_sequences=True), GRU(16), Dense(4)]).build((None, 5, 8))
    with pytest.raises(ValueError, match="a bidirectional GRU cannot fill a GRU"):
        transfer.from_torch(one_way, sd)
    with pytest.raises(ValueError, match="a GRU cannot fill a Bidirectional"):
        transfer.from_torch(model, nn.GRU(8, 16, batch_first=True).state_dict(), strict=False)
    mixed = wf.Sequential([Bidirectional(GRU(2), backward_layer=LSTM(2))]).build((None, 3, 2))
    with pytest.raises(ValueError, match="has no PyTorch counterpart"):
        transfer.to_torch_state_dict(mixed)
    relu = wf.Sequential([SimpleRNN(3, "relu")]).build((None, 3, 2))
    with pytest.raises(ValueError, match="nonlinearity='tanh' differs from 'relu'"):
        transfer.from_torch(relu, nn.RNN(2, 3, batch_first=True))


# ----------------------------------------------------------------------------- text layers
class _Text(nn.Module):
    """Embedding, Conv1d, RMSNorm, self-attention, LayerNorm, mean over time, Linear."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.conv = nn.Conv1d(6, 8, 3, padding=1)  # (N, C, L): transposed around it
        self.norm = nn.RMSNorm(8, eps=1e-6)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.ln = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, ids):
        h = self.norm(self.conv(self.emb(ids).transpose(1, 2)).transpose(1, 2))
        h = self.ln(self.attn(h, h, h, need_weights=False)[0])
        return self.fc(h.mean(dim=1))


def _text():
    torch.manual_seed(0)
    twin = _Text().eval()
    with torch.no_grad():  # no weight at its trivial init (ones, zeros)
        for name, p in twin.named_parameters():
            if "norm" in name or name.startswith("ln") or "bias" in name:
                p.uniform_(-1, 1)
    layers = [
        wf.layers.Embedding(11, 6),
        wf.layers.Conv1D(8, 3, padding="same"),
        wf.layers.RMSNorm(epsilon=1e-6),
        wf.layers.MultiHeadAttention(2, 4),
        LayerNorm(),
        wf.layers.GlobalAvgPool1D(),
        Dense(3),
    ]
    return twin, wf.Sequential(layers, seed=1).build((None, 7))


def test_text_layers_match_torch_and_round_trip(backend):
    twin, model = _text()
    report = transfer.from_torch(model, twin)
    loaded = {row[0]: row[2] for row in report.loaded}
    assert loaded["attn.out_proj.weight"] == "multi_head_attention_0/output/W"
    assert loaded["norm.weight"] == "rms_norm_0/scale"
    ids = np.random.default_rng(0).integers(0, 11, (4, 7))
    with torch.no_grad():
        want = twin(torch.from_numpy(ids)).numpy()
    got = wf.to_numpy(model.predict(ids))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    sd = transfer.to_torch_state_dict(model)
    assert list(sd)[:5] == ["0.weight", "1.weight", "1.bias", "2.weight", "3.in_proj_weight"]
    fresh = _Text().eval()
    fresh.load_state_dict(
        {k: torch.from_numpy(v) for k, v in zip(fresh.state_dict(), sd.values(), strict=True)}
    )
    with torch.no_grad():
        np.testing.assert_allclose(fresh(torch.from_numpy(ids)).numpy(), want, atol=1e-6)
    other = wf.Sequential(list(model.layers), seed=7).build((None, 7))
    transfer.from_torch(other, sd)  # a bare state dict: out_proj joins its attention module
    a, b = _flat(model.params), _flat(other.params)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_cross_attention_with_other_key_dims_in_a_graph(backend):
    torch.manual_seed(0)
    twin = nn.MultiheadAttention(8, 2, kdim=5, vdim=5, batch_first=True)
    with torch.no_grad():
        twin.in_proj_bias.uniform_(-1, 1)
    q, kv = wf.Input((4, 8)), wf.Input((6, 5))
    model = wf.Model([q, kv], wf.layers.MultiHeadAttention(2, 4)(q, kv))
    transfer.from_torch(model, twin)
    rng = np.random.default_rng(0)
    xq, xkv = rng.normal(size=(3, 4, 8)).astype("float32"), rng.normal(size=(3, 6, 5))
    xkv = xkv.astype("float32")
    with torch.no_grad():
        tq, tkv = torch.from_numpy(xq), torch.from_numpy(xkv)
        want = twin(tq, tkv, tkv, need_weights=False)[0].numpy()
    got = wf.to_numpy(model.predict([xq, xkv]))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    sd = transfer.to_torch_state_dict(model)
    assert [k.split(".", 1)[1] for k in sd] == list(twin.state_dict())


def test_text_layer_module_checks():
    ids_model = wf.Sequential([wf.layers.Embedding(5, 2)]).build((None, 3))
    with pytest.raises(ValueError, match="max_norm=1.0 renormalizes rows"):
        transfer.from_torch(ids_model, nn.Sequential(nn.Embedding(5, 2, max_norm=1.0)))
    conv = wf.Sequential([wf.layers.Conv1D(2, 3)]).build((None, 6, 4))
    with pytest.raises(ValueError, match="padding=.1,. differs from padding='valid'"):
        transfer.from_torch(conv, nn.Sequential(nn.Conv1d(4, 2, 3, padding=1)))
    same = wf.Sequential([wf.layers.Conv1D(2, 4, padding="same")]).build((None, 6, 4))
    with pytest.raises(ValueError, match="differs from padding='same'"):
        transfer.from_torch(same, nn.Sequential(nn.Conv1d(4, 2, 4, padding=2)))
    norm = wf.Sequential([wf.layers.RMSNorm()]).build((None, 4))
    with pytest.raises(ValueError, match="eps=None differs from epsilon=1e-06"):
        transfer.from_torch(norm, nn.Sequential(nn.RMSNorm(4)))
    attn = wf.Sequential([wf.layers.MultiHeadAttention(4, 2)]).build((None, 3, 8))
    with pytest.raises(ValueError, match="num_heads=2 differs from 4"):
        transfer.from_torch(attn, nn.Sequential(nn.MultiheadAttention(8, 2)))
