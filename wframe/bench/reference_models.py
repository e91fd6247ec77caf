"""The references' models, written out: NumPy/CuPy forward and backward per model, and the
plain JAX forward and loss.

NumPy/CuPy (``xp``): im2col convolution and one matmul, 2x2 max pooling by a reshape, LSTM and GRU
(Keras' gate orders i, f, c, o and z, r, h; the GRU's reset applied after the matmul) with
backprop through time. JAX: ``lax.conv_general_dilated``, ``lax.reduce_window``, a ``lax.scan``
cell with ``jax.nn.sigmoid``. Params are lists of dicts in layer order, as wframe names them
(``W``, ``b``; ``W_x``, ``W_h``, ``b``, ``b_h``).
"""

from __future__ import annotations

from collections.abc import Callable

from wframe.bench import reference_seq
from wframe.bench.workloads import HAND_WRITTEN, Workload


# ------------------------------------------------------------------ NumPy / CuPy
def _sig(xp, a):
    return 0.5 + 0.5 * xp.tanh(0.5 * a)  # the logistic function, without exp overflow


def _mlp(xp, ps, x):
    acts = [x]
    for i, p in enumerate(ps):
        z = acts[-1] @ p["W"]
        z += p["b"]
        acts.append(xp.maximum(z, 0, out=z) if i < len(ps) - 1 else z)

    def back(d):
        grads = [None] * len(ps)
        for i in range(len(ps) - 1, -1, -1):
            grads[i] = {"W": acts[i].T @ d, "b": d.sum(axis=0)}
            if i:
                d = d @ ps[i]["W"].T
                d *= acts[i] > 0
        return grads

    return acts[-1], back


def _conv_relu(xp, x, W, b, need_dx):
    """3x3-style valid convolution (NHWC, HWIO) by im2col and one matmul, then relu."""
    kh, kw, c, o = W.shape
    n, hi, wi, _ = x.shape
    ho, wo = hi - kh + 1, wi - kw + 1
    cols = xp.empty((n, ho, wo, kh, kw, c), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j, :] = x[:, i : i + ho, j : j + wo, :]
    cols, W2 = cols.reshape(n * ho * wo, kh * kw * c), W.reshape(kh * kw * c, o)
    z = cols @ W2
    z += b
    y = xp.maximum(z, 0, out=z).reshape(n, ho, wo, o)

    def back(dy):
        dz = (dy * (y > 0)).reshape(-1, o)
        grads = {"W": (cols.T @ dz).reshape(W.shape), "b": dz.sum(axis=0)}
        if not need_dx:
            return grads, None
        dcols, dx = (dz @ W2.T).reshape(n, ho, wo, kh, kw, c), xp.zeros_like(x)
        for i in range(kh):
            for j in range(kw):
                dx[:, i : i + ho, j : j + wo, :] += dcols[:, :, :, i, j, :]
        return grads, dx

    return y, back


def _cnn(xp, ps, x):
    backs, h = [], x
    for i, p in enumerate(ps[:-1]):
        h, back = _conv_relu(xp, h, p["W"], p["b"], need_dx=i > 0)
        backs.append(back)
    n, hh, ww, c = h.shape
    r = h[:, : hh // 2 * 2, : ww // 2 * 2].reshape(n, hh // 2, 2, ww // 2, 2, c)
    pooled = r.max(axis=(2, 4))
    flat, dense = pooled.reshape(n, -1), ps[-1]

    def back(d):
        grads = [{"W": flat.T @ d, "b": d.sum(axis=0)}]
        dm = (d @ dense["W"].T).reshape(pooled.shape)[:, :, None, :, None]
        dh = xp.zeros_like(h)  # the max of each window gets the gradient (ties only at relu 0)
        dh[:, : hh // 2 * 2, : ww // 2 * 2] = ((r == pooled[:, :, None, :, None]) * dm).reshape(
            n, hh // 2 * 2, ww // 2 * 2, c
        )
        for bk in reversed(backs):
            g, dh = bk(dh)
            grads.insert(0, g)
        return grads

    return flat @ dense["W"] + dense["b"], back


def _rnn(xp, ps, x, lstm: bool):
    """LSTM (gates i, f, c, o) or GRU (z, r, h; reset after the matmul), last h -> dense."""
    cell, dense = ps
    n, steps, feats = x.shape
    u = cell["W_h"].shape[0]
    W_h = cell["W_h"]
    x_tm = x.transpose(1, 0, 2).reshape(steps * n, feats)  # time-major rows
    zx = (x_tm @ cell["W_x"] + cell["b"]).reshape(steps, n, -1)
    h, c, cache = xp.zeros((n, u), dtype=x.dtype), xp.zeros((n, u), dtype=x.dtype), []
    for t in range(steps):
        if lstm:
            z = zx[t] + h @ W_h
            i, f, o = _sig(xp, z[:, :u]), _sig(xp, z[:, u : 2 * u]), _sig(xp, z[:, 3 * u :])
            g = xp.tanh(z[:, 2 * u : 3 * u])
            c_new = f * c + i * g
            tc = xp.tanh(c_new)
            cache.append((h, c, i, f, g, o, tc))
            h, c = o * tc, c_new
        else:
            rec = h @ W_h + cell["b_h"]
            z = _sig(xp, zx[t, :, :u] + rec[:, :u])
            r = _sig(xp, zx[t, :, u : 2 * u] + rec[:, u : 2 * u])
            nn = xp.tanh(zx[t, :, 2 * u :] + r * rec[:, 2 * u :])
            cache.append((h, z, r, nn, rec[:, 2 * u :]))
            h = z * h + (1 - z) * nn

    def back(d):
        grad_dense = {"W": h.T @ d, "b": d.sum(axis=0)}
        dh, dc = d @ dense["W"].T, xp.zeros((n, u), dtype=x.dtype)
        dzx = xp.empty_like(zx)
        drec = dzx if lstm else xp.empty_like(zx)  # LSTM: the same pre-activations
        for t in range(steps - 1, -1, -1):
            if lstm:
                _, c_prev, i, f, g, o, tc = cache[t]
                dc = dc + dh * o * (1 - tc * tc)
                dzx[t, :, :u], dzx[t, :, u : 2 * u] = (
                    dc * g * i * (1 - i),
                    dc * c_prev * f * (1 - f),
                )
                dzx[t, :, 2 * u : 3 * u], dzx[t, :, 3 * u :] = (
                    dc * i * (1 - g * g),
                    dh * tc * o * (1 - o),
                )
                dh, dc = dzx[t] @ W_h.T, dc * f
            else:
                h_prev, z, r, nn, hh = cache[t]
                dn = dh * (1 - z) * (1 - nn * nn)
                dz, dr = dh * (h_prev - nn) * z * (1 - z), dn * hh * r * (1 - r)
                dzx[t, :, :u], dzx[t, :, u : 2 * u], dzx[t, :, 2 * u :] = dz, dr, dn
                drec[t, :, :u], drec[t, :, u : 2 * u], drec[t, :, 2 * u :] = dz, dr, dn * r
                dh = dh * z + drec[t] @ W_h.T
        h_prev = xp.stack([entry[0] for entry in cache]).reshape(steps * n, u)
        dzx2, drec2 = dzx.reshape(steps * n, -1), drec.reshape(steps * n, -1)
        grads = {"W_x": x_tm.T @ dzx2, "W_h": h_prev.T @ drec2, "b": dzx2.sum(axis=0)}
        if not lstm:
            grads["b_h"] = drec2.sum(axis=0)
        return [grads, grad_dense]

    return h @ dense["W"] + dense["b"], back


#: ``forward(xp, params, x) -> (logits, backprop)``, ``backprop(dlogits) -> grads`` per kind.
FORWARD = {
    "mlp": _mlp,
    "cnn": _cnn,
    "lstm": lambda xp, ps, x: _rnn(xp, ps, x, True),
    "gru": lambda xp, ps, x: _rnn(xp, ps, x, False),
}


# ------------------------------------------------------------------ JAX
def jax_loss_fn(w: Workload) -> Callable:
    """``loss(params, x, y) -> (loss, logits)``: the plain JAX forward and mean softmax
    cross-entropy, the logits as ``value_and_grad(..., has_aux=True)``'s aux (for a metric);
    the sequence kinds' own loss (:func:`wframe.bench.reference_seq.jax_loss_fn`)."""
    if w.kind not in HAND_WRITTEN:
        return reference_seq.jax_loss_fn(w)
    import jax
    import jax.numpy as jnp
    import optax
    from jax import lax

    def logits(ps, x):
        h = x
        if w.kind == "mlp":
            for p in ps[:-1]:
                h = jax.nn.relu(h @ p["W"] + p["b"])
        elif w.kind == "cnn":
            for p in ps[:-1]:
                dims = ("NHWC", "HWIO", "NHWC")
                h = lax.conv_general_dilated(h, p["W"], (1, 1), "VALID", dimension_numbers=dims)
                h = jax.nn.relu(h + p["b"])
            h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
            h = h.reshape(h.shape[0], -1)
        else:
            cell, u = ps[0], ps[0]["W_h"].shape[0]
            zx = jnp.swapaxes(x @ cell["W_x"] + cell["b"], 0, 1)
            zeros = jnp.zeros((x.shape[0], u), x.dtype)

            def lstm(carry, z):
                h, c = carry
                i, f, g, o = jnp.split(z + h @ cell["W_h"], 4, axis=-1)
                c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
                h = jax.nn.sigmoid(o) * jnp.tanh(c)
                return (h, c), None

            def gru(carry, zx_t):
                (h,) = carry
                xz, xr, xh = jnp.split(zx_t, 3, axis=-1)
                hz, hr, hh = jnp.split(h @ cell["W_h"] + cell["b_h"], 3, axis=-1)
                z, r = jax.nn.sigmoid(xz + hz), jax.nn.sigmoid(xr + hr)
                return (z * h + (1 - z) * jnp.tanh(xh + r * hh),), None

            body, carry = (lstm, (zeros, zeros)) if w.kind == "lstm" else (gru, (zeros,))
            h = lax.scan(body, carry, zx)[0][0]
        return h @ ps[-1]["W"] + ps[-1]["b"]

    def loss(ps, x, y):
        z = logits(ps, x)
        return optax.softmax_cross_entropy_with_integer_labels(z, y).mean(), z

    return loss
