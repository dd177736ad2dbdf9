"""The Python API: the same verbs as the command line."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

from e2sim import __version__
from e2sim.config.errors import SpecError
from e2sim.config.hardware import DENSITY_ROLES
from e2sim.config.loading import read_hardware_spec, read_workload_spec, topology_path
from e2sim.config.policy import POLICY_PRESETS, PRESETS, PolicySpec, read_policy
from e2sim.config.reader import ProblemLog, Section
from e2sim.config.scalesim import read_scalesim_cfg, read_scalesim_topology
from e2sim.config.workload import Workload, with_policy
from e2sim.config.yaml_text import read_yaml_file
from e2sim.counting import OpCounter
from e2sim.energy.account import Arithmetic, account
from e2sim.energy.tables import load_table
from e2sim.graph import TrainingGraph, build_model
from e2sim.graph import lower as lower_workload
from e2sim.graph.ir import Op
from e2sim.graph.topology import TOPOLOGY_ACCUMULATOR_BITS, TOPOLOGY_BITS, ops_from_topology
from e2sim.hw import Accelerator
from e2sim.policies.checks import check_approximate, check_policy
from e2sim.policies.eif import filter_graph
from e2sim.policies.emp import emp_ops
from e2sim.policies.slu import gate_ops
from e2sim.policies.smd import LOAD_OP
from e2sim.report.estimate import Estimate
from e2sim.report.run import compare, run_report
from e2sim.schedule.mapper import MappingError
from e2sim.schedule.target import OBJECTIVES
from e2sim.train.loop import TrainResult, fingerprint
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
    check_policy(workload, build_model(workload))  # shapes that do not fit, or a policy the model cannot take
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
    """One training iteration as a verified dataflow graph (batch: the workload's unless given)."""
    return lower_workload(load_workload(workload), batch_size)


def train(
    workload: WorkloadLike,
    epochs: int | None = None,
    data_dir: str | Path | None = None,
    progress: bool | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    hw: HardwareLike | None = None,
) -> TrainResult:
    """Train a workload by executing its lowered graph with the reduced-precision kernels.

    Returns per-epoch accuracy, and the counts of everything executed by graph op. With ``hw``
    that has an approximate mode, AxTrain's passive method trains on it and every epoch is also
    evaluated on it."""
    spec = load_workload(workload)
    mode = None
    if hw is not None:
        accelerator = load_hw(hw)
        check_approximate(spec, accelerator)
        mode = accelerator.approximate
    elif spec.policy.axtrain is not None and spec.policy.axtrain.passive:
        raise SpecError.single(spec.source, "policy.axtrain.passive", "trains on an accelerator's approximate mode: "
                               "pass the hardware spec that has it (hw=...)")  # fmt: skip
    return train_workload(spec, epochs, data_dir, progress, checkpoint, resume, approximate=mode)


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
    with ``operand_bits``-bit operands, default 8, and ``accumulator_bits``-bit sums, default 32). With ``counts`` (from
    ``e2sim.train``) every op is priced as often as it ran, with the MACs it executed;
    ``forward_only`` prices the forward ops alone (inference). ``approximate``: the workload's
    forward conv/linear ops run on ``hw``'s approximate mode. ``fusion``: plan fusion and residency
    across the iteration (else every tensor goes to DRAM and back, layer by layer); ``objective``:
    what the mapper minimises per op (energy, latency or edp). ``densities``: non-zero fractions of
    activations, errors and weights where no run measured them (over the spec's ``sparsity``)."""
    accelerator = load_hw(hw)
    table = load_table(accelerator.technology, accelerator.energy_overrides)
    if objective not in OBJECTIVES:
        raise SpecError.single("estimate", "objective", f"must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    topology = topology_path(workload) if isinstance(workload, str | Path) else None
    if topology is not None:
        bits = TOPOLOGY_BITS if operand_bits is None else operand_bits
        acc = TOPOLOGY_ACCUMULATOR_BITS if accumulator_bits is None else accumulator_bits
        for key, value in (("operand_bits", bits), ("accumulator_bits", acc)):
            if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 64:
                raise SpecError.single(str(workload), key, f"must be a bit width from 2 to 64, got {value!r}")
        batch = 1 if batch_size is None else batch_size
        ops, tensors = ops_from_topology(read_scalesim_topology(topology), batch, bits)
        arithmetic = Arithmetic(acc, frozenset())
        name, forward_only, inputs = Path(workload).stem, True, frozenset(t for op in ops for t in op.reads)
    else:
        for key, value in (("operand_bits", operand_bits), ("accumulator_bits", accumulator_bits)):
            if value is not None:
                raise SpecError.single(str(workload), key, "applies to SCALE-Sim topology inputs only: a "
                                       "workload's formats are in its precision block")  # fmt: skip
        spec = load_workload(workload)
        graph = lower_workload(spec, batch_size)
        ops, tensors, inputs = list(graph.ops), dict(graph.tensors), set(graph.inputs)
        if forward_only:
            ops = [op for op in ops if op.phase == "fwd"]
        if counts is not None and LOAD_OP in counts.ops:  # batches loaded by iterations a policy dropped
            ops.insert(0, Op(LOAD_OP, "input", "input", "fwd", "load", ("input.x", "input.labels"), (), 0, 0,
                             tensors["input.x"].numel))  # fmt: skip
        if spec.policy.emp is not None and not forward_only:  # the channel selection is work too
            ops += emp_ops(graph)
        if spec.policy.eif is not None:  # the filter network runs on the accelerator too
            filtering = filter_graph(spec)
            ops = [op for op in filtering.ops if not forward_only or op.phase == "fwd"] + ops
            tensors.update({k: v for k, v in filtering.tensors.items() if k not in tensors})
            inputs |= filtering.inputs
        if spec.policy.slu is not None:  # the gates are hardware work too
            extra, extra_tensors, state = gate_ops(graph, spec.policy.slu, spec.training.momentum)
            ops += [op for op in extra if not forward_only or op.phase == "fwd"]
            tensors.update(extra_tensors)
            inputs |= state
        arithmetic = arithmetic_of(spec)
        if approximate:
            if accelerator.approximate is None:
                raise SpecError.single(accelerator.source, "approximate", "no approximate mode to price ops on")
            check_approximate(spec, accelerator)
            names = frozenset(op.name for op in graph.ops if op.phase == "fwd" and op.layer_kind in ("conv", "linear"))
            arithmetic = dataclasses.replace(arithmetic, approximate=accelerator.approximate, approximate_ops=names)
        name, batch = spec.name, graph.batch_size
    stated = _densities(densities, accelerator.source)
    try:
        priced = account(ops, tensors, accelerator, table, arithmetic, counts, frozenset(inputs), fusion, objective,
                         stated)  # fmt: skip
    except MappingError as exc:
        raise SpecError.single(accelerator.source, "buffers", str(exc)) from None
    return Estimate(name, accelerator, batch, forward_only, priced.rows, tensors, table, counts is not None,
                    priced.placements, fusion, objective, priced.sparsity, priced.storage)  # fmt: skip


def _densities(given: Mapping[str, float] | None, source: str) -> dict[str, float]:
    """Stated densities, checked: roles activations, errors, weights; fractions from 0 to 1."""
    checked = {}
    for role, value in (given or {}).items():
        if role not in DENSITY_ROLES:
            raise SpecError.single("density", role, f"unknown operand (known: {', '.join(DENSITY_ROLES)})")
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise SpecError.single("density", role, f"must be a fraction of non-zero values from 0 to 1, got {value!r}")
        checked[role] = float(value)
    return checked


def arithmetic_of(workload: Workload) -> Arithmetic:
    p = workload.precision
    operands = {"fwd": (p.activations, p.weights), "bwd_data": (p.errors, p.weights),
                "bwd_weight": (p.activations, p.errors)}  # fmt: skip
    floating = frozenset(phase for phase, pair in operands.items() if any(f.kind == "float" for f in pair))
    return Arithmetic(p.accumulator.bits, floating)


DEFAULT_WORKLOAD = "lenet5-mnist"
DEFAULT_HARDWARE = "zedboard"


def load_policy(policy: str | Path | PolicySpec) -> PolicySpec:
    """A preset name (baseline, smd, slu, psg, e2train), or a YAML file holding a policy block."""
    if isinstance(policy, PolicySpec):
        return policy
    text = str(policy)
    if text in POLICY_PRESETS:
        return PRESETS[text]
    if not Path(text).exists():
        raise SpecError.single(text, "", f"not a policy preset ({', '.join(POLICY_PRESETS)}) nor a file")
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
) -> dict:
    """Train ``workload`` under ``policy`` (default: the workload's) and price what ran on ``hw``
    (``fusion`` and ``objective`` as in :func:`estimate`).

    Returns the run report (see ``e2sim.report.run``); with ``compare_baseline`` the baseline policy
    is run too (or read from the cache of earlier runs) and the report gains ``comparison``."""
    original = load_workload(workload)
    spec = with_policy(original, load_policy(policy)) if policy is not None else original
    check_policy(spec, build_model(spec))
    accelerator = load_hw(hw)
    check_approximate(spec, accelerator)
    pricing = (fusion, objective)
    report = _run_once(spec, accelerator, epochs, data_dir, progress, pricing)
    if compare_baseline:
        baseline = _cached_baseline(original, accelerator, epochs, data_dir, progress, pricing)
        report["comparison"] = compare(report, baseline)
        report["baseline"] = {k: baseline[k] for k in ("accuracy", "epochs", "energy", "hardware_time", "macs")}
    return report


def _run_once(spec: Workload, accelerator: Accelerator, epochs, data_dir, progress, pricing) -> dict:
    mode = accelerator.approximate
    result = train_workload(spec, epochs, data_dir, progress, approximate=mode)
    passive = spec.policy.axtrain is not None and spec.policy.axtrain.passive
    fusion, objective = pricing
    priced = estimate(spec, accelerator, counts=result.counts, approximate=passive, fusion=fusion, objective=objective)
    inference = None
    if mode is not None:  # one inference batch on the exact datapath and on the approximate mode
        inference = tuple(estimate(spec, accelerator, forward_only=True, approximate=a, fusion=fusion,
                                   objective=objective) for a in (False, True))  # fmt: skip
    return run_report(result, priced, spec.policy, spec.training.seed, inference)


def _cached_baseline(spec: Workload, accelerator: Accelerator, epochs, data_dir, progress, pricing) -> dict:
    """The baseline run of ``spec`` on ``accelerator``, from the cache when an identical one ran."""
    baseline = with_policy(spec, PRESETS["baseline"])
    key = hashlib.sha256(repr((fingerprint(baseline), accelerator, epochs, str(data_dir), pricing,
                               __version__)).encode())  # fmt: skip
    path = cache_dir() / "runs" / f"{baseline.name}-{key.hexdigest()[:20]}.json"
    if path.exists():
        return json.loads(path.read_text())
    report = _run_once(baseline, accelerator, epochs, data_dir, progress, pricing)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".partial")
    temporary.write_text(json.dumps(report))
    os.replace(temporary, path)
    return report


def cache_dir() -> Path:
    """E2SIM_CACHE_DIR, else $XDG_CACHE_HOME/e2sim, else ~/.cache/e2sim."""
    if os.environ.get("E2SIM_CACHE_DIR"):
        return Path(os.environ["E2SIM_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "e2sim"
