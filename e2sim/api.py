"""The Python API: the same verbs as the command line."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import e2sim.policies  # noqa: F401  (registers the built-in techniques and presets)
from e2sim import __version__
from e2sim.config.errors import CheckpointError, DataError, SpecError
from e2sim.config.loading import embedded_names, read_hardware_spec, read_workload_spec, resolve_spec, topology_path
from e2sim.config.measurement import LOSSES, Measurement
from e2sim.config.policy import PolicySpec, preset, preset_names, read_policy
from e2sim.config.reader import ProblemLog, Section
from e2sim.config.scalesim import read_scalesim_cfg
from e2sim.config.search import SearchSpec, read_search_spec
from e2sim.config.sweep import SweepSpec, read_sweep_spec
from e2sim.config.workload import Workload, with_policy
from e2sim.config.yaml_text import read_yaml_file
from e2sim.counting import OpCounter
from e2sim.graph import TrainingGraph, build_model
from e2sim.hw import Accelerator
from e2sim.lazy import LazyModule
from e2sim.process import StopRequest, keep_heap, stop_on_signals, thread_budget
from e2sim.report.estimate import Estimate
from e2sim.report.run import RunResult
from e2sim.schedule.target import OBJECTIVES
from e2sim.studies.single import (
    activate_checked,
    check_hardware,
    prepare,
    price,
    price_topology,
    price_training,
    run_once,
)

if TYPE_CHECKING:
    from e2sim.studies.calibrate import CalibrationResult
    from e2sim.studies.rena.search import SearchResult
    from e2sim.studies.sweep import SweepResult
    from e2sim.studies.validate import Validation
    from e2sim.train.loop import TrainResult

# what only some verbs need loads when one of them first runs (``e2sim lower`` and ``estimate``
# never load the training engine, the sweep store, the search or the fitting)
loop = LazyModule("e2sim.train.loop")
calibration = LazyModule("e2sim.studies.calibrate")
execution = LazyModule("e2sim.studies.execute")
rena = LazyModule("e2sim.studies.rena.search")
sweeps = LazyModule("e2sim.studies.sweep")
validation = LazyModule("e2sim.studies.validate")

__all__ = [
    "LOSSES",
    "OBJECTIVES",
    "CheckpointError",
    "DataError",
    "RunResult",
    "SpecError",
    "calibrate",
    "estimate",
    "load_hw",
    "load_measurements",
    "load_policy",
    "load_workload",
    "lower",
    "prepare",
    "preset_names",
    "run",
    "search",
    "stop_on_signals",
    "sweep",
    "sweep_status",
    "train_workload",
    "validate",
]  # fmt: skip

WorkloadLike = str | Path | Mapping | Workload
HardwareLike = str | Path | Mapping | Accelerator


def load_workload(spec: WorkloadLike) -> Workload:
    """A checked workload from a YAML path, an embedded name (``lenet5-mnist``) or a mapping.

    Raises SpecError listing every problem, including model shapes that do not fit the dataset
    and a policy the model cannot take.
    """
    if isinstance(spec, Workload):
        return spec
    workload = read_workload_spec(spec)
    activate_checked(workload, build_model(workload))
    return workload


def load_hw(spec: HardwareLike) -> Accelerator:
    """A checked accelerator from a YAML path, an embedded name (``systolic-16x16``), a mapping, or
    a SCALE-Sim ``.cfg`` file."""
    if isinstance(spec, Accelerator):
        return spec
    if isinstance(spec, str | Path) and str(spec).endswith(".cfg"):
        return read_scalesim_cfg(spec)
    return read_hardware_spec(spec)


def lower(workload: WorkloadLike, batch_size: int | None = None) -> TrainingGraph:
    """One training iteration as a verified dataflow graph (batch: the workload's unless given),
    with the ops its policy adds (``graph.contributed``)."""
    return prepare(workload, batch_size).graph


def train_workload(
    workload: WorkloadLike,
    epochs: int | None = None,
    data_dir: str | Path | None = None,
    progress: bool | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    hw: HardwareLike | None = None,
    threads: int | None = None,
) -> TrainResult:
    """Train a workload by executing its lowered graph with the reduced-precision kernels.

    Returns per-epoch accuracy, and the counts of everything executed by graph op. With ``hw``
    that has an approximate mode, a policy may train on it and every
    epoch is also evaluated on it."""
    prepared = prepare(workload)
    accelerator = load_hw(hw) if hw is not None else None
    check_hardware(prepared.workload, prepared.policies, accelerator)
    mode = accelerator.approximate if accelerator is not None else None
    with thread_budget(threads):
        return loop.train(prepared.workload, epochs, data_dir, progress, checkpoint, resume, approximate=mode,
                          graph=prepared.graph, policies=prepared.policies)  # fmt: skip


def estimate(
    workload: WorkloadLike,
    hw: HardwareLike,
    counts: OpCounter | None = None,
    forward_only: bool = False,
    batch_size: int | None = None,
    approximate: bool = False,
    fusion: bool = True,
    objective: str = "energy",
    operand_bits: int | None = None,
    accumulator_bits: int | None = None,
    densities: Mapping[str, float] | None = None,
) -> Estimate:
    """Energy and cycles of one training iteration of ``workload`` on ``hw`` (no training).

    ``workload`` may also be a SCALE-Sim topology CSV (forward layers at ``batch_size``, default 1,
    with ``operand_bits``-bit operands, default 8, and ``accumulator_bits``-bit sums, default 32).
    A workload's iteration includes the ops its policy adds (gates, a filter network, channel
    selection), lowered at ``batch_size``. With ``counts`` (from a training run) every op is
    priced as often as it ran, with the MACs it executed (a counted op the graph does not have is
    an error); ``forward_only`` prices the forward ops alone (inference). ``approximate``: the
    workload's forward conv/linear ops run on ``hw``'s approximate mode. ``fusion``: plan fusion and
    residency across the iteration (else every tensor goes to DRAM and back, layer by layer);
    ``objective``: what the mapper minimises per op (energy, latency or edp). ``densities``:
    non-zero fractions of activations, errors and weights where no run measured them (over the
    spec's ``sparsity``)."""
    keep_heap()
    accelerator = load_hw(hw)
    if objective not in OBJECTIVES:
        raise SpecError.single("estimate", "objective", f"must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    topology = topology_path(workload) if isinstance(workload, str | Path) else None
    if topology is None:
        for key, value in (("operand_bits", operand_bits), ("accumulator_bits", accumulator_bits)):
            if value is not None:
                raise SpecError.single(str(workload), key, "applies to SCALE-Sim topology inputs only: a "
                                       "workload's formats are in its precision block")  # fmt: skip
        prepared = prepare(workload, batch_size)
        return price(prepared.workload, prepared.graph, accelerator, counts, forward_only, approximate,
                      (fusion, objective), densities)  # fmt: skip
    return price_topology(topology, accelerator, 1 if batch_size is None else batch_size, operand_bits,
                          accumulator_bits, (fusion, objective), densities)  # fmt: skip


DEFAULT_WORKLOAD = "lenet5-mnist"
DEFAULT_HARDWARE = "zedboard"


def load_policy(policy: str | Path | PolicySpec) -> PolicySpec:
    """A preset name ({presets}), or a YAML file holding a policy block."""
    if isinstance(policy, PolicySpec):
        return policy
    text = str(policy)
    if text in preset_names():
        return preset(text)
    if not Path(text).exists():
        raise SpecError.single(text, "", f"not a policy preset ({', '.join(preset_names())}) nor a file")
    log = ProblemLog(text)
    spec = read_policy(Section({"policy": read_yaml_file(text)}, "", log), "policy")
    log.raise_if_any()
    return spec


def run(
    workload: WorkloadLike = DEFAULT_WORKLOAD,
    hw: HardwareLike = DEFAULT_HARDWARE,
    policy: str | Path | PolicySpec | None = None,
    epochs: int | None = None,
    data_dir: str | Path | None = None,
    progress: bool | None = None,
    compare_baseline: bool = False,
    fusion: bool = True,
    objective: str = "energy",
    threads: int | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    stop: StopRequest | None = None,
) -> RunResult:
    """Train ``workload`` under ``policy`` (a preset: {presets}; a YAML file; default: the
    workload's) and price the graph that ran on ``hw`` (``fusion`` and ``objective`` as in
    :func:`estimate`).

    Returns a :class:`RunResult`; its ``to_dict()`` is the run report (see ``e2sim.report.run``).
    With ``compare_baseline`` the baseline policy is run too (or read from the cache of earlier
    runs) and the report gains ``comparison``. ``threads``: numba threads of the kernels (BLAS runs
    on one; default ``E2SIM_THREADS`` or every core, see ``e2sim.process``). ``checkpoint``: a
    file written after every epoch; ``resume`` continues from it. ``stop`` (see
    ``e2sim.process.stop_on_signals``): once it turns true the run ends at an iteration boundary
    and the result is partial (``RunResult.partial``; no baseline is run then)."""
    original = workload if isinstance(workload, Workload) else read_workload_spec(workload)
    spec = with_policy(original, load_policy(policy)) if policy is not None else original
    accelerator = load_hw(hw)
    pricing = (fusion, objective)
    with thread_budget(threads):
        (result,) = run_once(prepare(spec), [accelerator], epochs, data_dir, progress, pricing, checkpoint, resume,
                             stop)  # fmt: skip
        if compare_baseline and not result.partial and not stop:
            baseline = _cached_baseline(original, accelerator, epochs, data_dir, progress, pricing, stop)
            if baseline is not None:
                return dataclasses.replace(result, baseline=baseline)
    return result


for _verb in (load_policy, run):
    _verb.__doc__ = _verb.__doc__.replace("{presets}", ", ".join(preset_names()))


def _cached_baseline(spec: Workload, accelerator: Accelerator, epochs, data_dir, progress, pricing,
                     stop: StopRequest | None = None) -> dict | None:  # fmt: skip
    """The baseline run of ``spec`` priced on ``accelerator`` (None when ``stop`` ended it early).
    Its training is cached by what it depends on (the training fingerprint, the accelerator's
    approximate mode that every epoch is evaluated on, epochs, data), not by the accelerator:
    comparing on another one prices it again."""
    baseline = with_policy(spec, preset("baseline"))
    mode = accelerator.approximate
    key = hashlib.sha256(repr((loop.fingerprint(baseline), mode, epochs, str(data_dir), __version__)).encode())
    path = cache_dir() / "trainings" / f"{baseline.name}-{key.hexdigest()[:20]}.pkl"
    prepared = prepare(baseline)
    check_hardware(prepared.workload, prepared.policies, accelerator)
    training = None
    if path.exists():
        with contextlib.suppress(OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
            training = pickle.loads(path.read_bytes())  # a cache e2sim wrote; unreadable: train again
    if training is None:
        training = loop.train(prepared.workload, epochs, data_dir, progress, approximate=mode, graph=prepared.graph,
                              policies=prepared.policies, stop=stop)  # fmt: skip
        if training.interrupted is not None:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".partial")
        temporary.write_bytes(pickle.dumps(training))
        os.replace(temporary, path)
    return price_training(prepared.workload, training, accelerator, pricing).to_dict()


MeasurementLike = str | Path | Measurement


def load_measurements(measurements: Sequence[MeasurementLike]) -> list[Measurement]:
    """Checked measurement files (paths, or names of the shipped ones), in order; ``["shipped"]``: every shipped one."""
    if list(measurements) == ["shipped"]:
        measurements = embedded_names("measurement")
    if not measurements:
        raise SpecError.single("validate", "MEASUREMENT", "name at least one measurement file")
    return [m if isinstance(m, Measurement) else validation.load_measurement(m) for m in measurements]


def validate(measurements: Sequence[MeasurementLike], hw: HardwareLike | None = None) -> Validation:
    """Predicted against measured for every value of ``measurements``, each on its own device (or on
    ``hw``) at its operating point; relative errors and mean absolute percentage errors."""
    keep_heap()
    return validation.validate_measurements(load_measurements(measurements), load_hw(hw) if hw is not None else None)


def calibrate(measurements: Sequence[MeasurementLike], hw: str | Path, fit: Sequence[str], loss: str = "linear",
              out: str | Path | None = None) -> CalibrationResult:  # fmt: skip
    """Fit the energy-table entries and ``static_power_mw`` named in ``fit`` (``NAME`` or
    ``NAME=LOW:HIGH``) of the hardware spec ``hw`` to ``measurements``; standard errors,
    correlations and leave-one-out errors; with ``out``, write the calibrated spec as a new file
    (never over an existing one)."""
    keep_heap()
    spec_path = resolve_spec(hw, "hardware")
    return calibration.calibrate_measurements(load_measurements(measurements), load_hw(hw), spec_path, fit, loss,
                                  Path(out) if out is not None else None)  # fmt: skip


def search(spec: str | Path | SearchSpec, db: str | Path | None = None, workers: int | None = None,
           scheduler: str | None = None, dask: bool = False) -> SearchResult:  # fmt: skip
    """Run (or resume) a RENA search: children of the seed network proposed by the controller (or
    at random), proxy-trained and priced on the sweep executor, stored in the SQLite store ``db``
    (default: next to the spec)."""
    keep_heap()
    if not isinstance(spec, SearchSpec):
        spec = read_search_spec(spec)
    store = Path(db) if db is not None else Path(spec.source).with_suffix(".sqlite")
    return rena.run_search(spec, store, execution.executor_for(workers, scheduler, dask))


def sweep(spec: str | Path | SweepSpec, db: str | Path | None = None, workers: int | None = None,
          scheduler: str | None = None, dask: bool = False, progress: bool | None = None) -> SweepResult:  # fmt: skip
    """Run a sweep file: every design point that its store (``db``, default ``<sweep>.sqlite`` next to
    the file) does not hold yet, on this process (``workers`` 1), ``workers`` local processes, a Dask
    LocalCluster of ``workers`` (``dask``), or the Dask cluster at ``scheduler``. Returns every stored
    point of the sweep and its Pareto front; a killed sweep started again runs only what is missing."""
    keep_heap()
    checked = spec if isinstance(spec, SweepSpec) else read_sweep_spec(spec)
    return sweeps.run_sweep(checked, db, workers, scheduler, dask, progress)


def sweep_status(spec: str | Path | SweepSpec, db: str | Path | None = None) -> dict[str, int]:
    """Stored points per status (done, failed, infeasible, pruned), planned and remaining."""
    return sweeps.status(spec if isinstance(spec, SweepSpec) else read_sweep_spec(spec), db)


def cache_dir() -> Path:
    """E2SIM_CACHE_DIR, else $XDG_CACHE_HOME/e2sim, else ~/.cache/e2sim."""
    if os.environ.get("E2SIM_CACHE_DIR"):
        return Path(os.environ["E2SIM_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "e2sim"
