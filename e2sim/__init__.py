"""e2sim: the energy and cycles of training CNNs on FPGA and ASIC accelerators."""

__version__ = "0.2.0"  # before the imports: api reads it

from e2sim.api import estimate, load_hw, load_workload, lower, run, train
from e2sim.config.errors import Problem, SpecError
from e2sim.graph import TrainingGraph

__all__ = [
    "Problem",
    "SpecError",
    "TrainingGraph",
    "__version__",
    "estimate",
    "load_hw",
    "load_workload",
    "lower",
    "run",
    "train",
]
