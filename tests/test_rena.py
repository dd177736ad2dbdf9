"""RENA: the controller's gradients against finite differences, and REINFORCE on a toy problem
whose best edit sequence is known."""

import numpy as np
import pytest

from e2sim.studies.rena.controller import (
    Adam,
    Baseline,
    Edit,
    Step,
    init_params,
    loss_and_grads,
    reinforce_step,
    sample_edit,
    score,
)

KINDS, OPTIONS, FEATURES, HIDDEN = 3, 3, 5, 6


def all_edits(units: int, drop=()):
    return [Edit(k, t, o) for k in range(KINDS) for t in range(units) for o in range(OPTIONS) if (k, t, o) not in drop]


@pytest.mark.parametrize("beta", [0.0, 0.3])
def test_controller_gradients_equal_finite_differences(beta):
    rng = np.random.default_rng(0)
    params = init_params(FEATURES, HIDDEN, KINDS, OPTIONS, rng)
    x = rng.normal(size=(4, FEATURES))
    edits = all_edits(4, drop={(0, 1, 2), (2, 3, 0), (2, 3, 1), (2, 3, 2)})  # masked choices
    edit, advantage = Edit(1, 2, 1), 0.7
    _, grads = loss_and_grads(params, x, edits, edit, advantage, beta)
    step = 1e-6
    for name, value in params.items():
        flat, analytic = value.reshape(-1), grads[name].reshape(-1)
        for index in rng.choice(flat.size, size=min(flat.size, 25), replace=False):
            saved = flat[index]
            flat[index] = saved + step
            up = loss_and_grads(params, x, edits, edit, advantage, beta)[0]
            flat[index] = saved - step
            down = loss_and_grads(params, x, edits, edit, advantage, beta)[0]
            flat[index] = saved
            numeric = (up - down) / (2 * step)
            assert analytic[index] == pytest.approx(numeric, rel=1e-5, abs=1e-8), (name, index)


def test_sampling_respects_the_mask_and_scores_its_own_draw():
    rng = np.random.default_rng(1)
    params = init_params(FEATURES, HIDDEN, KINDS, OPTIONS, rng)
    x = rng.normal(size=(3, FEATURES))
    edits = [Edit(0, 0, 1), Edit(0, 2, 0), Edit(2, 1, 2)]
    drawn = {sample_edit(params, x, edits, rng).edit for _ in range(200)}
    assert drawn == set(edits)
    total = sum(np.exp(score(params, x, edits, e).log_prob) for e in edits)
    assert total == pytest.approx(1.0)


def features_of(state: tuple[int, ...]) -> np.ndarray:
    """Toy networks: each unit a small integer, embedded one-hot (plus a constant)."""
    x = np.zeros((len(state), FEATURES))
    for t, v in enumerate(state):
        x[t, v % (FEATURES - 1)] = 1.0
        x[t, -1] = 1.0
    return x


def apply(state: tuple[int, ...], edit: Edit) -> tuple[int, ...]:
    units = list(state)
    units[edit.position] = (units[edit.position] + edit.kind + edit.option) % (FEATURES - 1)
    return tuple(units)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reinforce_converges_to_the_known_best_edit_sequence(seed):
    """Two edits from a fixed start: the first right earns 0.5, both right 1 (the best sequence is
    known); batches of 8 episodes, 250 updates, entropy bonus 0.05."""
    rng = np.random.default_rng(seed)
    params = init_params(FEATURES, 16, KINDS, OPTIONS, rng)
    optimizer, baseline = Adam(params, lr=0.03), Baseline(0.9)
    start, target = (0, 1, 2, 3), (Edit(1, 2, 0), Edit(2, 0, 1))
    rewards = []
    for _ in range(250):
        episodes = []
        for _ in range(8):
            state, steps = start, []
            for _ in target:
                edits = tuple(all_edits(len(state)))
                x = features_of(state)
                steps.append(Step(x, edits, sample_edit(params, x, edits, rng).edit))
                state = apply(state, steps[-1].edit)
            reward = (steps[0].edit == target[0]) * (0.5 + 0.5 * (steps[1].edit == target[1]))
            episodes.append((steps, float(reward)))
        rewards.append(reinforce_step(params, optimizer, baseline, episodes, 0.05))
    state, probability = start, 1.0
    for wanted in target:
        probability *= np.exp(score(params, features_of(state), all_edits(len(state)), wanted).log_prob)
        state = apply(state, wanted)
    assert probability > 0.9 and np.mean(rewards[-20:]) > 0.9 > np.mean(rewards[:20])
