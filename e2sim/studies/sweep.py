"""A sweep: sample design points, run those the store does not hold yet on an executor, store each
as it finishes, and find the Pareto front of what is stored."""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from e2sim.config.sweep import OBJECTIVES, SweepSpec
from e2sim.studies.execute import executor_for
from e2sim.studies.points import (
    FAILED,
    INFEASIBLE,
    RUNG,
    Outcome,
    Point,
    Task,
    evaluate,
    grid_values,
    random_values,
    resolve,
    tasks_of,
    within,
)
from e2sim.studies.store import STATUSES, Store


@dataclass(frozen=True)
class SweepResult:
    """The stored points of a sweep (sampled order), the keys on its Pareto front, the store, and
    how many points this call added to the store (the others were there already)."""

    spec: SweepSpec
    store: Path
    points: tuple[Mapping[str, Any], ...]
    front: tuple[str, ...]
    ran: int = 0

    def table(self) -> list[dict[str, Any]]:
        """One flat row per point: status, each axis, each metric, on_front, error."""
        front = set(self.front)
        axes = [a.path for a in self.spec.axes]
        metrics = sorted({m for p in self.points for m in p["metrics"]})
        return [{"key": p["key"][:16], "position": p["position"], "status": p["status"],
                 **{a: p["params"].get(a) for a in axes}, **{m: p["metrics"].get(m) for m in metrics},
                 "on_front": p["key"] in front, "error": p["error"] or ""} for p in self.points]  # fmt: skip

    def write_csv(self, path: str | Path) -> Path:
        import csv

        rows = self.table()
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["key"])
            writer.writeheader()
            writer.writerows(rows)
        return Path(path)

    def write_parquet(self, path: str | Path) -> Path:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise RuntimeError('Parquet export needs pyarrow: pip install "e2sim[sweep]"') from None
        rows = self.table()
        columns = {name: [_scalar(r[name]) for r in rows] for name in (rows[0] if rows else {"key": None})}
        pq.write_table(pa.table(columns), path)
        return Path(path)


def _scalar(value: Any) -> Any:
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


def default_store(spec: SweepSpec) -> Path:
    """``<sweep file stem>.sqlite`` next to the sweep file."""
    return spec.folder / f"{Path(spec.source).stem}.sqlite"


def run_sweep(spec: SweepSpec, db: str | Path | None = None, workers: int | None = None, scheduler: str | None = None,
              dask: bool = False, progress: bool | None = None) -> SweepResult:  # fmt: skip
    """Run every point of ``spec`` the store does not hold yet and return all of them."""
    path = Path(db) if db is not None else default_store(spec)
    with Store(path) as store, executor_for(workers, scheduler, dask) as executor:
        before = len(store.rows(spec.name))
        if spec.sampler.kind == "optuna":
            from e2sim.studies.optimize import run_optuna

            run_optuna(spec, store, path, executor, _show(progress))
        else:
            values = grid_values(spec) if spec.sampler.kind == "grid" else random_values(spec)
            if spec.halving is not None:
                from e2sim.studies.halving import run_halving

                run_halving(spec, store, path, list(enumerate(values)), executor, _show(progress))
            else:
                evaluate_points(spec, store, list(enumerate(values)), executor, _show(progress))
        result = collect(spec, store)
        return dataclasses.replace(result, ran=len(result.points) - before)


def _show(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


def sort_out(spec: SweepSpec, store: Store, sampled: Sequence[tuple[int, Mapping[str, Any]]]
             ) -> tuple[list[Point], list[Point]]:  # fmt: skip
    """Resolve ``sampled`` (position, axis values) into distinct points, record the invalid and
    infeasible ones the store lacks at once (each point's specs and constraints checked once),
    and return every point and the runnable ones (stored or not)."""
    points, seen, bases = [], set(), {}
    for position, values in sampled:
        point = resolve(spec, position, values, bases)
        if point.key not in seen:  # two samples of one point (random draws) run once
            seen.add(point.key)
            points.append(point)
    done = store.finished(p.key for p in points)
    immediate, runnable = [], []
    for p in points:
        reason = p.error or within(spec, p.hardware)
        if reason is None:
            runnable.append(p)
        elif p.key not in done:
            immediate.append((p.key, p.position, p.values, FAILED if p.error else INFEASIBLE, None, reason, 0.0))
    store.record(spec.name, immediate)
    return points, runnable


def evaluate_points(spec: SweepSpec, store: Store, sampled: Sequence[tuple[int, Mapping[str, Any]]], executor,
                    progress: bool) -> list[Point]:  # fmt: skip
    """Run the points of ``sampled`` that the store lacks on ``executor`` (entered), storing each
    task's points as it completes (see :func:`sort_out`)."""
    points, runnable = sort_out(spec, store, sampled)
    done = store.finished(p.key for p in runnable)
    fresh = [p for p in runnable if p.key not in done]
    bar = _bar(progress, len(fresh), spec.name)
    run_tasks(spec, store, tasks_of(spec, fresh, executor.workers), {p.key: p for p in fresh}, executor, bar)
    bar.close()
    return points


def run_tasks(spec: SweepSpec, store: Store, tasks: Sequence[Task], points: Mapping[str, Point], executor,
              bar) -> list[Outcome]:  # fmt: skip
    """Run ``tasks`` on ``executor``; store the points (``points`` by key) of each one as it
    completes, unless it is a rung of successive halving (the caller stores those)."""
    futures = [executor.submit(evaluate, task) for task in tasks]
    found = []
    for future in executor.completed(futures):
        outcomes = future.result()
        found += outcomes
        store.record(spec.name, [(o.key, points[o.key].position, points[o.key].values, o.status, o.metrics, o.error,
                                  o.seconds) for o in outcomes if o.status != RUNG])  # fmt: skip
        bar.update(len(outcomes))
    return found


def _bar(enabled: bool, total: int, name: str):
    try:
        from tqdm import tqdm
    except ImportError:  # progress is optional
        enabled = False
    if not enabled:
        return _NoBar()
    return tqdm(total=total, desc=name, unit="point", file=sys.stderr)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def collect(spec: SweepSpec, store: Store) -> SweepResult:
    points = tuple(store.rows(spec.name))
    return SweepResult(spec, store.path, points, pareto_front(points, spec.objectives))


def pareto_front(points: Sequence[Mapping[str, Any]], objectives: Sequence[str],
                 senses: Mapping[str, str] = OBJECTIVES) -> tuple[str, ...]:  # fmt: skip
    """Keys of the done points no other done point dominates (at least as good in every objective,
    better in one); each objective maximised or minimised as ``senses`` says (``accuracy``: max)."""
    def usable(p: Mapping[str, Any]) -> bool:
        return p["status"] == "done" and all(isinstance(p["metrics"].get(o), int | float)
                                             and math.isfinite(p["metrics"][o]) for o in objectives)  # fmt: skip

    done = [p for p in points if usable(p)]
    if not done:
        return ()
    sign = np.array([-1.0 if senses[o] == "max" else 1.0 for o in objectives])
    values = np.array([[p["metrics"][o] for o in objectives] for p in done]) * sign
    front = []
    for i, row in enumerate(values):
        dominated = np.any(np.all(values <= row, axis=1) & np.any(values < row, axis=1))
        if not dominated:
            front.append(done[i]["key"])
    return tuple(front)


def status(spec: SweepSpec, db: str | Path | None = None) -> dict[str, int]:
    """How many points of the sweep are stored per status, and how many the sampler asks for."""
    path = Path(db) if db is not None else default_store(spec)
    if not path.exists():
        counts = dict.fromkeys(STATUSES, 0)
    else:
        with Store(path) as store:
            counts = store.counts(spec.name)
    planned = spec.grid_size() if spec.sampler.kind == "grid" else spec.sampler.points
    return {**counts, "planned": planned, "remaining": max(0, planned - sum(counts.values()))}
