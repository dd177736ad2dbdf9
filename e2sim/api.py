"""The Python API: the same verbs as the command line."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from e2sim.config.loading import read_hardware_spec, read_workload_spec
from e2sim.config.workload import Workload
from e2sim.graph import TrainingGraph, build_model
from e2sim.graph import lower as lower_workload
from e2sim.hw import Accelerator
from e2sim.train.loop import TrainResult
from e2sim.train.loop import train as train_workload

WorkloadLike = str | Path | Mapping | Workload
HardwareLike = str | Path | Mapping | Accelerator


def load_workload(spec: WorkloadLike) -> Workload:
    """A checked workload from a YAML path, an embedded name (``lenet5-mnist``) or a mapping.

    Raises SpecError listing every problem, including model shapes that do not fit the dataset.
    """
    if isinstance(spec, Workload):
        return spec
    workload = read_workload_spec(spec)
    build_model(workload)  # a model that does not fit its input is a spec error too
    return workload


def load_hw(spec: HardwareLike) -> Accelerator:
    """A checked accelerator from a YAML path, an embedded name (``systolic-16x16``) or a mapping."""
    if isinstance(spec, Accelerator):
        return spec
    return read_hardware_spec(spec)


def lower(workload: WorkloadLike, batch_size: int | None = None) -> TrainingGraph:
    """One training iteration as a verified dataflow graph (batch: the workload's unless given)."""
    return lower_workload(load_workload(workload), batch_size)


def train(
    workload: WorkloadLike,
    epochs: int | None = None,
    data_dir: str | Path | None = None,
    progress: bool | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train a workload by executing its lowered graph with the reduced-precision kernels.

    Returns per-epoch accuracy, and the counts of everything executed by graph op."""
    return train_workload(load_workload(workload), epochs, data_dir, progress, checkpoint, resume)
