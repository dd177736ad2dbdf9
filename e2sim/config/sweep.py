"""Sweep specs: a base workload, hardware and policy, axes named by key path into them,
constraints, objectives and a sampler — YAML -> checked -> frozen.

```yaml
name: systolic-shapes
kind: estimate                     # estimate (one nominal iteration) | run (train, then price)
workload: resnet20-cifar10         # embedded name or a path (relative to this file)
hardware: systolic-16x16
policy: baseline                   # a preset or a policy block
batch: 128                         # estimate points (default: the workload's)
epochs: 1                          # run points (default: the workload's)
axes:
  hw.pe_array.rows: [8, 16, 32]                          # values
  hw.buffers.ifmap.size_kb: {log_range: [32, 1024], steps: 6}
  policy.smd.drop_probability: {range: [0.2, 0.7], steps: 3}
  precision.weights: [int8, int4]                       # any other key path: into the workload
  workload: [lenet5-mnist, resnet20-cifar10]            # the base workload itself
constraints: {pe_count: {max: 1024}, on_chip_kb: {max: 512}}
objectives: [energy_j, time_s]
sampler: grid    # grid | {random: {points: 50, seed: 0}} | {optuna: {trials: 40, seed: 0, algorithm: tpe}}
halving: {min_epochs: 1, factor: 3}  # run points, grid/random: successive halving over the sweep's epochs
```
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2sim.config.errors import SpecError
from e2sim.config.hardware import read_hardware
from e2sim.config.loading import resolve_spec, spec_document
from e2sim.config.policy import preset_block, preset_names
from e2sim.config.reader import (
    Invalid,
    ProblemLog,
    Section,
    at_most,
    boolean,
    non_negative_int,
    one_of,
    positive_int,
    string,
)
from e2sim.config.workload import read_workload
from e2sim.config.yaml_text import read_yaml_file

KINDS = ("estimate", "run")
# objective -> direction; resources come from the hardware spec alone
OBJECTIVES = {"energy_j": "min", "time_s": "min", "cycles": "min", "edp_js": "min", "dram_bytes": "min",
              "pe_count": "min", "on_chip_kb": "min", "accuracy": "max"}  # fmt: skip
RESOURCES = ("pe_count", "on_chip_kb")  # what constraints bound (known before a point is evaluated)
MAPPER_OBJECTIVES = ("energy", "latency", "edp")
OPTUNA_ALGORITHMS = ("tpe", "nsga2")
MAX_GRID_POINTS = 1_000_000


@dataclass(frozen=True)
class Axis:
    """One swept key. ``target``: hardware, workload, policy, or base (the workload itself);
    ``keys``: the path inside that document. Explicit ``values`` (a list, or a range's grid), and
    for a range its bounds (random and Optuna sample inside them)."""

    path: str
    target: str
    keys: tuple[str, ...]
    values: tuple[Any, ...]
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False

    @property
    def is_range(self) -> bool:
        return self.low is not None


@dataclass(frozen=True)
class Bound:
    key: str  # a resource (pe_count, on_chip_kb)
    low: float | None
    high: float | None


@dataclass(frozen=True)
class Sampler:
    kind: str  # grid | random | optuna
    points: int = 0  # random: points; optuna: trials
    seed: int = 0
    algorithm: str = "tpe"


@dataclass(frozen=True)
class Halving:
    """Successive halving over epochs for run points: every training runs ``min_epochs`` of the
    full budget (the sweep's ``epochs``, its lr schedule included), the best 1/``factor`` by test
    accuracy go on to ``factor`` times as many epochs, and so on until the survivors finish."""

    min_epochs: int
    factor: int

    def rungs(self, epochs: int) -> tuple[int, ...]:
        """Epochs trained by the end of each rung; the last is ``epochs``."""
        found = [self.min_epochs]
        while found[-1] * self.factor < epochs:
            found.append(found[-1] * self.factor)
        return (*found, epochs)


@dataclass(frozen=True)
class SweepSpec:
    name: str
    source: str  # the sweep file (in error messages)
    folder: Path  # relative paths start here
    kind: str
    workload: Any  # a name, a path or a mapping
    hardware: Any
    policy: Any  # a preset name, a block, or None (the workload's)
    batch: int | None
    epochs: int | None
    fusion: bool
    mapper_objective: str
    axes: tuple[Axis, ...]
    constraints: tuple[Bound, ...]
    objectives: tuple[str, ...]
    sampler: Sampler
    halving: Halving | None = None

    def grid_size(self) -> int:
        return math.prod(len(a.values) for a in self.axes)


# -- documents of a point ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PointDocuments:
    """The resolved specs of one point, as mappings (what the readers check), with their origins."""

    workload: dict
    workload_source: str
    hardware: dict
    hardware_source: str
    hardware_folder: Path
    workload_folder: Path | None = None  # where files the workload names (an ONNX model) are


def base_documents(spec: SweepSpec, workload: Any = None) -> PointDocuments:
    """The base workload (or ``workload``) and hardware as mappings, the sweep's policy applied."""
    wl = workload if workload is not None else spec.workload
    w_data, w_source, w_folder = spec_document(_relative(wl, spec.folder, "workload"), "workload")
    h_data, h_source, h_folder = spec_document(_relative(spec.hardware, spec.folder, "hardware"), "hardware")
    w_data, h_data = copy.deepcopy(dict(w_data)), copy.deepcopy(dict(h_data))
    if spec.policy is not None:
        _set_policy(w_data, spec.policy)
    return PointDocuments(w_data, w_source, h_data, h_source, h_folder, w_folder)


def point_documents(spec: SweepSpec, values: Mapping[str, Any], bases: dict[str, PointDocuments] | None = None
                    ) -> PointDocuments:  # fmt: skip
    """The documents of the point where each axis (by path) takes ``values[path]``. ``bases``: the
    base documents already read in this pass, by base (filled as they are read: every point of a
    sweep starts from a copy of one of a few bases, read from their files once)."""
    base = next((values[a.path] for a in spec.axes if a.target == "base"), None)
    if bases is None:
        docs = base_documents(spec, base)
    else:
        known = json.dumps(base, sort_keys=True, default=str)
        if known not in bases:
            bases[known] = base_documents(spec, base)
        docs = dataclasses.replace(bases[known], workload=copy.deepcopy(bases[known].workload),
                                   hardware=copy.deepcopy(bases[known].hardware))  # fmt: skip
    for axis in spec.axes:
        if axis.target != "base":
            apply_axis(docs, axis, values[axis.path])
    return docs


def apply_axis(docs: PointDocuments, axis: Axis, value: Any) -> None:
    if axis.target == "hardware":
        _set(docs.hardware, axis.keys, value)
    elif axis.target == "workload":
        _set(docs.workload, axis.keys, value)
    else:  # policy: a preset in the workload becomes its block first
        policy = docs.workload.get("policy", "baseline")
        if isinstance(policy, str):
            _set_policy(docs.workload, policy)
        if not isinstance(docs.workload.get("policy"), dict):
            docs.workload["policy"] = {}
        _set(docs.workload["policy"], axis.keys, value)


def _set_policy(workload: dict, policy: Any) -> None:
    if isinstance(policy, str) and policy in preset_names():
        block, precision = preset_block(policy)
        workload["policy"] = copy.deepcopy(dict(block or {})) or "baseline"
        if precision is not None:
            workload["precision"] = dict(precision)
    else:
        workload["policy"] = copy.deepcopy(policy)


def _set(document: dict, keys: tuple[str, ...], value: Any) -> None:
    for key in keys[:-1]:
        if not isinstance(document.get(key), dict):
            document[key] = dict(document[key]) if isinstance(document.get(key), Mapping) else {}
        document = document[key]
    document[keys[-1]] = value


def _relative(spec: Any, folder: Path, kind: str) -> Any:
    """A path relative to the sweep file, else an embedded name (or a mapping) as given."""
    if isinstance(spec, str) and (folder / spec).exists():
        return folder / spec
    return spec


def check_documents(docs: PointDocuments) -> tuple[Any, Any]:
    """(Workload, Accelerator) of a point; SpecError when either is invalid."""
    workload = read_workload(docs.workload, docs.workload_source, docs.workload_folder)
    hardware = read_hardware(docs.hardware, docs.hardware_source, docs.hardware_folder)
    return workload, hardware


# -- reading ------------------------------------------------------------------------------------------


def read_sweep_spec(path: str | Path) -> SweepSpec:
    """Read and check a sweep file: every problem with the file and key path, raised together.
    Each axis value (a range's ends) is applied to the base specs and checked there."""
    path = Path(path)
    if not path.exists():
        raise SpecError.single(str(path), "", "no such sweep file")
    log = ProblemLog(str(path))
    top = Section.of(read_yaml_file(path), "", log)
    if top is None:
        log.raise_if_any()
    name = top.read("name", string, default=path.stem)
    kind = top.read("kind", one_of(*KINDS), default="estimate")
    workload = top.read("workload", _spec_name)
    hardware = top.read("hardware", _spec_name)
    policy = top.data.get("policy")
    top.read("policy", _policy_value, default=None)
    batch = top.read("batch", at_most(positive_int, 65_536), default=None)
    epochs = top.read("epochs", at_most(positive_int, 100_000), default=None)
    fusion = top.read("fusion", boolean, default=True)
    mapper = top.read("mapper_objective", one_of(*MAPPER_OBJECTIVES), default="energy")
    axes = _read_axes(top.section("axes"))
    constraints = _read_constraints(top.section("constraints", default={}))
    objectives = top.read_list("objectives", one_of(*OBJECTIVES), default=("energy_j", "time_s"))
    sampler = _read_sampler(top, "sampler")
    halving = _read_halving(top, kind, epochs, sampler, axes)
    top.finish()
    if objectives and "accuracy" in objectives and kind != "run":
        log.add("objectives", "accuracy needs run points (kind: run)")
    log.raise_if_any()
    spec = SweepSpec(name, str(path), path.parent, kind, workload, hardware, policy, batch, epochs, fusion, mapper,
                     axes, constraints, tuple(objectives), sampler, halving)  # fmt: skip
    _check_bases(spec, log)
    if spec.sampler.kind == "grid" and spec.grid_size() > MAX_GRID_POINTS:
        log.add("sampler", f"a grid of {spec.grid_size():,} points is more than {MAX_GRID_POINTS:,}: use random or "
                "optuna, or fewer values")  # fmt: skip
    log.raise_if_any()
    return spec


def _spec_name(value: Any) -> Any:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, Mapping):
        return dict(value)
    raise Invalid("must be a spec name, a path or a mapping")


def _policy_value(value: Any) -> Any:
    if value is None or isinstance(value, Mapping) or (isinstance(value, str) and value in preset_names()):
        return value
    raise Invalid(f"must be a preset ({', '.join(preset_names())}) or a policy block")


def _target(path: str) -> tuple[str, tuple[str, ...]]:
    parts = tuple(path.split("."))
    if path == "workload":
        return "base", ()
    if parts[0] in ("hw", "hardware") and len(parts) > 1:
        return "hardware", parts[1:]
    if parts[0] == "policy" and len(parts) > 1:
        return "policy", parts[1:]
    return "workload", parts


def _read_axes(s: Section | None) -> tuple[Axis, ...]:
    if s is None:
        return ()
    if not s.data:
        s.log.add(s.path, "name at least one axis (a key path and its values)")
    axes = []
    for key in list(s.data):
        if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
            s.log.add(s.path, f"axis keys are dotted key paths, got {key!r}")
            continue
        target, keys = _target(key)
        raw = s.data[key]
        s.read(key, lambda v: v)  # marks it known
        where = s.key_path(key)
        if isinstance(raw, list):
            if not raw:
                s.log.add(where, "an empty axis: give at least one value")
                continue
            axes.append(Axis(key, target, keys, tuple(raw)))
        elif isinstance(raw, Mapping):
            axis = _read_range(Section(raw, where, s.log), key, target, keys)
            if axis is not None:
                axes.append(axis)
        else:
            s.log.add(where, f"must be a list of values or {{range|log_range: [low, high], steps: N}}, got {raw!r}")
    if any(a.target == "base" for a in axes) and any(not isinstance(v, str) for a in axes if a.target == "base"
                                                     for v in a.values):  # fmt: skip
        s.log.add(s.key_path("workload"), "the workload axis takes spec names or paths")
    return tuple(axes)


def _read_range(s: Section, key: str, target: str, keys: tuple[str, ...]) -> Axis | None:
    log_scale = s.has("log_range")
    bounds = s.read_list("log_range" if log_scale else "range", _number, length=2)
    if log_scale and s.has("range"):
        s.log.add(s.path, "give range or log_range, not both")
    steps = s.read("steps", at_most(positive_int, 10_000), default=None)
    s.finish()
    if bounds is None:
        return None
    low, high = bounds
    if not low < high or (log_scale and low <= 0):
        s.log.add(s.path, f"needs low < high{' and low > 0' if log_scale else ''}, got [{low}, {high}]")
        return None
    integer = isinstance(low, int) and isinstance(high, int)
    values: tuple = ()
    if steps is not None:
        if steps == 1:
            grid = [low]
        elif log_scale:
            grid = [low * (high / low) ** (i / (steps - 1)) for i in range(steps)]
        else:
            grid = [low + (high - low) * i / (steps - 1) for i in range(steps)]
        values = tuple(dict.fromkeys(round(v) if integer else float(v) for v in grid))
    return Axis(key, target, keys, values, float(low), float(high), log_scale, integer)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Invalid("must be a finite number")
    return value


def _read_constraints(s: Section | None) -> tuple[Bound, ...]:
    if s is None:
        return ()
    bounds = []
    for key in list(s.data):
        if key not in RESOURCES:
            s.read(key, lambda v: v)
            s.log.add(s.key_path(key), f"unknown constraint (known: {', '.join(RESOURCES)})")
            continue
        b = s.section(key)
        if b is None:
            continue
        low = b.read("min", _number, default=None)
        high = b.read("max", _number, default=None)
        b.finish()
        if low is None and high is None:
            b.log.add(b.path, "give min, max or both")
        bounds.append(Bound(key, low, high))
    return tuple(bounds)


def _read_sampler(top: Section, key: str) -> Sampler:
    raw = top.data.get(key, "grid")
    if isinstance(raw, str):
        top.read(key, one_of("grid"), default="grid")  # random and optuna need their sizes
        return Sampler("grid")
    s = top.section(key)
    if s is None:
        return Sampler("grid")
    kinds = [k for k in s.data if k in ("random", "optuna")]
    if len(kinds) != 1 or len(s.data) != 1:
        s.log.add(s.path, "must be grid, {random: {points: N, seed: S}} or {optuna: {trials: N, seed: S, algorithm: "
                  "tpe|nsga2}}")  # fmt: skip
        return Sampler("grid")
    kind = kinds[0]
    b = s.section(kind)
    if b is None:
        return Sampler("grid")
    points = b.read("points" if kind == "random" else "trials", at_most(positive_int, 1_000_000))
    seed = b.read("seed", at_most(non_negative_int, 2**32 - 1), default=0)
    algorithm = b.read("algorithm", one_of(*OPTUNA_ALGORITHMS), default="tpe") if kind == "optuna" else "tpe"
    b.finish()
    return Sampler(kind, points or 0, seed or 0, algorithm or "tpe")


def _read_halving(top: Section, kind: str, epochs: int | None, sampler: Sampler, axes) -> Halving | None:
    h = top.section("halving", default=None)
    if h is None:
        return None
    min_epochs = h.read("min_epochs", at_most(positive_int, 100_000), default=1)
    factor = h.read("factor", at_most(positive_int, 64), default=3)
    h.finish()
    log = top.log
    if factor is not None and factor < 2:
        log.add(h.key_path("factor"), f"must be at least 2, got {factor}")
    if kind != "run":
        log.add(h.path, "successive halving needs run points (kind: run)")
    elif epochs is None:
        log.add(h.path, "needs the sweep's epochs: the full budget that the best points train for")
    elif min_epochs is not None and min_epochs >= epochs:
        log.add(h.key_path("min_epochs"), f"must be less than the sweep's epochs ({epochs}), got {min_epochs}")
    if sampler.kind == "optuna":
        log.add(h.path, "works with the grid and random samplers (an Optuna study samples as it goes)")
    if any(a.path == "training.epochs" for a in axes or ()):
        log.add(h.path, "the epochs are the sweep's budget; an axis on training.epochs cannot be halved")
    return Halving(min_epochs or 1, factor or 3)


def _check_bases(spec: SweepSpec, log: ProblemLog) -> None:
    """The base specs, and every axis value (a range's ends) applied to them alone, must read."""
    try:
        docs = base_documents(spec)
        check_documents(docs)
    except SpecError as exc:
        for problem in exc.problems:
            log.add("workload" if "workload" in problem.source else "hardware", str(problem))
        return
    for axis in spec.axes:
        candidates = axis.values or ()
        if axis.is_range:
            ends = (axis.low, axis.high)
            candidates = tuple(dict.fromkeys((*candidates, *(round(v) if axis.integer else v for v in ends))))
        for value in candidates:
            try:
                if axis.target == "base":
                    resolve_spec(_relative(value, spec.folder, "workload"), "workload")
                    check_documents(base_documents(spec, value))
                else:
                    docs = base_documents(spec)
                    apply_axis(docs, axis, value)
                    check_documents(docs)
            except SpecError as exc:
                first = exc.problems[0]
                log.add(f"axes.{axis.path}", f"value {value!r}: {first.path}: {first.message}")
                break
