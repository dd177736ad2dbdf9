"""Successive halving over epochs for run points (grid and random samplers).

Every training run of the sweep (the points that share one, see ``points.tasks_of``) trains the
first rung's epochs of its full budget, with a checkpoint after every epoch; the best 1/factor by
test accuracy continue from their checkpoints to the next rung, and so on; the survivors finish
the budget and are priced like any run point, with results identical to a sweep without halving
(a resumed training is bit-identical to an uninterrupted one). The others are stored as
``pruned`` with the accuracy and epochs they reached. Each rung's accuracies are stored as they
come, so a sweep killed at any moment and started again trains nothing twice beyond the epoch its
checkpoint holds. Checkpoints live in ``<store>.checkpoints/`` (a cluster's workers must see it)."""

from __future__ import annotations

import dataclasses
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from e2sim.config.sweep import SweepSpec
from e2sim.studies.points import FAILED, PRUNED, tasks_of
from e2sim.studies.store import Store


def run_halving(spec: SweepSpec, store: Store, path: Path, sampled: Sequence[tuple[int, Mapping[str, Any]]],
                executor, progress: bool) -> None:  # fmt: skip
    from e2sim.studies.sweep import _bar, run_tasks, sort_out

    _, runnable = sort_out(spec, store, sampled)
    points = {p.key: p for p in runnable}
    folder = path.with_name(path.name + ".checkpoints")
    folder.mkdir(exist_ok=True)
    alive = [dataclasses.replace(t, checkpoint=str(folder / f"{t.training[:32]}.npz"))
             for t in tasks_of(spec, runnable, executor.workers)]  # fmt: skip
    rungs = spec.halving.rungs(spec.epochs)
    for epochs in rungs[:-1]:
        known = store.rung(spec.name, epochs)
        todo = [dataclasses.replace(t, stop_after=epochs) for t in alive if t.training not in known]
        bar = _bar(progress, sum(len(t.keys) for t in todo), f"{spec.name}: {epochs}/{spec.epochs} epochs")
        by_key = {key: t for t in todo for key in t.keys}
        for outcome in run_tasks(spec, store, todo, points, executor, bar):
            accuracy = outcome.metrics["accuracy"] if outcome.metrics is not None else None
            store.record_rung(spec.name, by_key[outcome.key].training, epochs, accuracy, outcome.error)
        bar.close()
        known = store.rung(spec.name, epochs)
        trained = sorted((t for t in alive if known[t.training][0] is not None),
                         key=lambda t: (-known[t.training][0], t.training))  # fmt: skip
        survivors = trained[: math.ceil(len(trained) / spec.halving.factor)]
        going_on = {t.training for t in survivors}
        rows = []
        for t in alive:
            accuracy, error = known[t.training]
            status = FAILED if accuracy is None else None if t.training in going_on else PRUNED
            if status is not None:
                metrics = {"accuracy": accuracy, "epochs": epochs} if accuracy is not None else None
                rows += [(key, points[key].position, points[key].values, status, metrics, error, 0.0) for key in t.keys]
        store.record(spec.name, rows)
        alive = survivors
    stored = store.finished(points)
    final = [t for t in alive if not set(t.keys) <= stored]
    bar = _bar(progress, sum(len(t.keys) for t in final), f"{spec.name}: {spec.epochs}/{spec.epochs} epochs")
    run_tasks(spec, store, final, points, executor, bar)
    bar.close()
    if set(points) <= store.finished(points):  # every training finished or stopped: no checkpoint is needed
        shutil.rmtree(folder, ignore_errors=True)
