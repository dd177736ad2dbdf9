"""The training graph: ops and tensors of one training iteration, and the networkx DAG joining them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import networkx as nx

from e2sim.config.frozen import FrozenDict
from e2sim.graph.layers import Shape
from e2sim.graph.models import Model

PHASES = ("fwd", "bwd_data", "bwd_weight", "update")
# PE-array conv, PE-array GEMM, element-wise, data movement only, and a batch loaded from DRAM
OP_KINDS = ("conv", "gemm", "vector", "move", "load")
# Tensor roles; a role decides the number format (see lower.ROLE_FORMATS).
ROLES = (
    "input", "label", "activation", "index", "weight", "bias", "stats", "error", "weight_grad", "momentum", "loss",
)  # fmt: skip


@dataclass(frozen=True)
class Tensor:
    """A tensor of the iteration; ``shape`` includes the batch for activations and errors.

    ``alias_of`` names the tensor whose storage this one shares (e.g. the gradients a residual add
    passes through unchanged); an alias is never materialised, so writing it moves no bytes.
    """

    name: str
    layer: str
    role: str
    shape: Shape
    bits: int
    alias_of: str | None = None

    def __hash__(self) -> int:  # tensors key the plan caches: hash the fields once
        found = self.__dict__.get("_hash")
        if found is None:
            found = hash((self.name, self.layer, self.role, self.shape, self.bits, self.alias_of))
            self.__dict__["_hash"] = found
        return found

    @cached_property
    def numel(self) -> int:
        return math.prod(self.shape)

    @cached_property
    def bytes(self) -> int:
        return -(-self.numel * self.bits // 8)


@dataclass(frozen=True)
class ConvShape:
    """Forward geometry of a conv layer: batch N, K filters of C×R×S over C×H×W inputs, P×Q outputs;
    ``groups`` independent convolutions of K/groups filters over C/groups channels each (the
    filters are K × C/groups × R × S), taps ``dilation`` apart."""

    n: int
    k: int
    c: int
    h: int
    w: int
    p: int
    q: int
    r: int
    s: int
    stride: int
    pad_h: int
    pad_w: int
    groups: int = 1
    dilation: int = 1

    @property
    def macs(self) -> int:
        return self.n * self.k * self.c // self.groups * self.p * self.q * self.r * self.s

    @property
    def spans(self) -> tuple[int, int]:
        """Input rows and columns one window covers (the kernel, dilated)."""
        return self.dilation * (self.r - 1) + 1, self.dilation * (self.s - 1) + 1


@dataclass(frozen=True)
class GemmShape:
    """The GEMM an op is equivalent to: out[M×N] = A[M×K] · B[K×N] (SCALE-Sim's M, N, K), run
    ``groups`` times on independent operands (a grouped convolution)."""

    m: int
    n: int
    k: int
    groups: int = 1

    @property
    def macs(self) -> int:
        return self.groups * self.m * self.n * self.k


@dataclass(frozen=True)
class Op:
    """One op of the iteration.

    ``conv`` is the layer's forward geometry (also for its backward ops; ``phase`` says which
    computation), ``gemm`` the equivalent GEMM of this very op, ``elements`` the element count
    an element-wise op iterates over. ``macs`` are multiply-accumulates on the PE array;
    ``elementwise_ops`` are vector-path operations (adds, multiplies, compares, exp, ...).
    """

    name: str
    layer: str
    layer_kind: str
    phase: str
    kind: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    macs: int
    elementwise_ops: int
    elements: int
    conv: ConvShape | None = None
    gemm: GemmShape | None = None


@dataclass(frozen=True)
class TrainingGraph:
    """One training iteration at ``batch_size``: ops in execution order, tensors by name, and the DAG.

    ``dag`` is bipartite: an edge tensor -> op means the op reads the tensor, op -> tensor that it
    writes it. Node attribute ``type`` is ``"op"`` or ``"tensor"``. Treat it as read-only.
    ``inputs`` are the tensors that exist before the iteration starts (data, labels, parameters,
    optimizer state, running statistics); every other tensor is written by exactly one op.
    ``contributed``: the ops a policy added (op name -> the policy's key), priced with the model's;
    the training engine executes only the model's ops (:attr:`model_ops`). ``optional``: ops that
    run on some iterations only (a batch loaded for a dropped iteration), priced only when counted.
    """

    workload: str
    batch_size: int
    model: Model
    ops: tuple[Op, ...]
    tensors: Mapping[str, Tensor]
    dag: nx.DiGraph = field(compare=False)  # derived from ops and tensors: not part of equality or hash
    inputs: frozenset[str]
    contributed: Mapping[str, str] = field(default_factory=FrozenDict)
    optional: frozenset[str] = frozenset()

    @cached_property
    def model_ops(self) -> tuple[Op, ...]:
        """The ops of the model's own iteration, in execution order (no policy's ops)."""
        return tuple(op for op in self.ops if op.name not in self.contributed)

    @cached_property
    def model_inputs(self) -> frozenset[str]:
        """The inputs the model's ops read: data, labels, parameters and their optimizer state."""
        return frozenset(t for op in self.model_ops for t in op.reads if t in self.inputs)

    def bytes_read(self, op: Op) -> int:
        return sum(self.tensors[t].bytes for t in op.reads)

    def bytes_written(self, op: Op) -> int:
        """Bytes of the tensors the op materialises (aliases move nothing)."""
        return sum(self.tensors[t].bytes for t in op.writes if self.tensors[t].alias_of is None)

    def macs(self, phase: str | None = None) -> int:
        """Nominal MACs of the model's ops (a policy's own ops not included)."""
        return sum(op.macs for op in self.model_ops if phase is None or op.phase == phase)


@dataclass(frozen=True)
class GraphExtension:
    """Ops a policy adds to the iteration (``source``: its key), verified and priced with the
    model's: ``before`` run ahead of the model's ops (a filter network), ``after`` behind them
    (gates' training, channel selection). ``tensors``: the tensors they add (a name the graph
    already has must have its shape, and keeps the graph's); ``state``: those that exist before the
    iteration (parameters, optimizer state); ``optional``: ops that run on some iterations only."""

    source: str
    before: tuple[Op, ...] = ()
    after: tuple[Op, ...] = ()
    tensors: Mapping[str, Tensor] = field(default_factory=FrozenDict)
    state: frozenset[str] = frozenset()
    optional: frozenset[str] = frozenset()


def build_dag(ops: tuple[Op, ...], tensors: Mapping[str, Tensor]) -> nx.DiGraph:
    dag = nx.DiGraph()
    dag.add_nodes_from(tensors, type="tensor")
    dag.add_nodes_from((op.name for op in ops), type="op")
    dag.add_edges_from((t, op.name) for op in ops for t in op.reads)
    dag.add_edges_from((op.name, t) for op in ops for t in op.writes)
    return dag
