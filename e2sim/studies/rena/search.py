"""The RENA search loop. Each step the controller proposes children of the current network (each
``edits_per_child`` edits, every edit among the valid ones) until ``children_per_step`` of them are
networks the search has not evaluated yet (at most ``MAX_DRAWS_PER_CHILD`` times as many proposals):
every step evaluates as many new children whichever sampler proposes them, and a proposal of a
network evaluated before costs no training, its stored reward serves again. The new children
are evaluated on the sweep executor (local processes or Dask) — proxy training for accuracy, the
accelerator model for training energy and time per iteration, the lowered graph for parameters,
FLOPs and FLOPs per byte — and stored in the sweep store, keyed by architecture hash and search
settings (a child evaluated once is never evaluated again). The seed network is evaluated first
(stored as step −1) and is the first current network. Rewards update the controller (REINFORCE,
every proposal an episode rewarded by what its edits changed: its reward minus its parent's;
against the step's mean reward if the seed failed); the current network moves to the
best-rewarded network so far, the seed included. With ``parents`` N above 1 each proposal starts
from one of the N best-rewarded networks so far, drawn uniformly. The controller's
state is stored after every step, so a killed search resumes from its last finished step and the
children it had already evaluated are read back, not trained again.

Reward (RENA's, with e2sim's constraints): accuracy − penalty × Σ relative violations, where a
maximum ``m`` exceeded by value ``v`` adds (v − m)/m and a minimum ``m`` missed adds (m − v)/m."""

from __future__ import annotations

import copy
import hashlib
import json
import pickle
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from e2sim import __version__
from e2sim.config.errors import SpecError
from e2sim.config.loading import read_hardware_spec, read_workload_spec, spec_document
from e2sim.config.search import CONSTRAINTS, SearchSpec, spec_dict
from e2sim.graph import TrainingGraph
from e2sim.hw import Accelerator
from e2sim.process import thread_budget
from e2sim.studies.rena.controller import Adam, Baseline, Step, init_params, reinforce_step, sample_edit
from e2sim.studies.rena.space import (
    EDIT_KINDS,
    FEATURES,
    OPTIONS,
    Limits,
    Network,
    Unit,
    apply_edit,
    embed,
    layer_list,
    network_key,
    network_of,
    valid_edits,
)
from e2sim.studies.single import prepare, price, train_shared
from e2sim.studies.store import Store
from e2sim.studies.sweep import pareto_front

PRICING = (True, "energy")
MAX_DRAWS_PER_CHILD = 10  # proposals per new child a step may make before it settles for fewer
SEED_STEP = -1  # the seed network is evaluated (and stored) before step 0
STATE_SCHEMA = """CREATE TABLE IF NOT EXISTS search_state (
    search TEXT PRIMARY KEY, step INTEGER NOT NULL, state BLOB NOT NULL
);"""


@dataclass(frozen=True)
class Seed:
    """The seed network and what every child inherits from the seed workload."""

    document: Mapping[str, Any]
    network: Network
    input_size: int
    in_channels: int
    classes: int


def read_seed(spec: SearchSpec) -> Seed:
    data, source, _ = spec_document(spec.seed, "workload")
    workload = read_workload_spec(spec.seed)  # checks it
    if workload.model.arch != "layers":
        raise SpecError.single(source, "model", "a RENA seed needs an explicit model.layers list")
    info = workload.dataset.info
    network = network_of(data["model"]["layers"], source)
    channels, size = info.input_shape[0], info.input_shape[1]
    return Seed(data, network, size, channels, info.num_classes)


def child_document(seed: Seed, network: Network, epochs: int) -> dict[str, Any]:
    doc = copy.deepcopy(dict(seed.document))
    doc["name"] = f"rena-{network_key(network)}"
    doc["model"] = {"layers": layer_list(network, seed.in_channels, seed.classes)}
    doc["training"] = {**doc["training"], "epochs": epochs}
    doc.pop("description", None)
    return doc


def resource_metrics(graph: TrainingGraph, energy_j: float, time_s: float) -> dict[str, float]:
    """Parameters, forward FLOPs per image, FLOPs per byte moved between the iteration's ops, and
    training energy and time per iteration."""
    weights = {t for op in graph.model_ops for t in op.reads if graph.tensors[t].role in ("weight", "bias")}
    flops = 2.0 * sum(op.macs for op in graph.ops)
    moved = sum(graph.bytes_read(op) + graph.bytes_written(op) for op in graph.ops)
    return {"parameters": float(sum(graph.tensors[t].numel for t in weights)),
            "flops": 2.0 * graph.macs("fwd") / graph.batch_size, "flops_per_byte": flops / max(moved, 1),
            "energy_per_iteration_j": energy_j, "time_per_iteration_s": time_s}  # fmt: skip


def evaluate_child(argument: tuple[str, dict[str, Any], Accelerator]) -> tuple[str, str, dict | None, str | None,
                                                                              float]:  # fmt: skip
    """(key, status, metrics, error, seconds) of one child: priced, then proxy-trained (in a worker)."""
    key, document, hw = argument
    start = time.perf_counter()
    try:
        prepared = prepare(document)
        estimate = price(prepared.workload, prepared.graph, hw, None, False, False, PRICING, None)
        metrics = resource_metrics(prepared.graph, estimate.energy_j, estimate.time_s)
        with thread_budget():
            result = train_shared(prepared, [hw], None, None, False)
        metrics["accuracy"] = float(result.final_test_accuracy or 0.0)
    except (SpecError, FloatingPointError, ValueError) as exc:
        return key, "failed", None, f"{type(exc).__name__}: {exc}", time.perf_counter() - start
    return key, "done", metrics, None, time.perf_counter() - start


def reward_of(metrics: Mapping[str, float], constraints: Sequence[tuple[str, float]], penalty: float) -> float:
    violation = 0.0
    for name, limit in constraints:
        excess = metrics[name] - limit if CONSTRAINTS[name] == "max" else limit - metrics[name]
        violation += max(0.0, excess / limit)
    return metrics["accuracy"] - penalty * violation


def satisfies(metrics: Mapping[str, float], constraints: Sequence[tuple[str, float]]) -> bool:
    return all((metrics[n] <= v) if CONSTRAINTS[n] == "max" else (metrics[n] >= v) for n, v in constraints)


@dataclass
class State:
    """Everything the search carries from one step to the next (pickled into the store)."""

    step: int
    params: dict
    optimizer: Adam
    baseline: Baseline
    rng: np.random.Generator
    history: list  # per step: mean reward, best reward, fraction of children within the constraints
    parents: list[tuple[float, Network]] = field(default_factory=list)  # the top ``spec.parents`` by reward

    @property
    def best(self) -> tuple[float, Network] | None:
        """The best-rewarded network so far (its reward first), None until one is rewarded."""
        return self.parents[0] if self.parents else None


def child_key(spec: SearchSpec, network: Network) -> str:
    settings = {k: v for k, v in spec_dict(spec).items() if k in ("name", "seed", "hardware", "proxy_epochs")}
    text = json.dumps({"network": network_key(network), "settings": settings, "version": __version__}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class SearchResult:
    spec: SearchSpec
    seed: Seed
    history: tuple[dict, ...]  # per step: mean reward, best reward so far, fraction within the constraints
    children: tuple[dict, ...]  # stored children (done and failed), in evaluation order

    def reward(self, child: Mapping[str, Any]) -> float | None:
        if child["status"] != "done":
            return None
        return reward_of(child["metrics"], self.spec.constraints, self.spec.penalty)

    def best(self) -> dict[str, dict | None]:
        """The most accurate child within each constraint alone and within all of them, and the
        child of the highest reward."""
        done = [c for c in self.children if c["status"] == "done"]
        picks: dict[str, dict | None] = {}
        for name, limit in self.spec.constraints:
            within = [c for c in done if satisfies(c["metrics"], [(name, limit)])]
            picks[f"within {name}"] = max(within, key=lambda c: c["metrics"]["accuracy"], default=None)
        within_all = [c for c in done if satisfies(c["metrics"], self.spec.constraints)]
        picks["within all constraints"] = max(within_all, key=lambda c: c["metrics"]["accuracy"], default=None)
        picks["highest reward"] = max(done, key=self.reward, default=None)
        return picks

    def front(self) -> tuple[str, ...]:
        """Keys of the children no other child beats in both accuracy and training energy per iteration."""
        return pareto_front(self.children, ("accuracy", "energy_per_iteration_j"),
                            {"accuracy": "max", "energy_per_iteration_j": "min"})  # fmt: skip

    def network_of(self, child: Mapping[str, Any]) -> Network:
        return tuple(Unit(**u) for u in child["params"]["network"])

    def workload(self, child: Mapping[str, Any]) -> dict[str, Any]:
        """The child as a workload YAML document (``e2sim run`` trains it), at the seed's epochs."""
        return child_document(self.seed, self.network_of(child), self.seed.document["training"]["epochs"])


def run_search(spec: SearchSpec, store_path: Path, executor) -> SearchResult:
    """Run (or resume) the search of ``spec``; every evaluated child is in the store at ``store_path``."""
    seed = read_seed(spec)
    hw = read_hardware_spec(spec.hardware)
    limits = Limits(max_units=spec.max_units, max_channels=spec.max_channels)
    with Store(store_path) as store:
        store.db.executescript(STATE_SCHEMA)
        state = _load_state(store, spec) or _new_state(spec, seed)
        with executor:
            if state.step == 0:  # the seed is the first current network: a child must beat it to replace it
                found = _evaluate(spec, seed, store, executor, hw, [seed.network], SEED_STEP)
                row = found[child_key(spec, seed.network)]
                if row["status"] == "done":
                    _rank(state, spec.parents, [(reward_of(row["metrics"], spec.constraints, spec.penalty),
                                                 seed.network)])  # fmt: skip
            while state.step < spec.steps:
                evaluated = {row["key"] for row in store.rows(spec.name) if row["position"] < state.step}
                children = _propose(spec, seed, state, limits, evaluated)
                results = _evaluate(spec, seed, store, executor, hw, [c.network for c in children], state.step)
                rows = [results[child_key(spec, c.network)] for c in children]
                rewards, scored = [], []
                for child, row in zip(children, rows, strict=True):
                    done = row["status"] == "done"
                    rewards.append(reward_of(row["metrics"], spec.constraints, spec.penalty) if done else -1.0)
                    if done:
                        scored.append((rewards[-1], child.network))
                if spec.sampler == "rena":  # each edit sequence is rewarded by what it changed in its parent
                    mean = float(np.mean(rewards))  # the reference when the seed failed (no parent reward)
                    episodes = [(c.steps, r - (mean if c.parent_reward is None else c.parent_reward))
                                for c, r in zip(children, rewards, strict=True)]  # fmt: skip
                    reinforce_step(state.params, state.optimizer, state.baseline, episodes, spec.entropy)
                _rank(state, spec.parents, scored)
                within = [satisfies(row["metrics"], spec.constraints) for row in rows if row["status"] == "done"]
                new = {row["key"] for row in rows} - evaluated
                state.history.append({"step": state.step, "mean_reward": float(np.mean(rewards)),
                                      "best_reward": state.best[0] if state.best else None,
                                      "within_constraints": float(np.mean(within)) if within else 0.0,
                                      "proposals": len(children), "new_children": len(new)})  # fmt: skip
                state.step += 1
                with store.db:
                    store.db.execute("INSERT OR REPLACE INTO search_state VALUES (?, ?, ?)",
                                     (spec.name, state.step, pickle.dumps(state)))  # fmt: skip
        rows = store.rows(spec.name)
    return SearchResult(spec, seed, tuple(state.history), tuple(rows))


def _new_state(spec: SearchSpec, seed: Seed) -> State:
    rng = np.random.default_rng(spec.seed_value)
    params = init_params(FEATURES, spec.hidden, len(EDIT_KINDS), OPTIONS, rng)
    return State(0, params, Adam(params, spec.lr), Baseline(spec.baseline_decay), rng, [])


def _load_state(store: Store, spec: SearchSpec) -> State | None:
    row = store.db.execute("SELECT state FROM search_state WHERE search = ?", (spec.name,)).fetchone()
    if not row:
        return None
    state = pickle.loads(row[0])
    if "parents" not in state.__dict__:  # stored before searches kept a ranking of parents: its best alone
        best = state.__dict__.pop("best", None)
        state.__dict__.pop("current", None)
        state.parents = [best] if best is not None else []
    return state


@dataclass(frozen=True)
class Proposal:
    network: Network
    parent: Network
    steps: list[Step]  # the edits that made it from the parent, as the controller saw them
    parent_reward: float | None  # None: the seed, unrewarded (it failed)


def _rank(state: State, keep: int, scored: Sequence[tuple[float, Network]]) -> None:
    """Add newly rewarded networks to the ranking of parents (higher reward first, the earlier on a
    tie) and keep its best ``keep``; the first is the current network."""
    for reward, network in scored:
        if all(network != n for _, n in state.parents):
            state.parents.append((reward, network))
    state.parents = sorted(state.parents, key=lambda entry: -entry[0])[:keep]  # stable: earlier first on ties


def _propose(spec: SearchSpec, seed: Seed, state: State, limits: Limits, evaluated: set[str]) -> list[Proposal]:
    """Children of the current network (with ``parents`` above 1, of one of the best-rewarded
    networks, drawn uniformly per proposal), each a sequence of valid edits drawn by the controller
    (rena) or uniformly (random), until ``children_per_step`` of them are new (their keys neither
    in ``evaluated``, the children of the finished steps, nor drawn before in this step)."""
    children: list[Proposal] = []
    new: set[str] = set()
    for _ in range(spec.children_per_step * MAX_DRAWS_PER_CHILD):
        if len(new) == spec.children_per_step:
            break
        if not state.parents:  # the seed failed: its children, against the step's mean
            parent_reward, network = None, seed.network
        elif spec.parents == 1:
            parent_reward, network = state.parents[0]
        else:
            parent_reward, network = state.parents[int(state.rng.integers(len(state.parents)))]
        parent, steps = network, []
        for _ in range(spec.edits_per_child):
            edits = valid_edits(network, seed.input_size, seed.in_channels, limits)
            if not edits:
                break
            x = embed(network, seed.input_size, seed.in_channels)
            if spec.sampler == "rena":
                edit = sample_edit(state.params, x, edits, state.rng).edit
            else:
                edit = edits[int(state.rng.integers(len(edits)))]
            steps.append(Step(x, edits, edit))
            network = apply_edit(network, edit, seed.in_channels)
        children.append(Proposal(network, parent, steps, parent_reward))
        key = child_key(spec, network)
        if key not in evaluated:
            new.add(key)
    return children


def _evaluate(spec: SearchSpec, seed: Seed, store: Store, executor, hw: Accelerator, networks: Sequence[Network],
              step: int) -> dict[str, dict]:  # fmt: skip
    """Stored results of ``networks``, evaluating (once each) those the store does not hold."""
    wanted = {child_key(spec, n): n for n in networks}
    missing = [k for k in wanted if k not in store.finished(wanted)]
    futures = [executor.submit(evaluate_child, (k, child_document(seed, wanted[k], spec.proxy_epochs), hw))
               for k in missing]  # fmt: skip
    for future in executor.completed(futures):
        key, status, metrics, error, seconds = future.result()
        params = {"network": [u.__dict__ for u in wanted[key]], "architecture": network_key(wanted[key]),
                  "step": step}  # fmt: skip
        store.record(spec.name, [(key, step, params, status, metrics, error, seconds)])
    rows = {r["key"]: r for r in store.rows(spec.name)}
    return {k: rows[k] for k in wanted}
