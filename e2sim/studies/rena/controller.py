"""RENA's controller on numpy: an LSTM reads the embedding of the current network (one feature
vector per unit) and three heads choose an edit — its type (scale, insert, remove), the unit it
applies to (a pointer over the LSTM's states) and its option (how to scale, what to insert) —
each a softmax over the choices the search space allows (invalid ones masked). Trained with
REINFORCE: loss = −(reward − baseline) · log π(edit) − β · entropy of the three choices, its
gradients by backpropagation through time (checked against finite differences in the tests),
Adam updates, and a moving-average baseline.

Zhou et al. 2018 embed the network with a bidirectional LSTM and use separate policy networks per
edit type; here one forward LSTM's states serve every head (an edit at unit t sees units 1..t and,
through the type head, the whole network's summary)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Params = dict[str, np.ndarray]


@dataclass(frozen=True)
class Edit:
    """One proposal: edit ``kind`` (index into the kinds), at unit ``position``, with ``option``."""

    kind: int
    position: int
    option: int


def allowed_tree(edits: Sequence[Edit]) -> dict[int, dict[int, list[int]]]:
    """kind → position → options, from the list of valid edits."""
    tree: dict[int, dict[int, list[int]]] = {}
    for e in edits:
        tree.setdefault(e.kind, {}).setdefault(e.position, []).append(e.option)
    return tree


def init_params(features: int, hidden: int, kinds: int, options: int, rng: np.random.Generator) -> Params:
    scale = 1.0 / np.sqrt(features + hidden)
    return {
        "W": rng.normal(0.0, scale, (4 * hidden, features + hidden)),
        "b": np.concatenate([np.zeros(hidden), np.ones(hidden), np.zeros(2 * hidden)]),  # forget-gate bias 1
        # heads start at zero: the first proposals are uniform over each allowed choice
        "Wk": np.zeros((kinds, hidden)), "bk": np.zeros(kinds),
        "Wp": np.zeros((kinds, hidden)),  # a pointer: no bias (one per kind would shift every position alike)
        "Wo": np.zeros((kinds, options, hidden)), "bo": np.zeros((kinds, options)),
    }  # fmt: skip


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def lstm_forward(p: Params, x: np.ndarray) -> tuple[np.ndarray, list]:
    """States h (T × H) of the LSTM over the rows of ``x`` (T × D), and the cache for backward."""
    hidden = p["b"].size // 4
    h, c = np.zeros(hidden), np.zeros(hidden)
    states, cache = [], []
    for row in x:
        z = p["W"] @ np.concatenate([row, h]) + p["b"]
        i, f, o = _sigmoid(z[:hidden]), _sigmoid(z[hidden : 2 * hidden]), _sigmoid(z[2 * hidden : 3 * hidden])
        g = np.tanh(z[3 * hidden :])
        c_prev, h_prev = c, h
        c = f * c_prev + i * g
        h = o * np.tanh(c)
        cache.append((row, h_prev, c_prev, i, f, o, g, c))
        states.append(h)
    return np.array(states), cache


def lstm_backward(p: Params, cache: list, dh: np.ndarray) -> Params:
    """Gradients of W and b given dLoss/dh_t for every t (T × H)."""
    hidden = p["b"].size // 4
    dW, db = np.zeros_like(p["W"]), np.zeros_like(p["b"])
    dh_next, dc_next = np.zeros(hidden), np.zeros(hidden)
    for t in range(len(cache) - 1, -1, -1):
        row, h_prev, c_prev, i, f, o, g, c = cache[t]
        dh_t = dh[t] + dh_next
        tanh_c = np.tanh(c)
        do = dh_t * tanh_c
        dc = dh_t * o * (1 - tanh_c**2) + dc_next
        di, df, dg = dc * g, dc * c_prev, dc * i
        dz = np.concatenate([di * i * (1 - i), df * f * (1 - f), do * o * (1 - o), dg * (1 - g**2)])
        dW += np.outer(dz, np.concatenate([row, h_prev]))
        db += dz
        dx_h = p["W"].T @ dz
        dh_next = dx_h[row.size :]
        dc_next = dc * f
    return {"W": dW, "b": db}


def _masked_softmax(logits: np.ndarray, allowed: Sequence[int]) -> np.ndarray:
    probs = np.zeros_like(logits)
    z = logits[list(allowed)]
    z = np.exp(z - z.max())
    probs[list(allowed)] = z / z.sum()
    return probs


def _entropy(probs: np.ndarray) -> float:
    nz = probs[probs > 0]
    return float(-(nz * np.log(nz)).sum())


def _dlogits(probs: np.ndarray, chosen: int, advantage: float, beta: float) -> np.ndarray:
    """dLoss/dlogits of loss = −advantage · log p[chosen] − beta · H(p) (zero where masked)."""
    grad = advantage * probs
    grad[chosen] -= advantage
    nz = probs > 0
    entropy = _entropy(probs)
    grad[nz] += beta * probs[nz] * (np.log(probs[nz]) + entropy)
    return grad


@dataclass(frozen=True)
class Choice:
    """The three distributions met on the way to ``edit`` (for its log-probability and entropy)."""

    edit: Edit
    log_prob: float
    entropy: float


def _distributions(p: Params, states: np.ndarray, tree: Mapping[int, Mapping[int, list[int]]], edit_kind: int | None,
                   position: int | None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:  # fmt: skip
    kinds = _masked_softmax(p["Wk"] @ states[-1] + p["bk"], sorted(tree))
    if edit_kind is None:
        return kinds, None, None
    positions = _masked_softmax(states @ p["Wp"][edit_kind], sorted(tree[edit_kind]))
    if position is None:
        return kinds, positions, None
    options = _masked_softmax(p["Wo"][edit_kind] @ states[position] + p["bo"][edit_kind],
                              sorted(tree[edit_kind][position]))  # fmt: skip
    return kinds, positions, options


def sample_edit(p: Params, x: np.ndarray, edits: Sequence[Edit], rng: np.random.Generator) -> Choice:
    """Draw one edit among the valid ``edits`` for the network embedded as ``x``."""
    states, _ = lstm_forward(p, x)
    tree = allowed_tree(edits)
    kinds, _, _ = _distributions(p, states, tree, None, None)
    kind = int(rng.choice(kinds.size, p=kinds))
    _, positions, _ = _distributions(p, states, tree, kind, None)
    position = int(rng.choice(positions.size, p=positions))
    _, _, options = _distributions(p, states, tree, kind, position)
    option = int(rng.choice(options.size, p=options))
    return score(p, x, edits, Edit(kind, position, option))


def score(p: Params, x: np.ndarray, edits: Sequence[Edit], edit: Edit) -> Choice:
    """log π(edit) and the summed entropy of its three distributions."""
    states, _ = lstm_forward(p, x)
    dists = _distributions(p, states, allowed_tree(edits), edit.kind, edit.position)
    chosen = (edit.kind, edit.position, edit.option)
    log_prob = float(sum(np.log(d[c]) for d, c in zip(dists, chosen, strict=True)))
    return Choice(edit, log_prob, sum(_entropy(d) for d in dists))


def loss_and_grads(p: Params, x: np.ndarray, edits: Sequence[Edit], edit: Edit, advantage: float,
                   beta: float) -> tuple[float, Params]:  # fmt: skip
    """REINFORCE loss of one edit, −advantage · log π − beta · Σ entropies, and its gradients."""
    states, cache = lstm_forward(p, x)
    tree = allowed_tree(edits)
    kinds, positions, options = _distributions(p, states, tree, edit.kind, edit.position)
    k, t, o = edit.kind, edit.position, edit.option
    loss = -advantage * float(np.log(kinds[k]) + np.log(positions[t]) + np.log(options[o]))
    loss -= beta * (_entropy(kinds) + _entropy(positions) + _entropy(options))
    grads = {name: np.zeros_like(value) for name, value in p.items()}
    dh = np.zeros_like(states)
    g = _dlogits(kinds, k, advantage, beta)
    grads["Wk"] += np.outer(g, states[-1])
    grads["bk"] += g
    dh[-1] += p["Wk"].T @ g
    g = _dlogits(positions, t, advantage, beta)
    grads["Wp"][k] += g @ states
    dh += np.outer(g, p["Wp"][k])
    g = _dlogits(options, o, advantage, beta)
    grads["Wo"][k] += np.outer(g, states[t])
    grads["bo"][k] += g
    dh[t] += p["Wo"][k].T @ g
    grads.update(lstm_backward(p, cache, dh))
    return loss, grads


class Adam:
    """Adam on a dict of arrays (state is plain arrays: it pickles with the search)."""

    def __init__(self, params: Params, lr: float = 0.01, betas: tuple[float, float] = (0.9, 0.999)):
        self.lr, self.betas, self.steps = lr, betas, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params: Params, grads: Params) -> None:
        self.steps += 1
        b1, b2 = self.betas
        for k in params:
            self.m[k] = b1 * self.m[k] + (1 - b1) * grads[k]
            self.v[k] = b2 * self.v[k] + (1 - b2) * grads[k] ** 2
            m_hat = self.m[k] / (1 - b1**self.steps)
            v_hat = self.v[k] / (1 - b2**self.steps)
            params[k] -= self.lr * m_hat / (np.sqrt(v_hat) + 1e-8)


@dataclass
class Baseline:
    """Exponential moving average of rewards (``decay`` per update); None until the first reward."""

    decay: float = 0.9
    value: float | None = None

    def update(self, reward: float) -> float:
        """The advantage of ``reward`` against the baseline before it is updated."""
        advantage = 0.0 if self.value is None else reward - self.value
        self.value = reward if self.value is None else self.decay * self.value + (1 - self.decay) * reward
        return advantage


@dataclass(frozen=True)
class Step:
    """One edit of an episode: the network it was proposed for (its embedding and valid edits)."""

    x: np.ndarray
    edits: tuple[Edit, ...]
    edit: Edit


def reinforce_step(p: Params, optimizer: Adam, baseline: Baseline, episodes: Sequence[tuple[Sequence[Step], float]],
                   beta: float) -> float:  # fmt: skip
    """One policy-gradient update from a batch of (edits, reward) episodes: each edit's gradient
    weighted by its episode's advantage over the baseline (the batch mean on the first update),
    averaged over the batch; then the baseline moves to the batch mean. Returns the mean reward."""
    mean = float(np.mean([r for _, r in episodes]))
    reference = mean if baseline.value is None else baseline.value
    total = {k: np.zeros_like(v) for k, v in p.items()}
    n = len(episodes)
    for steps, reward in episodes:
        for step in steps:
            _, grads = loss_and_grads(p, step.x, step.edits, step.edit, (reward - reference) / n, beta / n)
            for k in total:
                total[k] += grads[k]
    baseline.update(mean)
    optimizer.step(p, total)
    return mean
