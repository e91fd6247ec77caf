"""The sequence kinds' references: PyTorch twins and plain JAX losses, from wframe's weights.

PyTorch (eager, the peer rows): ``attention`` is ``nn.MultiheadAttention(d, heads,
batch_first=True)`` called with a causal ``attn_mask``, ``is_causal=True`` and
``need_weights=False`` (so it runs ``scaled_dot_product_attention``'s causal kernel, what a
competent user writes); ``embedding`` is ``nn.Embedding`` then the mean over the steps and
``nn.Linear``; ``conv1d`` is ``nn.Conv1d(padding="same")`` + ReLU layers on (N, C, L) inputs,
the mean over the steps and ``nn.Linear``.

Plain JAX (``reference[jax]``, under :func:`wframe.bench.runners_reference.jax_runner`'s
``jax.jit`` of ``value_and_grad`` and optax): ``einsum`` projections with wframe's (Keras')
kernel shapes and ``jax.nn.dot_product_attention(..., is_causal=True)``, ``jnp.take``,
``lax.conv_general_dilated`` ("SAME", NWC), a LayerNorm written out, exact gelu.

Weight layouts (wframe -> PyTorch): attention ``query|key|value/W`` (d, heads, key_dim) ->
rows of ``in_proj_weight`` (3 * heads * key_dim, d) as ``W.reshape(d, -1).T``, their biases
-> ``in_proj_bias``, ``output/W`` (heads, key_dim, d) -> ``out_proj.weight`` as
``W.reshape(-1, d).T``; Conv1D ``W`` (k, cin, filters) -> (filters, cin, k); Dense ``W.T``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from wframe.bench.workloads import LN_EPS, Workload

#: The projections of an attention layer, in ``in_proj_weight``'s row order.
_QKV = ("query", "key", "value")


def torch_twin(w: Workload, p0: dict):
    """The ``nn.Module`` twin of ``w`` (attention, embedding or conv1d) holding ``p0``."""
    import torch

    nn, ps = torch.nn, list(p0.values())
    if w.kind == "attention":
        (steps, d), (heads, key_dim) = w.in_shape, w.hidden
        if heads * key_dim != d:
            raise ValueError(
                f"{w.name}: nn.MultiheadAttention's heads are d / heads wide; got heads "
                f"{heads} x key_dim {key_dim} != d {d}"
            )
        net, p = _causal_attention(torch, d, heads, steps), ps[0]
        arrays = [
            np.concatenate([p[n]["W"].reshape(d, -1).T for n in _QKV]),
            np.concatenate([p[n]["b"].reshape(-1) for n in _QKV]),
            p["output"]["W"].reshape(-1, d).T,
            p["output"]["b"],
        ]
    else:
        if w.kind == "embedding":
            body, steps_axis = nn.Embedding(w.vocab, w.hidden[0]), 1
            arrays = [ps[0]["embeddings"]]
        else:
            c, mods = w.in_shape[1], []
            for p in ps[:-1]:
                kernel, _, k = p["W"].shape
                mods += [nn.Conv1d(c, k, kernel, padding="same"), nn.ReLU()]
                c = k
            body, steps_axis = nn.Sequential(*mods), 2
            arrays = [a for p in ps[:-1] for a in (p["W"].transpose(2, 1, 0), p["b"])]
        net = _pooled(torch, body, nn.Linear(ps[-1]["W"].shape[0], w.classes), steps_axis)
        arrays += [ps[-1]["W"].T, ps[-1]["b"]]
    keys = list(net.state_dict())
    if len(keys) != len(arrays):
        raise ValueError(f"torch twin of {w.name}: {len(keys)} tensors, wframe gave {len(arrays)}")
    state = {
        k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in zip(keys, arrays, strict=True)
    }
    net.load_state_dict(state)
    return net


def torch_input(w: Workload, x: np.ndarray) -> np.ndarray:
    """``x`` in the twin's layout: (N, C, L) for conv1d, as it is otherwise."""
    return np.ascontiguousarray(x.transpose(0, 2, 1)) if w.kind == "conv1d" else x


def _causal_attention(torch, d: int, heads: int, steps: int):
    class CausalSelfAttention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = torch.nn.MultiheadAttention(d, heads, batch_first=True)
            mask = torch.ones(steps, steps, dtype=torch.bool).triu(1)  # True: may not attend
            self.register_buffer("mask", mask, persistent=False)

        def forward(self, x):
            mask = self.mask[: x.shape[1], : x.shape[1]]
            return self.mha(x, x, x, attn_mask=mask, is_causal=True, need_weights=False)[0]

    return CausalSelfAttention()


def _pooled(torch, body, head, steps_axis: int):
    class Pooled(torch.nn.Module):
        """``head(mean over the steps of body(x))``."""

        def __init__(self):
            super().__init__()
            self.body, self.head = body, head

        def forward(self, x):
            return self.head(self.body(x).mean(dim=steps_axis))

    return Pooled()


# ------------------------------------------------------------------ plain JAX
def jax_loss_fn(w: Workload) -> Callable:
    """``loss(params, x, y) -> (loss, output)`` of ``w`` in plain JAX: mse (attention) or the
    mean softmax cross-entropy (over every position for the transformer). ``params`` is the
    list of wframe's weighted layers' dicts, in the model's order."""
    import jax.numpy as jnp
    import optax

    forward = _jax_forward(w)

    def loss(ps, x, y):
        z = forward(ps, x)
        if w.loss == "mse":
            return jnp.mean(jnp.square(z - y)), z
        return optax.softmax_cross_entropy_with_integer_labels(z, y).mean(), z

    return loss


def _jax_forward(w: Workload) -> Callable:
    import jax
    import jax.numpy as jnp
    from jax import lax

    def dense(p, h):
        return h @ p["W"] + p["b"]

    def attention(p, h):
        q, k, v = (jnp.einsum("btd,dhk->bthk", h, p[n]["W"]) + p[n]["b"] for n in _QKV)
        o = jax.nn.dot_product_attention(q, k, v, is_causal=True)
        return jnp.einsum("bthk,hko->bto", o, p["output"]["W"]) + p["output"]["b"]

    def layer_norm(p, h):
        mean = h.mean(axis=-1, keepdims=True)
        var = jnp.square(h - mean).mean(axis=-1, keepdims=True)
        return (h - mean) * lax.rsqrt(var + LN_EPS) * p["gamma"] + p["beta"]

    def forward(ps, x):
        if w.kind == "attention":
            return attention(ps[0], x)
        if w.kind == "embedding":
            return dense(ps[1], jnp.take(ps[0]["embeddings"], x, axis=0).mean(axis=1))
        if w.kind == "conv1d":
            h, dims = x, ("NWC", "WIO", "NWC")
            for p in ps[:-1]:
                h = lax.conv_general_dilated(h, p["W"], (1,), "SAME", dimension_numbers=dims)
                h = jax.nn.relu(h + p["b"])
            return dense(ps[-1], h.mean(axis=1))
        emb, pos, *blocks, norm, head = ps  # transformer: 5 weighted layers a block
        h = jnp.take(emb["embeddings"], x, axis=0) + pos["embeddings"][: x.shape[1]]
        for i in range(0, len(blocks), 5):
            ln1, att, ln2, up, down = blocks[i : i + 5]
            h = h + attention(att, layer_norm(ln1, h))
            up_h = jax.nn.gelu(dense(up, layer_norm(ln2, h)), approximate=False)
            h = h + dense(down, up_h)
        return dense(head, layer_norm(norm, h))

    return forward
