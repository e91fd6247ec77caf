"""A small decoder-only transformer as a character language model, on the English text that
ships with every CPython (``pydoc_data/topics.py``), built with the functional API.

Token and position embeddings, blocks of [RMSNorm, causal multi-head attention, residual add,
LayerNorm, gelu MLP, residual add], a final norm and a Dense to the vocabulary. It trains on the
first 90% of the text and prints validation bits per character next to a unigram and a bigram
model's on the same split, then samples a continuation. The same seed gives the same initial
weights and dropout masks on every backend.

    python examples/transformer_chars.py                    # numpy (the default backend)
    WFRAME_BACKEND=jax python examples/transformer_chars.py
    python examples/transformer_chars.py --quick            # a seconds-long smoke run
"""

from __future__ import annotations

import argparse
import math
import time
from pydoc_data import topics

import numpy as np

import wframe as wf
from wframe.layers import (
    Add,
    Dense,
    Dropout,
    Embedding,
    LayerNorm,
    MultiHeadAttention,
    PositionEmbedding,
    RMSNorm,
)


def load_text() -> tuple[np.ndarray, list[str]]:
    """The text as integer ids, and the vocabulary (its distinct characters, sorted)."""
    text = "\n\n".join(topics.topics[k] for k in sorted(topics.topics))
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    return np.array([index[c] for c in text], dtype=np.int32), vocab


def windows(ids: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows: inputs ``ids[i : i + length]``, targets shifted by one."""
    n = (len(ids) - 1) // length
    x = ids[: n * length].reshape(n, length)
    y = ids[1 : n * length + 1].reshape(n, length)
    return x, y


def block(h, width: int, heads: int, dropout: float, i: int):
    """Pre-norm attention and MLP, each added back to the residual stream."""
    a = RMSNorm(name=f"attn_norm_{i}")(h)
    a = MultiHeadAttention(heads, width // heads, dropout=dropout, name=f"attn_{i}")(
        a, a, use_causal_mask=True
    )
    h = Add(name=f"attn_add_{i}")([h, a])
    m = LayerNorm(name=f"mlp_norm_{i}")(h)
    m = Dense(4 * width, activation="gelu", name=f"mlp_up_{i}")(m)
    m = Dense(width, name=f"mlp_down_{i}")(m)
    m = Dropout(dropout, name=f"mlp_drop_{i}")(m)
    return Add(name=f"mlp_add_{i}")([h, m])


def make_model(
    vocab: int, length: int, width: int, heads: int, blocks: int, dropout: float, seed: int
):
    tokens = wf.Input((length,), dtype="int32", name="tokens")
    h = Embedding(vocab, width, name="token_embedding")(tokens)
    h = Add(name="embed_add")([h, PositionEmbedding(length, name="position_embedding")(h)])
    for i in range(blocks):
        h = block(h, width, heads, dropout, i)
    logits = Dense(vocab, name="logits")(RMSNorm(name="final_norm")(h))
    return wf.Model(tokens, logits, seed=seed)


def ngram_bits(train: np.ndarray, val: np.ndarray, vocab: int) -> tuple[float, float]:
    """Validation bits per character of add-one-smoothed unigram and add-0.1 bigram models
    fitted on ``train``."""
    uni = np.bincount(train, minlength=vocab) + 1.0
    uni_bits = -np.mean(np.log2(uni[val] / uni.sum()))
    pairs = np.zeros((vocab, vocab))
    np.add.at(pairs, (train[:-1], train[1:]), 1.0)
    pairs += 0.1
    cond = pairs / pairs.sum(axis=1, keepdims=True)
    bi_bits = -np.mean(np.log2(cond[val[:-1], val[1:]]))
    return float(uni_bits), float(bi_bits)


def sample(model, prompt: np.ndarray, steps: int, length: int, temperature: float, seed: int):
    """Characters drawn one at a time from the model's softmax over its last ``length`` ids."""
    rng = np.random.default_rng(seed)
    ids = list(prompt)
    for _ in range(steps):
        window = np.array(ids[-length:], dtype=np.int32)
        pad = length - len(window)
        x = np.concatenate([np.zeros(pad, np.int32), window])[None]
        logits = np.asarray(wf.to_numpy(model.predict(x)))[0, -1]  # after the last real id
        p = np.exp((logits - logits.max()) / temperature)
        ids.append(int(rng.choice(len(p), p=p / p.sum())))
    return ids[len(prompt) :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny model on a slice of the text")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1)
    args = parser.parse_args()
    ids, vocab = load_text()
    if args.quick:
        ids = ids[:40_000]
        length, width, heads, blocks, epochs, dropout = 32, 32, 2, 1, 1, 0.0
    else:
        length, width, heads, blocks, epochs, dropout = 64, 128, 4, 2, 6, 0.1
    epochs = args.epochs or epochs
    cut = int(len(ids) * 0.9)
    train, val = ids[:cut], ids[cut:]
    x, y = windows(train, length)
    x, y = x[: len(x) // 32 * 32], y[: len(y) // 32 * 32]  # whole batches: one compiled step
    x_val, y_val = windows(val, length)
    model = make_model(len(vocab), length, width, heads, blocks, dropout, args.seed)
    model.compile(
        optimizer=wf.optimizers.adamw(3e-3 if args.quick else 1e-3), loss="softmax_cross_entropy"
    )
    start = time.perf_counter()
    model.fit(
        x, y, epochs=epochs, batch_size=32, validation_data=(x_val, y_val), verbose=args.verbose
    )
    seconds = time.perf_counter() - start
    val_bits = model.evaluate(x_val, y_val)["loss"] / math.log(2)
    uni_bits, bi_bits = ngram_bits(train, val, len(vocab))
    backend = model.backend.name
    print(f"backend {backend}: {model.count_params():,} params, {epochs} epochs in {seconds:.0f} s")
    print(
        f"backend {backend}: validation bits per character: transformer {val_bits:.3f}, "
        f"bigram {bi_bits:.3f}, unigram {uni_bits:.3f}"
    )
    prompt = val[:length]
    drawn = sample(model, prompt, 80 if args.quick else 300, length, 0.8, args.seed)
    print("".join(vocab[i] for i in prompt) + " >>> " + "".join(vocab[i] for i in drawn))


if __name__ == "__main__":
    main()
