"""Stochastic mini-batch dropping (E2-Train, Wang et al. 2019).

Each iteration is dropped with probability p. The decision for iteration i is a counter-based
draw from (seed, i), so a resumed run drops the same iterations. A dropped batch is still loaded
from DRAM (recorded as the ``input.load`` op); by default the optimizer still steps with zero
gradients, as in the authors' code (momentum and weight decay keep moving the weights), or the
weights stay frozen (``optimizer_on_skip: freeze``). The run is stretched to ``stretch`` × its
iterations (a fractional last epoch included), and the lr schedule counts dropped iterations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from e2sim.config.frozen import FrozenDict
from e2sim.config.reader import at_least_one, at_most, fraction_below_one, one_of
from e2sim.counting import OpCounter
from e2sim.graph.ir import GraphExtension, Op, TrainingGraph
from e2sim.numerics.seeds import derive_seed
from e2sim.policies.base import KEEP, Batch, Choice, RecordedPolicy

SMD_STREAM = 0x5D  # salt of the drop decisions' random stream
LOAD_OP = "input.load"


@dataclass(frozen=True)
class SmdSpec:
    """Stochastic mini-batch dropping (E2-Train): skip each iteration with ``drop_probability``.
    ``optimizer_on_skip``: ``step`` (the authors' code: momentum and weight decay still move the
    weights) or ``freeze``; ``stretch`` multiplies the number of iterations (the paper uses 4/3)."""

    drop_probability: float = 0.5
    stretch: float = 4 / 3
    optimizer_on_skip: str = "step"


def drops(spec: SmdSpec, seed: int, iteration: int) -> bool:
    """Whether iteration ``iteration`` (0-based, counted over the whole run) is dropped."""
    return derive_seed(derive_seed(seed, SMD_STREAM), iteration) / 2.0**64 < spec.drop_probability


@dataclass
class SmdStats:
    iterations: int = 0
    dropped: int = 0

    @property
    def drop_rate(self) -> float:
        return self.dropped / self.iterations if self.iterations else math.nan

    def as_dict(self) -> dict:
        return {"iterations": self.iterations, "dropped_iterations": self.dropped, "drop_rate": self.drop_rate}


class Smd(RecordedPolicy):
    key = "smd"
    Spec = SmdSpec
    checks = FrozenDict({"drop_probability": fraction_below_one, "stretch": at_most(at_least_one, 100),
              "optimizer_on_skip": one_of("step", "freeze")})  # fmt: skip

    def __init__(self, spec: SmdSpec, workload):
        super().__init__(spec, workload)
        self.record = SmdStats()
        self.macs = 0

    def extend(self, graph: TrainingGraph) -> GraphExtension:
        """The load of a dropped batch: it reads the images and labels and nothing else."""
        load = Op(LOAD_OP, "input", "input", "fwd", "load", ("input.x", "input.labels"), (), 0, 0,
                  graph.tensors["input.x"].numel)  # fmt: skip
        return GraphExtension(self.key, before=(load,), optional=frozenset({LOAD_OP}))

    def stretch(self) -> float:
        return self.spec.stretch

    def bind(self, graph: TrainingGraph, engine) -> None:
        self.macs = graph.macs()

    def choose(self, batch: Batch, counter: OpCounter | None) -> Choice:
        self.record.iterations += 1
        if not drops(self.spec, self.workload.training.seed, batch.iteration):
            return KEEP
        self.record.dropped += 1
        if counter is not None:
            counter.record(LOAD_OP, reads={"x": batch.images.size, "labels": len(batch.labels)},
                           skipped_macs=self.macs)  # fmt: skip
            counter.ran(LOAD_OP)
        return Choice(drop=True, optimizer_step=self.spec.optimizer_on_skip == "step")
