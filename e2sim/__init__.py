"""e2sim: the energy and cycles of training CNNs on FPGA and ASIC accelerators.

The names below load on first use (``e2sim.run`` imports the training stack then), so that
``import e2sim`` and the command line start quickly."""

__version__ = "0.2.0"

_FROM = {
    "e2sim.api": ("RunResult", "calibrate", "estimate", "load_hw", "load_measurements", "load_workload", "lower", "run",
                  "search", "sweep", "train_workload", "validate"),
    "e2sim.config.errors": ("Problem", "SpecError"),
    "e2sim.graph": ("TrainingGraph",),
}
__all__ = sorted(["__version__", *(name for names in _FROM.values() for name in names)])


def __getattr__(name: str):
    import importlib

    for module, names in _FROM.items():
        if name in names:
            return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'e2sim' has no attribute {name!r}")
