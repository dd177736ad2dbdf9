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
    initial = init_params(FEATURES, HIDDEN, KINDS, OPTIONS, rng)  # heads start at zero: perturb every parameter
    params = {k: v + rng.normal(0.0, 0.3, v.shape) for k, v in initial.items()}
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
        assert np.abs(analytic).max() > 1e-4, name  # every parameter matters to this loss


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


# --- the search -------------------------------------------------------------------------------

import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import yaml  # noqa: E402

import e2sim  # noqa: E402
from e2sim.config.errors import SpecError  # noqa: E402
from e2sim.config.loading import embedded_dir  # noqa: E402
from e2sim.studies.rena.space import Limits, Unit, apply_edit, is_valid, layer_list, network_of, valid_edits  # noqa: E402

TINY = {"name": "tiny-search", "seed": "rena-seed-mnist", "hardware": "zedboard", "proxy_epochs": 1,
        "constraints": {"energy_per_iteration_j": {"max": 4.0e-3}, "parameters": {"max": 20000}},
        "steps": 2, "children_per_step": 2, "edits_per_child": 1, "seed_value": 3}  # fmt: skip


def write_spec(folder, **changes):
    path = folder / "search.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


def test_every_offered_edit_gives_a_valid_network_that_lowers():
    document = yaml.safe_load((embedded_dir("workload") / "rena-seed-mnist.yaml").read_text())
    seed = network_of(document["model"]["layers"], "seed")
    limits = Limits(max_units=5, max_channels=32)
    network = seed
    rng = np.random.default_rng(0)
    for _ in range(6):  # a random walk through the space
        edits = valid_edits(network, 28, 1, limits)
        assert edits
        for edit in edits:
            child = apply_edit(network, edit, 1)
            assert child != network and is_valid(child, 28, limits)
            graph = e2sim.lower({"name": "c", "dataset": {"name": "mnist5k"},
                                 "model": {"layers": layer_list(child, 1, 10)},
                                 "training": {"batch_size": 4, "epochs": 1, "lr": 0.1}})  # fmt: skip
            assert graph.macs("fwd") > 0
        network = apply_edit(network, edits[int(rng.integers(len(edits)))], 1)
    assert not is_valid((Unit("pool"),), 28, limits) and not is_valid(tuple([Unit("conv", 8)] * 6), 28, limits)


def test_a_search_writes_networks_that_e2sim_run_trains(tmp_path):
    spec = write_spec(tmp_path)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "e2sim", "search", str(spec), "--out", str(out), "--json"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    report = json.loads(done.stdout)
    assert report["evaluated"] >= 2 and len(report["history"]) == 2
    assert set(report["best"]) == {"within energy_per_iteration_j", "within parameters", "within all constraints",
                                   "highest reward"}  # fmt: skip
    for child in report["children"]:
        if child["status"] == "done":
            m = child["metrics"]
            assert 0 <= m["accuracy"] <= 1 and m["parameters"] > 0 and m["energy_per_iteration_j"] > 0
    written = sorted(out.glob("best-*.yaml"))
    assert written and (out / "curves.png").exists() and (out / "children.png").exists()
    for path in written:
        run = e2sim.run(path, "zedboard", epochs=1, progress=False)
        assert run.training.iterations > 0
    again = subprocess.run([sys.executable, "-m", "e2sim", "search", str(spec), "--json"], capture_output=True,
                           text=True, check=True)  # fmt: skip
    assert json.loads(again.stdout) == report  # finished: everything read back from the store, nothing re-trained


def test_a_killed_search_resumes_without_retraining_what_it_stored(tmp_path):
    spec = write_spec(tmp_path, steps=3)
    db = tmp_path / "search.sqlite"
    command = [sys.executable, "-m", "e2sim", "search", str(spec), "--db", str(db), "--json"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import sqlite3

    deadline = time.time() + 120
    stored = 0
    while time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
        if db.exists():
            with sqlite3.connect(db) as con:
                try:
                    stored = con.execute("SELECT COUNT(*) FROM points").fetchone()[0]
                except sqlite3.OperationalError:
                    stored = 0
            if stored >= 3:
                break
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert stored >= 3
    with sqlite3.connect(db) as con:
        before = dict(con.execute("SELECT key, finished FROM points"))
    resumed = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    with sqlite3.connect(db) as con:
        after = dict(con.execute("SELECT key, finished FROM points"))
    assert all(after[k] == v for k, v in before.items())  # nothing stored was evaluated again
    fresh = json.loads(subprocess.run([*command[:-3], "--db", str(tmp_path / "fresh.sqlite"), "--json"],
                                      capture_output=True, text=True, check=True).stdout)  # fmt: skip
    assert resumed["history"] == fresh["history"] and resumed["children"] == fresh["children"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": 0}, "steps: must be a positive integer"),
        ({"sampler": "genetic"}, "sampler: must be one of rena, random"),
        ({"parents": 0}, "parents: must be a positive integer"),
        ({"constraints": {"energy_j": {"max": 1}}}, "constraints.energy_j: unknown key"),
        ({"constraints": {"flops_per_byte": {"min": 1, "max": 1}}}, "constraints.flops_per_byte.max: unknown key"),
        ({"seed": "lenet5-mnist"}, "model: a RENA seed needs an explicit model.layers list"),
        ({"seed": "small-resnet-mnist"}, "model.layers: a RENA seed ends with global_avgpool, flatten, linear"),
        ({"hardware": "no-board"}, "no such file"),
    ],
)
def test_a_bad_search_spec_is_one_line_naming_the_key(changes, message, tmp_path):
    spec = write_spec(tmp_path, **changes)
    done = subprocess.run([sys.executable, "-m", "e2sim", "search", str(spec)], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_the_seed_must_be_made_of_units():
    with pytest.raises(SpecError, match="RENA seed ends with"):
        network_of([{"type": "conv", "out_channels": 4, "kernel": 3}], "x")


def test_children_evaluated_in_worker_processes_equal_in_process(tmp_path):
    spec = write_spec(tmp_path, steps=1, children_per_step=3)
    one = e2sim.search(spec, tmp_path / "one.sqlite")
    two = e2sim.search(spec, tmp_path / "two.sqlite", workers=2)
    assert [(c["key"], c["status"], c["metrics"]) for c in one.children] == \
        [(c["key"], c["status"], c["metrics"]) for c in two.children]  # fmt: skip
    assert one.history == two.history


@pytest.mark.parametrize("sampler", ["rena", "random"])
def test_every_step_evaluates_as_many_new_children_whichever_sampler(sampler, tmp_path):
    """Proposals of networks evaluated in earlier steps (or twice in one step) are drawn again
    until the step has children_per_step new ones; when fewer new ones exist the step stops
    after MAX_DRAWS_PER_CHILD proposals per child."""
    import dataclasses

    from e2sim.config.search import read_search_spec
    from e2sim.studies.rena import search as rena_search

    spec = read_search_spec(write_spec(tmp_path, sampler=sampler, children_per_step=3))
    seed = rena_search.read_seed(spec)
    limits = Limits(max_units=spec.max_units, max_channels=spec.max_channels)
    edits = valid_edits(seed.network, seed.input_size, seed.in_channels, limits)
    one_edit = dataclasses.replace(spec, edits_per_child=1)
    keys = [rena_search.child_key(spec, apply_edit(seed.network, e, seed.in_channels)) for e in edits]
    for left in (len(keys) // 2, 2):  # every one-edit child but `left` of them evaluated already
        state = rena_search._new_state(one_edit, seed)
        evaluated = set(keys[left:])
        children = rena_search._propose(one_edit, seed, state, limits, evaluated)
        new = {rena_search.child_key(spec, c.network) for c in children} - evaluated
        assert new <= set(keys[:left]) and len(new) == min(left, 3)
        if left < 3:
            assert len(children) == 3 * rena_search.MAX_DRAWS_PER_CHILD
        else:
            assert rena_search.child_key(spec, children[-1].network) in new and len(children) > 3
    result = e2sim.search(write_spec(tmp_path, sampler=sampler, steps=3, children_per_step=3), tmp_path / "s.sqlite")
    assert [h["new_children"] for h in result.history] == [3, 3, 3]
    assert [sum(c["position"] == step for c in result.children) for step in range(3)] == [3, 3, 3]


def test_the_controller_learns_from_each_child_against_its_parent(tmp_path, monkeypatch):
    """The seed is evaluated first (step −1), once; every episode's reward given to REINFORCE is the
    child's reward minus its parent's (the best network before the step, the seed at first)."""
    from e2sim.config.search import read_search_spec
    from e2sim.studies.rena import search as rena_search

    given, proposed = [], []
    update, propose = rena_search.reinforce_step, rena_search._propose

    def recorded(params, optimizer, baseline, episodes, beta):
        given.append([r for _, r in episodes])
        return update(params, optimizer, baseline, episodes, beta)

    def proposals(*args):
        children = propose(*args)
        proposed.append([c.network for c in children])
        return children

    monkeypatch.setattr(rena_search, "reinforce_step", recorded)
    monkeypatch.setattr(rena_search, "_propose", proposals)
    spec = read_search_spec(write_spec(tmp_path, steps=3, children_per_step=2))
    result = e2sim.search(spec, tmp_path / "s.sqlite")
    (seed,) = [c for c in result.children if c["params"]["step"] == -1]
    assert seed["params"]["network"] == [u.__dict__ for u in rena_search.read_seed(spec).network]
    stored = {c["key"]: result.reward(c) if c["status"] == "done" else -1.0 for c in result.children}
    best = stored[seed["key"]]
    assert len(given) == len(proposed) == 3
    for networks, rewards in zip(proposed, given, strict=True):
        found = [stored[rena_search.child_key(spec, n)] for n in networks]
        assert rewards == pytest.approx([r - best for r in found], abs=1e-12)
        best = max(best, *found)


def test_with_several_parents_each_child_comes_from_one_of_the_best_and_learns_against_it(tmp_path, monkeypatch):
    """parents: N draws each proposal's parent from the N best-rewarded networks evaluated before its
    step (the seed included); its episode is rewarded against that parent's reward."""
    from e2sim.config.search import read_search_spec
    from e2sim.studies.rena import search as rena_search
    from e2sim.studies.rena.space import apply_edit, embed

    given, proposed = [], []
    update, propose = rena_search.reinforce_step, rena_search._propose

    def recorded(params, optimizer, baseline, episodes, beta):
        given.append([r for _, r in episodes])
        return update(params, optimizer, baseline, episodes, beta)

    def proposals(spec, seed, state, limits, evaluated):
        children = propose(spec, seed, state, limits, evaluated)
        proposed.append((list(state.parents), children))
        return children

    monkeypatch.setattr(rena_search, "reinforce_step", recorded)
    monkeypatch.setattr(rena_search, "_propose", proposals)
    spec = read_search_spec(write_spec(tmp_path, steps=3, children_per_step=3, edits_per_child=1, parents=2))
    result = e2sim.search(spec, tmp_path / "s.sqlite")
    seed = rena_search.read_seed(spec)
    stored = {c["key"]: result.reward(c) for c in result.children if c["status"] == "done"}
    ranked = []  # (reward, key) of every network evaluated before the step, best first, earlier on ties
    for c in result.children:
        if c["params"]["step"] == -1:
            ranked.append((stored[c["key"]], c["key"]))
    drawn_from = []  # per step: how many distinct parents its children came from
    for step, ((parents, children), rewards) in enumerate(zip(proposed, given, strict=True)):
        expected = [k for _, k in sorted(ranked, key=lambda e: -e[0])[:2]]
        assert [rena_search.child_key(spec, n) for _, n in parents] == expected
        for child, reward in zip(children, rewards, strict=True):
            assert (child.parent_reward, child.parent) in parents
            (step_taken,) = child.steps
            assert np.array_equal(step_taken.x, embed(child.parent, seed.input_size, seed.in_channels))
            assert apply_edit(child.parent, step_taken.edit, seed.in_channels) == child.network
            key = rena_search.child_key(spec, child.network)
            assert reward == pytest.approx(stored[key] - child.parent_reward, abs=1e-12)
        drawn_from.append(len({rena_search.child_key(spec, c.parent) for c in children}))
        known = {k for _, k in ranked}
        for c in result.children:
            if c["params"]["step"] == step and c["key"] not in known:
                ranked.append((stored[c["key"]], c["key"]))
    assert max(drawn_from) == 2  # some step drew children of both parents


def test_a_search_state_stored_before_the_parents_ranking_resumes_from_its_best(tmp_path):
    import pickle

    from e2sim.config.search import read_search_spec
    from e2sim.studies.rena import search as rena_search
    from e2sim.studies.store import Store

    spec = read_search_spec(write_spec(tmp_path))
    seed = rena_search.read_seed(spec)
    state = rena_search._new_state(spec, seed)
    del state.__dict__["parents"]  # as a state pickled by the version before
    state.__dict__.update(best=(0.5, seed.network), current=seed.network)
    with Store(tmp_path / "s.sqlite") as store:
        store.db.executescript(rena_search.STATE_SCHEMA)
        store.db.execute("INSERT INTO search_state VALUES (?, ?, ?)", (spec.name, 1, pickle.dumps(state)))
        loaded = rena_search._load_state(store, spec)
    assert loaded.parents == [(0.5, seed.network)] and loaded.step == 0
