"""The recurrent gates of selective layer update (SkipNet-style, as E2-Train uses them).

Gate b sees the global average of its block's input (N, C_b): a 1×1 conv (per block) embeds it in
``width`` channels, one LSTM(width → width) shared by all gates carries its state from gate to
gate, a shared linear head and a sigmoid give p (N,). Forward and backward (through the LSTM's
sequence of gates) are written out in numpy; the gate network is tiny next to the CNN.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass
class GateCache:
    pooled: np.ndarray
    embedded: np.ndarray
    h_prev: np.ndarray
    c_prev: np.ndarray
    gates: np.ndarray  # i, f, g, o after their nonlinearities (N, 4·width)
    c: np.ndarray
    h: np.ndarray
    p: np.ndarray


@dataclass
class GateRun:
    """Everything one iteration's gates computed, for their backward pass."""

    caches: list[GateCache] = field(default_factory=list)


def gate_parameters(channels: list[int], width: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Parameters by name (``slu.embed{b}.w`` …); the head's bias starts at +2 so gates begin open."""
    params = {}
    for b, c in enumerate(channels):
        params[f"slu.embed{b}.w"] = (rng.standard_normal((width, c)) / np.sqrt(c)).astype(np.float32)
        params[f"slu.embed{b}.b"] = np.zeros(width, np.float32)
    params["slu.lstm.w"] = (rng.standard_normal((4 * width, 2 * width)) / np.sqrt(2 * width)).astype(np.float32)
    params["slu.lstm.b"] = np.zeros(4 * width, np.float32)
    params["slu.head.w"] = (rng.standard_normal((1, width)) / np.sqrt(width)).astype(np.float32)
    params["slu.head.b"] = np.full(1, 2.0, np.float32)
    return params


def gate_forward(params, b: int, pooled: np.ndarray, h: np.ndarray, c: np.ndarray, run: GateRun | None):
    """p (N,) of gate ``b`` and the LSTM state after it."""
    width = params["slu.head.w"].shape[1]
    embedded = pooled @ params[f"slu.embed{b}.w"].T + params[f"slu.embed{b}.b"]
    z = np.concatenate([embedded, h], axis=1) @ params["slu.lstm.w"].T + params["slu.lstm.b"]
    i, f, o = _sigmoid(z[:, :width]), _sigmoid(z[:, width : 2 * width]), _sigmoid(z[:, 3 * width :])
    g = np.tanh(z[:, 2 * width : 3 * width])
    c_new = f * c + i * g
    h_new = o * np.tanh(c_new)
    p = _sigmoid(h_new @ params["slu.head.w"].T + params["slu.head.b"])[:, 0]
    if run is not None:
        run.caches.append(GateCache(pooled, embedded, h, c, np.concatenate([i, f, g, o], axis=1), c_new, h_new, p))
    return p.astype(pooled.dtype), h_new.astype(pooled.dtype), c_new.astype(pooled.dtype)


def gate_backward(params, run: GateRun, dp: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Gradients of every gate parameter given dL/dp of each gate (back through the LSTM sequence)."""
    width = params["slu.head.w"].shape[1]
    grads = {name: np.zeros_like(value) for name, value in params.items()}
    n = run.caches[0].pooled.shape[0] if run.caches else 0
    dh_next, dc_next = np.zeros((n, width)), np.zeros((n, width))
    for b in reversed(range(len(run.caches))):
        cache = run.caches[b]
        dz_head = (dp[b] * cache.p * (1 - cache.p))[:, None]  # sigmoid
        grads["slu.head.w"] += dz_head.T @ cache.h
        grads["slu.head.b"] += dz_head.sum(axis=0)
        dh = dz_head @ params["slu.head.w"] + dh_next
        i, f, g, o = (cache.gates[:, k * width : (k + 1) * width] for k in range(4))
        tanh_c = np.tanh(cache.c)
        dc = dh * o * (1 - tanh_c**2) + dc_next
        dz = np.concatenate([dc * g * i * (1 - i), dc * cache.c_prev * f * (1 - f), dc * i * (1 - g**2),
                             dh * tanh_c * o * (1 - o)], axis=1)  # fmt: skip
        inputs = np.concatenate([cache.embedded, cache.h_prev], axis=1)
        grads["slu.lstm.w"] += dz.T @ inputs
        grads["slu.lstm.b"] += dz.sum(axis=0)
        dinputs = dz @ params["slu.lstm.w"]
        dembedded, dh_next = dinputs[:, :width], dinputs[:, width:]
        dc_next = dc * f
        grads[f"slu.embed{b}.w"] += dembedded.T @ cache.pooled
        grads[f"slu.embed{b}.b"] += dembedded.sum(axis=0)
    return {name: g.astype(params[name].dtype) for name, g in grads.items()}
