"""Finding and loading spec files: a path, or the name of a spec that ships with e2sim."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from e2sim.config.errors import SpecError
from e2sim.config.hardware import read_hardware
from e2sim.config.workload import Workload, read_workload
from e2sim.config.yaml_text import read_yaml_file
from e2sim.hw.accelerator import Accelerator

SPEC_DIRS = {"workload": "workloads", "hardware": "hw_specs", "measurement": "measurements"}


def embedded_dir(kind: str) -> Path:
    """The folder of the specs of ``kind`` (``workload`` or ``hardware``) shipped in the package."""
    return Path(str(resources.files("e2sim") / "specs" / SPEC_DIRS[kind]))


def embedded_names(kind: str) -> list[str]:
    return sorted(p.stem for p in embedded_dir(kind).glob("*.yaml"))


def resolve_spec(spec: str | Path, kind: str) -> Path:
    """A file path as given, or the embedded spec of that name (``lenet5-mnist``, ``systolic-16x16``)."""
    path = Path(spec)
    if path.exists() or path.suffix or len(path.parts) > 1:
        return path
    embedded = embedded_dir(kind) / f"{spec}.yaml"
    if embedded.exists():
        return embedded
    names = ", ".join(embedded_names(kind))
    raise SpecError.single(str(spec), "", f"no such file, and no embedded {kind} spec of that name ({names})")


def topology_path(spec: str | Path) -> Path | None:
    """A SCALE-Sim topology: a ``.csv`` path, or the name of one shipped with e2sim
    (``alexnet-conv``); None if ``spec`` names no topology."""
    path = Path(spec)
    if path.suffix == ".csv":
        return path if path.exists() or len(path.parts) > 1 else _embedded_csv(path.stem) or path
    return _embedded_csv(str(spec)) if not path.exists() and not path.suffix and len(path.parts) == 1 else None


def _embedded_csv(name: str) -> Path | None:
    candidate = embedded_dir("workload") / f"{name}.csv"
    return candidate if candidate.exists() else None


def read_workload_spec(spec: str | Path | Mapping) -> Workload:
    """Read and check a workload from a file, an embedded name, an already-parsed mapping, or an
    ONNX file (a workload made for it: see ``onnx_model.onnx_workload``)."""
    if isinstance(spec, str | Path) and str(spec).endswith(".onnx"):
        from e2sim.config.onnx_model import onnx_workload

        return read_workload(onnx_workload(Path(spec)), str(spec))
    data, source, folder = spec_document(spec, "workload")
    return read_workload(data, source, folder)


def read_hardware_spec(spec: str | Path | Mapping) -> Accelerator:
    """Read and check a hardware spec from a file, an embedded name or an already-parsed mapping."""
    data, source, folder = spec_document(spec, "hardware")
    return read_hardware(data, source, folder)


def spec_document(spec: str | Path | Mapping, kind: str) -> tuple[Any, str, Path]:
    """(parsed document, its name in error messages, the folder its relative file names start from)."""
    if isinstance(spec, Mapping):
        return spec, f"<{kind} mapping>", Path.cwd()
    path = resolve_spec(spec, kind)
    embedded = path.parent == embedded_dir(kind) and not Path(spec).exists()
    source = f"{SPEC_DIRS[kind]}/{path.name} (embedded)" if embedded else str(spec)
    return read_yaml_file(path), source, path.parent
