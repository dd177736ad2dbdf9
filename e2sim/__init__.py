"""e2sim: the energy and cycles of training CNNs on FPGA and ASIC accelerators."""

__version__ = "0.2.0"  # before the imports: api reads it

from e2sim.api import RunResult, estimate, load_hw, load_workload, lower, run, sweep, train_workload
from e2sim.config.errors import Problem, SpecError
from e2sim.graph import TrainingGraph

__all__ = [
    "Problem",
    "RunResult",
    "SpecError",
    "TrainingGraph",
    "__version__",
    "estimate",
    "load_hw",
    "load_workload",
    "lower",
    "run",
    "sweep",
    "train_workload",
]
