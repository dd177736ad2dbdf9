"""The contract between the training engine and a policy plug-in.

A policy is a subclass of :class:`Policy` with a ``key`` (its block under ``policy:``), a
``read_spec`` that reads that block, and the hooks it needs; every hook's default does nothing.
Registered with :func:`e2sim.policies.register`, it runs, is priced and is reported without any
change elsewhere: the engine, the training loop, pricing and the report only iterate over the
active policies, in registration order.

Hooks, in the order a run calls them:

1. ``check_model(model)`` and ``check_hardware(hw)``: raise :class:`SpecError` naming
   ``policy.<key>`` when the policy cannot apply.
2. ``extend(graph)``: ops the policy's work adds to the iteration (gates, a filter network, a
   selection), as a :class:`GraphExtension`; they are verified and priced with the model's.
3. ``stretch()``: the factor on the run's length in iterations (a fractional last epoch is run).
4. ``bind(graph, engine)``: the lowered graph, and the engine's factories for a network of the
   policy's own; ``initial_parameters(seed)``: trainable arrays kept in the training state.
5. Per iteration: ``choose(batch, counter)`` drops the iteration or picks its instances;
   ``kernel(op, layer, inner)`` wraps or replaces the kernel of one of the model's ops (called once,
   when the executor is built); ``open_pass(...)`` returns a :class:`PassHook` that runs around
   every op of a pass (per-sample gating); ``refine_gradients(step, rerun)`` may replace the
   gradients before the update ops; ``after_step(...)`` sees the per-sample losses.
6. ``end_epoch()``; ``stats()`` for the report; ``save()`` / ``restore()`` for checkpoints.

``trains_on_approximate_mode``: the training forward pass runs on the accelerator's
approximate mode, and its conv/linear forward ops are priced on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from e2sim.config.policy import technique, technique_keys
from e2sim.config.precision import PrecisionSpec
from e2sim.config.reader import Section, read_fields
from e2sim.config.workload import Workload
from e2sim.counting import OpCounter
from e2sim.graph.ir import GraphExtension, Op, TrainingGraph
from e2sim.graph.layers import Layer
from e2sim.graph.models import Model
from e2sim.hw.accelerator import Accelerator

if TYPE_CHECKING:
    from e2sim.numerics.approximate import ApproxDatapath


@dataclass
class Step:
    """What a kernel sees: the tensors of one pass by graph name, and how to run its ops.
    ``stash`` holds values an op leaves for a later op of the same pass (a fused kernel's second
    output, a policy's per-pass choice); ``training`` is False for inference passes."""

    graph: TrainingGraph
    tensors: dict[str, np.ndarray]
    fmt: PrecisionSpec | None
    counter: OpCounter | None
    seed: int
    lr: float
    momentum: float
    weight_decay: float
    stash: dict[str, Any] = field(default_factory=dict)
    approx: ApproxDatapath | None = None  # forward conv/linear on the accelerator's approximate mode
    loss_scale: float = 1.0  # multiplies the loss gradient
    training: bool = True


Kernel = Callable[[Step, Op, Layer, int], None]  # (step, op, layer, seed): reads and writes step.tensors


class PassHook(Protocol):
    """Runs around every op of one pass (forward and backward, then the updates)."""

    def run_op(self, op: Op, run: Callable[[], None], tensors: dict[str, np.ndarray]) -> None:
        """Run ``op``: call ``run()`` (its kernel) once, or not at all, on tensors of your choice."""

    def finish(self, tensors: dict[str, np.ndarray], lr: float, momentum: float) -> None:
        """After the update ops of a training pass: write the ``.next`` of your parameters."""


@dataclass(frozen=True)
class Batch:
    """One iteration's input: ``iteration`` counts from 0 over the whole run."""

    iteration: int
    images: np.ndarray
    labels: np.ndarray
    seed: int


@dataclass(frozen=True)
class Choice:
    """What a policy makes of an iteration: train on all of it (``KEEP``); on ``instances`` only
    (indices into the batch; the loss gradient times ``loss_scale``; none: nothing runs); or
    ``drop`` it (``optimizer_step``: the update ops still run, on zero gradients)."""

    drop: bool = False
    optimizer_step: bool = False
    instances: np.ndarray | None = None
    loss_scale: float = 1.0


KEEP = Choice()


class Executor(Protocol):
    """A network the engine runs (see ``e2sim.train.engine.GraphExecutor``)."""

    graph: TrainingGraph
    last_losses: np.ndarray

    def step(self, state: Any, images: np.ndarray, labels: np.ndarray, lr: float, seed: int,
             counter: OpCounter | None, sample_weights: np.ndarray | None = None,
             loss_scale: float = 1.0) -> tuple[float, int]: ...  # fmt: skip

    def predict(self, state: Any, images: np.ndarray, counter: OpCounter | None = None,
                approximate: bool = False, seed: int = 0) -> np.ndarray: ...  # fmt: skip


@dataclass(frozen=True)
class Engine:
    """The training engine's factories, for a policy that trains a network of its own:
    ``executor(graph, precision, momentum, weight_decay)`` and ``init_state(graph, seed)``."""

    executor: Callable[[TrainingGraph, PrecisionSpec | None, float, float], Executor]
    init_state: Callable[[TrainingGraph, int], Any]


class Policy:
    """Base class of policy plug-ins; see the module docstring for the hooks and their order."""

    key: ClassVar[str]
    Spec: ClassVar[type]  # the frozen dataclass of the policy's block; its defaults are the block's
    checks: ClassVar[Mapping[str, Callable[[Any], Any]]]  # the check of each field (see e2sim.config.reader)
    trains_on_approximate_mode: bool = False  # see the module docstring

    def __init__(self, spec: Any, workload: Workload):
        self.spec = spec
        self.workload = workload

    @classmethod
    def read_spec(cls, s: Section) -> Any:
        """The frozen spec from the policy's block, each field read with its check in ``checks``;
        every problem goes to ``s.log``. Override to check fields against each other."""
        return read_fields(s, cls.Spec, cls.checks, f" for {cls.key}")

    def check_model(self, model: Model) -> None:
        """Raise SpecError (key ``policy.<key>``) when the policy cannot apply to ``model``."""

    def check_hardware(self, hw: Accelerator | None) -> None:
        """Raise SpecError when the policy cannot run on ``hw`` (None: training without hardware)."""

    def extend(self, graph: TrainingGraph) -> GraphExtension | None:
        """Ops the policy adds to the iteration of ``graph`` (the model's), for verification and pricing."""
        return None

    def stretch(self) -> float:
        """The run's length in iterations is multiplied by this."""
        return 1.0

    def bind(self, graph: TrainingGraph, engine: Engine) -> None:
        """Called once before training, with the graph that runs and the engine's factories."""

    def initial_parameters(self, seed: int) -> dict[str, np.ndarray]:
        """Trainable arrays kept in the training state (the engine adds zero momentum buffers)."""
        return {}

    def choose(self, batch: Batch, counter: OpCounter | None) -> Choice:
        """Drop the iteration, pick its instances, or keep it (record the work of deciding)."""
        return KEEP

    def kernel(self, op: Op, layer: Layer, inner: Kernel) -> Kernel:
        """The kernel that runs the model's ``op``: ``inner`` (the engine's, or an earlier
        policy's), wrapped or replaced."""
        return inner

    def open_pass(self, tensors: dict[str, np.ndarray], counter: OpCounter | None, seed: int,
                  training: bool) -> PassHook | None:  # fmt: skip
        """A hook around every op of the pass that starts now, or None."""
        return None

    def refine_gradients(self, step: Step, rerun: Callable[[dict[str, np.ndarray]], None]) -> None:
        """Before the updates: may replace ``step``'s gradients; ``rerun(tensors)`` runs the forward
        and backward ops once more on ``tensors`` (a copy of step.tensors that you changed)."""

    def after_step(self, images: np.ndarray, losses: np.ndarray, seed: int, counter: OpCounter | None) -> None:
        """After a training step on ``images`` (the instances trained), with their per-sample losses."""

    def end_epoch(self) -> None:
        """At the end of every epoch."""

    def stats(self) -> dict | None:
        """What the run report shows under ``policy_stats.<key>`` (None: nothing)."""
        return None

    def save(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, JSON-able state) to checkpoint; ``restore`` gets them back."""
        return {}, {}

    def restore(self, arrays: dict[str, np.ndarray], saved: dict) -> None:
        """Continue from ``save()``'s output (arrays already checked against a fresh ``save()``)."""


class RecordedPolicy(Policy):
    """A policy whose statistics are one dataclass, ``record``: reported by its ``as_dict()``,
    checkpointed as its fields."""

    record: Any

    def stats(self) -> dict:
        return self.record.as_dict()

    def save(self) -> tuple[dict[str, np.ndarray], dict]:
        return {}, dataclasses.asdict(self.record)

    def restore(self, arrays: dict[str, np.ndarray], saved: dict) -> None:
        self.record = type(self.record)(**saved)


def activate(workload: Workload) -> tuple[Policy, ...]:
    """Instances of the workload's techniques, in registration (hook) order."""
    wanted = dict(workload.policy.specs)
    return tuple(technique(key)(wanted[key], workload) for key in technique_keys() if key in wanted)
