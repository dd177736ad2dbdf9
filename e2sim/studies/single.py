"""One design point: a workload prepared (model built, policies activated and checked, the
iteration lowered with their ops), trained, and priced on one or more accelerators. The API and
sweeps both go through here."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from e2sim.config.errors import SpecError
from e2sim.config.hardware import DENSITY_ROLES
from e2sim.config.loading import read_workload_spec
from e2sim.config.policy import check_policy_spec
from e2sim.config.scalesim import TopologyLayer, read_scalesim_topology
from e2sim.config.workload import Workload
from e2sim.counting import OpCounter
from e2sim.energy.account import Arithmetic, account, check_counts
from e2sim.energy.many import Totals, account_points
from e2sim.energy.tables import load_table
from e2sim.graph import TrainingGraph, build_model
from e2sim.graph import lower as lower_workload
from e2sim.graph.models import Model
from e2sim.graph.topology import TOPOLOGY_ACCUMULATOR_BITS, TOPOLOGY_BITS, ops_from_topology
from e2sim.hw import Accelerator
from e2sim.lazy import LazyModule
from e2sim.policies.base import Policy, activate
from e2sim.process import StopRequest, gc_paused
from e2sim.report.estimate import Estimate
from e2sim.report.run import RunResult
from e2sim.schedule.mapper import MappingError

if TYPE_CHECKING:
    from e2sim.train.loop import TrainResult

loop = LazyModule("e2sim.train.loop")  # the training stack loads when something trains
approximate_numerics = LazyModule("e2sim.numerics.approximate")

Pricing = tuple[bool, str]  # (fusion, mapper objective)


def activate_checked(workload: Workload, model: Model) -> tuple[Policy, ...]:
    """The workload's policies, checked against each other and against ``model``."""
    check_policy_spec(workload.policy, workload.source)
    policies = activate(workload)
    for policy in policies:
        policy.check_model(model)
    return policies


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A workload, its active policies, and its iteration lowered with their ops."""

    workload: Workload
    policies: tuple[Policy, ...]
    graph: TrainingGraph


def prepare(workload: Workload | str | Mapping, batch_size: int | None = None) -> Prepared:
    """Read and check ``workload``, activate its policies and lower its iteration (the model built once)."""
    spec = workload if isinstance(workload, Workload) else read_workload_spec(workload)
    with gc_paused():
        model = build_model(spec)
        policies = activate_checked(spec, model)
        graph = lower_workload(spec, batch_size, extensions=[p.extend for p in policies], model=model)
    return Prepared(spec, policies, graph)


def check_hardware(spec: Workload, policies: tuple[Policy, ...], hw: Accelerator | None) -> None:
    """Each policy's demands on ``hw``; then, when ``hw`` has an approximate mode (every epoch is
    evaluated on it), intN weights and activations that its multiplier covers."""
    for policy in policies:
        policy.check_hardware(hw)
    mode = hw.approximate if hw is not None else None
    if mode is None:
        return
    p = spec.precision
    for role in ("weights", "activations"):
        fmt = getattr(p, role)
        if fmt.kind != "int":
            raise SpecError.single(hw.source, "approximate", f"the approximate mode multiplies intN operands; "
                                   f"workload {spec.name} has precision.{role} {fmt.name}")  # fmt: skip
    shortfall = approximate_numerics.table_shortfall(mode.multiplier, max(p.weights.bits, p.activations.bits))
    if shortfall is not None:
        raise SpecError.single(hw.source, "approximate.multiplier.table_file", shortfall)


def price(spec: Workload, graph: TrainingGraph, accelerator: Accelerator, counts: OpCounter | None,
           forward_only: bool, approximate: bool, pricing: tuple[bool, str], densities: Mapping[str, float] | None,
           expect_all: bool = False) -> Estimate:  # fmt: skip
    """Price ``graph`` (the iteration that ran, with its policies' ops). An optional op (one that
    runs on some iterations only) is priced when it was counted; ``expect_all``: every other op
    must have been counted (a run that executed iterations)."""
    if counts is not None:
        check_counts(graph, counts, expect_all)
    ops = [op for op in graph.ops if (not forward_only or op.phase == "fwd") and
           (op.name not in graph.optional or (counts is not None and op.name in counts.ops))]  # fmt: skip
    arithmetic = arithmetic_of(spec)
    if approximate:
        if accelerator.approximate is None:
            raise SpecError.single(accelerator.source, "approximate", "no approximate mode to price ops on")
        check_hardware(spec, (), accelerator)
        names = frozenset(op.name for op in graph.model_ops
                          if op.phase == "fwd" and op.layer_kind in ("conv", "linear"))  # fmt: skip
        arithmetic = dataclasses.replace(arithmetic, approximate=accelerator.approximate, approximate_ops=names)
    table = load_table(accelerator.technology, accelerator.energy_overrides)
    with gc_paused():
        priced = account_ops(ops, graph.tensors, accelerator, table, arithmetic, counts, graph.inputs, pricing,
                             densities)  # fmt: skip
    mode = None
    if approximate:
        mode = {"multiplier": accelerator.approximate.multiplier.label,
                "supply_voltage_v": accelerator.approximate.supply_voltage_v,
                "ops": sorted(arithmetic.approximate_ops)}  # fmt: skip
    return Estimate(spec.name, accelerator, graph.batch_size, forward_only, priced.rows, graph.tensors, table,
                    counts is not None, priced.placements, pricing[0], pricing[1], priced.sparsity,
                    priced.storage, mode, priced.prices, priced.gradients, arithmetic)  # fmt: skip


def price_topology(topology: Path | Sequence[TopologyLayer], accelerator: Accelerator, batch: int,
                   operand_bits: int | None, accumulator_bits: int | None, pricing: Pricing,
                   densities: Mapping[str, float] | None, name: str | None = None) -> Estimate:  # fmt: skip
    """The forward layers of a SCALE-Sim topology (a CSV, or its rows) at ``batch`` with
    ``operand_bits``-bit operands (default 8) and ``accumulator_bits``-bit sums (default 32), priced
    on ``accelerator``."""
    bits = TOPOLOGY_BITS if operand_bits is None else operand_bits
    acc = TOPOLOGY_ACCUMULATOR_BITS if accumulator_bits is None else accumulator_bits
    for key, value in (("operand_bits", bits), ("accumulator_bits", acc)):
        if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 64:
            raise SpecError.single(str(topology), key, f"must be a bit width from 2 to 64, got {value!r}")
    rows = read_scalesim_topology(topology) if isinstance(topology, Path) else list(topology)
    ops, tensors = ops_from_topology(rows, batch, bits)
    inputs = frozenset(t for op in ops for t in op.reads)
    table = load_table(accelerator.technology, accelerator.energy_overrides)
    arithmetic = Arithmetic(acc, frozenset())
    with gc_paused():
        priced = account_ops(ops, tensors, accelerator, table, arithmetic, None, inputs, pricing, densities)
    label = name or (topology.stem if isinstance(topology, Path) else "layers")
    return Estimate(label, accelerator, batch, True, priced.rows, tensors, table, False,
                    priced.placements, pricing[0], pricing[1], priced.sparsity, priced.storage, None,
                    priced.prices, priced.gradients, arithmetic)  # fmt: skip


def price_points(spec: Workload, graph: TrainingGraph, accelerators: Sequence[Accelerator],
                 pricing: Pricing) -> list[Totals | None]:  # fmt: skip
    """The totals of one nominal iteration of ``graph`` on each of ``accelerators``, mapped and
    priced as arrays over them (the vectorised estimate path of a sweep); None for a point that
    path leaves to :func:`price` (see ``energy.many``), which finds its mappings done."""
    ops = [op for op in graph.ops if op.name not in graph.optional]
    with gc_paused():
        return account_points(ops, graph.tensors, accelerators, arithmetic_of(spec), frozenset(graph.inputs),
                              pricing[0], pricing[1])  # fmt: skip


def account_ops(ops, tensors, accelerator, table, arithmetic, counts, inputs, pricing: Pricing, densities):
    """``account`` with checked densities; a mapping that cannot fit is a spec error of the hardware."""
    stated = checked_densities(densities, accelerator.source)
    try:
        return account(ops, tensors, accelerator, table, arithmetic, counts, frozenset(inputs), pricing[0], pricing[1],
                       stated)  # fmt: skip
    except MappingError as exc:
        raise SpecError.single(accelerator.source, "buffers", str(exc)) from None


def checked_densities(given: Mapping[str, float] | None, source: str) -> dict[str, float]:
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


def train_shared(prepared: Prepared, accelerators: Sequence[Accelerator], epochs: int | None, data_dir, progress,
                 checkpoint: str | Path | None = None, stop_after: int | None = None, resume: bool = True,
                 stop: StopRequest | None = None) -> TrainResult:  # fmt: skip
    """Train ``prepared`` once for all of ``accelerators``. Training depends on the accelerator only
    through its approximate mode (a policy may train on it; every epoch is evaluated on it), so all
    of them must share one mode (or have none). ``checkpoint``: a file written after every epoch
    (continued from when it exists and ``resume``); ``stop_after``: end after that epoch of the full
    run; ``stop``: end at an iteration boundary once it turns true (a partial result)."""
    modes = {hw.approximate for hw in accelerators}
    if len(modes) != 1:
        raise ValueError("accelerators priced from one training run must share their approximate mode")
    spec, policies, graph = prepared.workload, prepared.policies, prepared.graph
    for hw in accelerators:
        check_hardware(spec, policies, hw)
    return loop.train(spec, epochs, data_dir, progress, checkpoint=checkpoint, resume=resume, stop_after=stop_after,
                      approximate=accelerators[0].approximate, graph=graph, policies=policies, stop=stop)  # fmt: skip


def run_once(prepared: Prepared, accelerators: Sequence[Accelerator], epochs: int | None, data_dir, progress,
             pricing: Pricing, checkpoint: str | Path | None = None, resume: bool = True,
             stop: StopRequest | None = None) -> list[RunResult]:  # fmt: skip
    """Train ``prepared`` once (see :func:`train_shared`) and price what ran on each of ``accelerators``."""
    result = train_shared(prepared, accelerators, epochs, data_dir, progress, checkpoint, None, resume, stop)
    return [price_training(prepared.workload, result, hw, pricing) for hw in accelerators]


def price_training(spec: Workload, result: TrainResult, hw: Accelerator, pricing: Pricing) -> RunResult:
    """A training run priced on ``hw``: the graph that ran with its counts; with an approximate mode,
    one inference batch priced on the exact datapath and on the mode."""
    on_mode = any(p.trains_on_approximate_mode for p in result.policies)
    graph = result.graph
    priced = price(spec, graph, hw, result.counts, False, on_mode, pricing, None, result.iterations > 0)
    inference = None
    if hw.approximate is not None:
        inference = tuple(price(spec, graph, hw, None, True, a, pricing, None) for a in (False, True))
    return RunResult(spec, hw, result, priced, inference)
