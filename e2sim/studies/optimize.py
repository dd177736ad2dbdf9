"""Optuna as a sweep's sampler (TPE, or NSGA-II for several objectives): its study lives in the
sweep's SQLite file, so a killed sweep resumes with the trials it had told; trials that were
running when it died are marked failed and asked again. Each trial is a design point evaluated and
stored like any other (a trial that lands on a stored point is told its stored result)."""

from __future__ import annotations

from pathlib import Path

from e2sim.config.sweep import OBJECTIVES, Axis, SweepSpec
from e2sim.studies.points import DONE
from e2sim.studies.store import Store


def _suggest(trial, axis: Axis):
    if not axis.is_range:
        return trial.suggest_categorical(axis.path, list(axis.values))
    if axis.integer:
        return trial.suggest_int(axis.path, int(axis.low), int(axis.high), log=axis.log)
    return trial.suggest_float(axis.path, axis.low, axis.high, log=axis.log)


def run_optuna(spec: SweepSpec, store: Store, path: Path, executor, progress: bool) -> None:
    try:
        import optuna
    except ImportError:
        raise RuntimeError('the optuna sampler needs Optuna: pip install "e2sim[sweep]"') from None
    from e2sim.studies.sweep import evaluate_points

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = (optuna.samplers.NSGAIISampler(seed=spec.sampler.seed) if spec.sampler.algorithm == "nsga2"
               else optuna.samplers.TPESampler(seed=spec.sampler.seed))  # fmt: skip
    directions = ["maximize" if OBJECTIVES[o] == "max" else "minimize" for o in spec.objectives]
    study = optuna.create_study(study_name=f"e2sim:{spec.name}", storage=f"sqlite:///{path}", sampler=sampler,
                                directions=directions, load_if_exists=True)  # fmt: skip
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)  # interrupted
    told = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                        optuna.trial.TrialState.PRUNED)))  # fmt: skip
    batch = max(1, getattr(executor, "workers", 1))
    while told < spec.sampler.points:
        trials = [study.ask() for _ in range(min(batch, spec.sampler.points - told))]
        sampled = [(t.number, {a.path: _suggest(t, a) for a in spec.axes}) for t in trials]
        points = evaluate_points(spec, store, sampled, executor, progress)
        stored = {row["key"]: row for row in store.rows(spec.name)}
        by_values = {tuple(sorted(p.values.items())): p.key for p in points}
        for trial, (_, values) in zip(trials, sampled, strict=True):
            row = stored.get(by_values[tuple(sorted(values.items()))])
            if row is not None and row["status"] == DONE:
                study.tell(trial, [row["metrics"][o] for o in spec.objectives])
            else:  # failed or infeasible: pruned, so the sampler learns to avoid it
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            told += 1
