"""Design points of a sweep: sampled from the axes, resolved to checked specs, keyed by a hash of
what they contain, grouped into tasks (run points that share a training run are one task), and
evaluated in a worker process."""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from e2sim import __version__
from e2sim.config.errors import SpecError
from e2sim.config.sweep import Axis, PointDocuments, SweepSpec, check_documents, point_documents
from e2sim.config.workload import Workload
from e2sim.energy.many import Totals
from e2sim.hw.accelerator import Accelerator
from e2sim.process import keep_heap, thread_budget
from e2sim.studies.single import prepare, price, price_points, run_once, train_shared

DONE, FAILED, INFEASIBLE, PRUNED, RUNG = "done", "failed", "infeasible", "pruned", "rung"


@dataclass(frozen=True)
class Point:
    """One design point: its axis values, key, and checked specs (None when they do not read:
    ``error`` says why)."""

    position: int  # in the sampled sequence
    values: Mapping[str, Any]
    key: str
    workload: Workload | None
    hardware: Accelerator | None
    error: str | None = None


@dataclass(frozen=True)
class Task:
    """Work for one worker call: an estimate of one workload on several accelerators, or one
    training run priced on several accelerators (same approximate mode)."""

    kind: str
    workload: Workload
    hardware: tuple[Accelerator, ...]
    keys: tuple[str, ...]
    batch: int | None
    epochs: int | None
    fusion: bool
    mapper_objective: str
    stop_after: int | None = None  # a rung of successive halving: train to this epoch, report accuracy
    checkpoint: str | None = None  # the training's checkpoint file (written every epoch, continued from)

    @property
    def training(self) -> str:
        """A key of the training run this task is (its points' keys hashed)."""
        return hashlib.sha256("|".join(sorted(self.keys)).encode()).hexdigest()


@dataclass(frozen=True)
class Outcome:
    key: str
    status: str
    metrics: Mapping[str, float] | None
    error: str | None
    seconds: float


def resources(hw: Accelerator) -> dict[str, float]:
    """What a constraint can bound, from the hardware spec alone: PEs and on-chip SRAM (KB)."""
    return {"pe_count": hw.pe_array.rows * hw.pe_array.cols,
            "on_chip_kb": float(sum(b.size_kb for b in hw.buffers.values()))}  # fmt: skip


def point_key(spec: SweepSpec, docs: PointDocuments) -> str:
    """A hash of the fully resolved point (specs, settings) and the e2sim version."""
    settings = {"kind": spec.kind, "batch": spec.batch, "epochs": spec.epochs, "fusion": spec.fusion,
                "mapper_objective": spec.mapper_objective, "version": __version__}  # fmt: skip
    text = json.dumps({"workload": docs.workload, "hardware": docs.hardware, **settings}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def resolve(spec: SweepSpec, position: int, values: Mapping[str, Any],
            bases: dict[str, PointDocuments] | None = None) -> Point:  # fmt: skip
    """The point where the axes take ``values``: its specs read and checked (a spec problem is
    the point's error, not the sweep's). ``bases``: base documents read earlier in this pass
    (see ``point_documents``)."""
    docs = point_documents(spec, values, bases)
    key = point_key(spec, docs)
    try:
        workload, hardware = check_documents(docs)
    except SpecError as exc:
        return Point(position, dict(values), key, None, None, "; ".join(str(p) for p in exc.problems))
    return Point(position, dict(values), key, workload, hardware)


def grid_values(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every combination of the axes' values, the first axis slowest."""
    combos: list[dict[str, Any]] = [{}]
    for axis in spec.axes:
        combos = [{**c, axis.path: v} for c in combos for v in axis.values]
    return combos


def random_values(spec: SweepSpec) -> list[dict[str, Any]]:
    """``sampler.points`` draws from a generator seeded by ``sampler.seed``: a list axis uniformly
    over its values, a range uniformly (log-uniformly for log_range), integers rounded."""
    rng = np.random.default_rng(spec.sampler.seed)
    return [{axis.path: draw(axis, rng) for axis in spec.axes} for _ in range(spec.sampler.points)]


def draw(axis: Axis, rng: np.random.Generator) -> Any:
    if not axis.is_range:
        return axis.values[int(rng.integers(len(axis.values)))]
    if axis.log:
        value = float(np.exp(rng.uniform(np.log(axis.low), np.log(axis.high))))
    else:
        value = float(rng.uniform(axis.low, axis.high))
    return round(value) if axis.integer else value


def within(spec: SweepSpec, hw: Accelerator) -> str | None:
    """Why ``hw`` breaks a constraint of the sweep, or None."""
    found = resources(hw)
    for bound in spec.constraints:
        value = found[bound.key]
        if bound.low is not None and value < bound.low:
            return f"{bound.key} {value:g} < min {bound.low:g}"
        if bound.high is not None and value > bound.high:
            return f"{bound.key} {value:g} > max {bound.high:g}"
    return None


def tasks_of(spec: SweepSpec, points: Sequence[Point], slots: int = 1) -> list[Task]:
    """Estimate points of one workload, sorted so that points of one PE array are together (their
    ops are mapped together), in about two tasks per worker slot of 8 to 64 points; run points
    that share a workload and an approximate mode as one training run priced on each accelerator."""
    groups: dict[tuple, list[Point]] = {}
    for p in points:
        mode = p.hardware.approximate if spec.kind == "run" else None
        groups.setdefault((p.workload, mode), []).append(p)
    tasks = []
    for (workload, _), members in groups.items():
        if spec.kind == "estimate":
            members = sorted(members, key=lambda p: (p.hardware.pe_array.dataflow, p.hardware.pe_array.rows,
                                                     p.hardware.pe_array.cols, p.position))  # fmt: skip
            size = min(64, max(8, -(-len(members) // (2 * slots))))
        else:
            size = len(members)
        for start in range(0, len(members), size):
            part = members[start : start + size]
            tasks.append(Task(spec.kind, workload, tuple(p.hardware for p in part), tuple(p.key for p in part),
                              spec.batch, spec.epochs, spec.fusion, spec.mapper_objective))  # fmt: skip
    return tasks


@functools.lru_cache(maxsize=16)
def _prepared(workload: Workload, batch: int | None):
    return prepare(workload, batch)


def evaluate(task: Task) -> list[Outcome]:
    """Run one task (in a worker); a point that fails gives its reason, the others go on. A worker
    of a cluster e2sim did not start keeps its heap from here (see ``e2sim.process.keep_heap``)."""
    keep_heap()
    pricing = (task.fusion, task.mapper_objective)
    start = time.perf_counter()
    if task.kind == "run":
        with thread_budget():  # as e2sim run: one BLAS thread, the kernels on this worker's share of the cores
            return _evaluate_run(task, pricing, start)
    return _evaluate_estimates(task, pricing, start)


def _evaluate_run(task: Task, pricing: tuple[bool, str], start: float) -> list[Outcome]:
    try:
        if task.stop_after is not None:
            result = train_shared(_prepared(task.workload, None), task.hardware, task.epochs, None, False,
                                  task.checkpoint, task.stop_after)  # fmt: skip
            accuracy = result.epochs[min(task.stop_after, len(result.epochs)) - 1].test_accuracy
            seconds = (time.perf_counter() - start) / len(task.keys)
            return [Outcome(key, RUNG, {"accuracy": accuracy, "epochs": task.stop_after}, None, seconds)
                    for key in task.keys]  # fmt: skip
        results = run_once(_prepared(task.workload, None), task.hardware, task.epochs, None, False, pricing,
                           task.checkpoint)  # fmt: skip
    except (SpecError, FloatingPointError, ValueError) as exc:
        seconds = (time.perf_counter() - start) / len(task.keys)
        return [Outcome(key, FAILED, None, _reason(exc), seconds) for key in task.keys]
    seconds = (time.perf_counter() - start) / len(task.keys)
    return [Outcome(key, DONE, {**_metrics(totals_of(r.priced), hw), "accuracy": r.training.final_test_accuracy,
                                "iterations": r.training.iterations}, None, seconds)
            for key, r, hw in zip(task.keys, results, task.hardware, strict=True)]  # fmt: skip


def _evaluate_estimates(task: Task, pricing: tuple[bool, str], start: float) -> list[Outcome]:
    """The task's workload lowered once, its ops mapped and priced on all its accelerators
    together (``price_points``); a point that path leaves out is priced alone."""
    outcomes = []
    try:
        prepared = _prepared(task.workload, task.batch)
        totals = price_points(prepared.workload, prepared.graph, task.hardware, pricing)
    except (SpecError, ValueError) as exc:
        seconds = (time.perf_counter() - start) / len(task.keys)
        return [Outcome(key, FAILED, None, _reason(exc), seconds) for key in task.keys]
    share = (time.perf_counter() - start) / len(task.keys)  # lowering (first task), mapping and pricing, shared
    for key, hw, found in zip(task.keys, task.hardware, totals, strict=True):
        begin = time.perf_counter() - share
        try:
            if found is None:
                found = totals_of(price(prepared.workload, prepared.graph, hw, None, False, False, pricing, None))
            outcomes.append(Outcome(key, DONE, _metrics(found, hw), None, time.perf_counter() - begin))
        except (SpecError, ValueError) as exc:
            outcomes.append(Outcome(key, FAILED, None, _reason(exc), time.perf_counter() - begin))
    return outcomes


def totals_of(estimate) -> Totals:
    """An estimate's totals (what a sweep stores of it)."""
    return Totals(estimate.energy_j, estimate.cycles, estimate.time_s,
                  float(sum(r.cost.dram_bytes * r.data_scale for r in estimate.rows)),
                  float(sum(sum(r.macs.values()) for r in estimate.rows)))  # fmt: skip


def _metrics(totals: Totals, hw: Accelerator) -> dict[str, float]:
    energy, time_s = totals.energy_j, totals.time_s
    return {"energy_j": energy, "time_s": time_s, "cycles": totals.cycles, "edp_js": energy * time_s,
            "dram_bytes": totals.dram_bytes, "macs": totals.macs, **resources(hw)}  # fmt: skip


def _reason(exc: Exception) -> str:
    if isinstance(exc, SpecError):
        return "; ".join(str(p) for p in exc.problems)
    return f"{type(exc).__name__}: {exc}"


def warm_up() -> None:
    """Compile the numba kernels of this process once (a worker calls it before its first point)."""
    from e2sim.config.loading import read_hardware_spec, read_workload_spec

    prepared = _prepared(read_workload_spec("lenet5-mnist"), 1)
    price(prepared.workload, prepared.graph, read_hardware_spec("systolic-16x16"), None, False, False,
          (True, "energy"), None)  # fmt: skip
