"""Selective layer update (E2-Train, Wang et al. 2019; SkipNet gates, Wang et al. 2018).

A gate in front of every residual block but the first decides per sample whether the block's body
runs. Skipped (sample, block) pairs skip the body's forward and backward work: the body's ops run
on the executed samples only, so their counted MACs drop exactly by the skipped fraction. The
block's output is shortcut + m·body (downsampling shortcuts always run).

Training (choices where the papers are silent, documented):
- Hard decisions m = [p > u], u ~ U(0, 1) drawn per (iteration, gate, sample). Evaluation samples
  the same way from a fixed seed: the cost term holds p near the target, where SkipNet's p > 0.5
  test rule would make arbitrary decisions unlike training's. Straight-through: dL/dp = dL/dm.
- For an executed sample, dL/dm = ⟨dL/dy, body(x)⟩ of the block; a skipped sample's body never
  ran, so the loss gives it no signal (computing it would cost what skipping saves).
- Cost term: β·sign(F − target)·cost_b per (sample, gate), F the executed fraction of the batch
  and cost_b the block's share of the gated MACs times the number of gates (mean 1): it pushes the
  executed fraction toward ``target_fraction``. The gate's input (the pooled block input) is
  detached: no gradient from the gates into the CNN.
- Gate parameters train with the workload's lr and momentum, without weight decay, in fp32; their
  work is counted under gate ops (``slu.gate{b}.*``, ``slu.gates.update``) and priced with the rest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from e2sim.config.errors import SpecError
from e2sim.config.frozen import FrozenDict
from e2sim.config.reader import at_most, fraction_positive, non_negative_number, positive_int
from e2sim.counting import OpCounter
from e2sim.graph import elementwise as ew_ops
from e2sim.graph.ir import GemmShape, GraphExtension, Op, Tensor, TrainingGraph
from e2sim.graph.layers import INPUT
from e2sim.graph.models import Model
from e2sim.numerics.seeds import derive_seed
from e2sim.policies.base import Engine, PassHook, Policy
from e2sim.policies.slu_gates import GateRun, gate_backward, gate_forward, gate_parameters

SLU_STREAM = 0x51  # salt of the gates' random draws
GATE_BITS = 32


@dataclass(frozen=True)
class SluSpec:
    """Selective layer update (E2-Train, SkipNet gates): a gate before every residual block
    decides per sample whether the block runs; ``cost_weight`` (β) steers the executed fraction
    toward ``target_fraction``; ``gate_channels`` is the width of the shared LSTM. E2-Train's
    β = 1e-5 multiplies a cost in FLOPs; e2sim's per-block cost is normalised to a mean of 1, and
    β = 0.03 is what keeps the executed fraction on target (measured: 0.51 for a 0.5 target)."""

    target_fraction: float = 0.5
    cost_weight: float = 0.03
    gate_channels: int = 10


@dataclass(frozen=True)
class GatedBlock:
    index: int
    add: str  # the residual add that closes the block
    input_tensor: str  # what the block (and its gate) reads
    channels: int
    spatial: int  # H·W of the block input
    body: frozenset[str]  # layers skipped for a gated-off sample
    body_macs: int  # nominal forward MACs of the body (whole batch)


def gated_blocks(graph: TrainingGraph) -> list[GatedBlock]:
    """Every residual block but the first, with the layers of its body."""
    layers = {layer.name: layer for layer in graph.model.layers}
    ancestors: dict[str, set[str]] = {INPUT: {INPUT}}
    for layer in graph.model.layers:
        ancestors[layer.name] = {layer.name}.union(*(ancestors[i] for i in layer.inputs))
    order = {name: i for i, name in enumerate([INPUT, *layers])}
    fwd_macs = {op.layer: op.macs for op in graph.ops if op.phase == "fwd"}
    blocks = []
    for add in [layer for layer in graph.model.layers if layer.kind == "add"][1:]:
        body_out, shortcut = add.inputs
        fork = max(ancestors[body_out] & ancestors[shortcut], key=order.__getitem__)
        body = frozenset(ancestors[body_out] - ancestors[fork])
        source = fork
        while source != INPUT and layers[source].kind == "flatten":
            source = layers[source].inputs[0]
        shape = layers[fork].out_shape if fork != INPUT else graph.model.input_shape
        blocks.append(GatedBlock(len(blocks), add.name, f"{source}.y", shape[0], int(np.prod(shape[1:])),
                                 body, sum(fwd_macs.get(name, 0) for name in body)))  # fmt: skip
    return blocks


def gate_macs(block: GatedBlock, batch: int, width: int) -> int:
    """Forward MACs of one gate: embedding, LSTM (input and recurrent), head."""
    return batch * (block.channels * width + 4 * width * 2 * width + width)


def gate_ops(graph: TrainingGraph, spec: SluSpec, momentum: float) -> tuple[list[Op], dict[str, Tensor], set[str]]:
    """The gates' ops, tensors and state tensors for pricing: per gate a pooling op, a forward GEMM
    and a backward GEMM (each priced as one GEMM of the same MACs, M = batch, N = 4·width) that
    writes the gate's parameter gradient; one SGD update (``momentum``: the workload's) of all of them."""
    n, w = graph.batch_size, spec.gate_channels
    ops, tensors, state = [], {}, set()
    updates = []
    for block in gated_blocks(graph):
        name = f"slu.gate{block.index}"
        pooled = Tensor(f"{name}.pooled", name, "activation", (n, block.channels), GATE_BITS)
        weights = Tensor(f"{name}.params", name, "weight", (block.channels * w + 8 * w * w + w,), GATE_BITS)
        grad = Tensor(f"{weights.name}.grad", name, "weight_grad", weights.shape, GATE_BITS)
        p = Tensor(f"{name}.p", name, "activation", (n,), GATE_BITS)
        tensors.update({t.name: t for t in (pooled, weights, grad, p)})
        state.add(weights.name)
        macs = gate_macs(block, n, w)
        k = max(1, round(macs / (n * 4 * w)))
        ops.append(Op(f"{name}.pool", name, "gate", "fwd", "vector", (block.input_tensor,), (pooled.name,), 0,
                      n * block.channels * block.spatial, pooled.numel))  # fmt: skip
        ops.append(Op(f"{name}.fwd", name, "gate", "fwd", "gemm", (pooled.name, weights.name), (p.name,), macs,
                      n * 4 * w * 3, n, gemm=GemmShape(n, 4 * w, k)))  # fmt: skip
        ops.append(Op(f"{name}.bwd", name, "gate", "bwd_weight", "gemm", (pooled.name, p.name), (grad.name,),
                      2 * macs, n * 4 * w * 6, weights.numel, gemm=GemmShape(n, 4 * w, 2 * k)))  # fmt: skip
        updates.append(weights)
    reads, writes = [], []
    for weights in updates:
        reads += [weights.name, f"{weights.name}.grad"]
        writes.append(f"{weights.name}.next")
        tensors[writes[-1]] = Tensor(writes[-1], weights.layer, "weight", weights.shape, GATE_BITS)
        if momentum > 0:
            velocity = Tensor(f"{weights.name}.momentum", weights.layer, "momentum", weights.shape, GATE_BITS)
            reads.append(velocity.name)
            writes.append(f"{velocity.name}.next")
            tensors[velocity.name] = velocity
            tensors[writes[-1]] = Tensor(writes[-1], weights.layer, "momentum", weights.shape, GATE_BITS)
            state.add(velocity.name)
    params = sum(t.numel for t in updates)
    ops.append(Op("slu.gates.update", "slu.gates", "gate", "update", "vector", tuple(reads), tuple(writes), 0,
                  ew_ops.sgd_step(params, momentum, 0.0), params))  # fmt: skip
    return ops, tensors, state


@dataclass
class SluStats:
    executed: list[int] = field(default_factory=list)  # executed samples per gate
    total: list[int] = field(default_factory=list)
    macs_executed: float = 0.0
    macs_total: float = 0.0

    def add(self, b: int, executed: int, total: int, macs: float) -> None:
        while len(self.executed) <= b:
            self.executed.append(0)
            self.total.append(0)
        self.executed[b] += executed
        self.total[b] += total
        self.macs_executed += macs * executed / max(total, 1)
        self.macs_total += macs

    def as_dict(self) -> dict:
        pairs = sum(self.total)
        return {
            "executed_block_fraction": sum(self.executed) / pairs if pairs else float("nan"),
            "executed_mac_fraction": self.macs_executed / self.macs_total if self.macs_total else float("nan"),
            "per_gate": [e / t if t else float("nan") for e, t in zip(self.executed, self.total, strict=True)],
        }


class SluRuntime:
    """The gates of one training run and the bookkeeping of which samples each block ran."""

    def __init__(self, graph: TrainingGraph, spec: SluSpec):
        self.graph, self.spec = graph, spec
        self.blocks = gated_blocks(graph)
        self.block_of = {layer: b.index for b in self.blocks for layer in b.body}
        self.by_add = {b.add: b for b in self.blocks}
        total = sum(b.body_macs for b in self.blocks) or 1
        self.cost = [len(self.blocks) * b.body_macs / total for b in self.blocks]
        self.stats = SluStats()
        self.param_names = tuple(self.parameters(np.random.default_rng(0)))

    def parameters(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return gate_parameters([b.channels for b in self.blocks], self.spec.gate_channels, rng)

    def start(self, arrays: dict[str, np.ndarray], counter: OpCounter | None, seed: int, training: bool):
        return SluIteration(self, arrays, counter, seed, training)


class SluIteration:
    """One forward (and backward) pass: gate decisions, subset tensors, gate gradients."""

    def __init__(self, runtime: SluRuntime, arrays, counter: OpCounter | None, seed: int, training: bool):
        self.rt, self.arrays, self.counter, self.seed, self.training = runtime, arrays, counter, seed, training
        self.idx: dict[int, np.ndarray] = {}
        self.subset: dict[str, int] = {}
        self.run = GateRun()
        self.dm: dict[int, np.ndarray] = {}
        width = runtime.spec.gate_channels
        self.h = self.c = None
        self.width = width
        self.batch = 0

    # -- gates --------------------------------------------------------------------------------------
    def decide(self, b: int, tensors: dict) -> None:
        block = self.rt.blocks[b]
        x = tensors[block.input_tensor]
        n = x.shape[0]
        self.batch = n
        if self.h is None:
            self.h = self.c = np.zeros((n, self.width), np.float32)
        pooled = x.reshape(n, block.channels, -1).mean(axis=2)
        p, self.h, self.c = gate_forward(self.arrays, b, pooled, self.h, self.c, self.run if self.training else None)
        self.idx[b] = self.choose(b, p)
        if self.training:
            self.rt.stats.add(b, len(self.idx[b]), n, block.body_macs * n / self.rt.graph.batch_size)
        if self.counter is not None:
            name = f"slu.gate{b}"
            pooled_size = n * block.channels
            self.counter.record(
                f"{name}.pool", elementwise_ops=x.size, reads={"x": x.size}, writes={"pooled": pooled_size}
            )
            self.counter.record(f"{name}.fwd", macs={f"{GATE_BITS}x{GATE_BITS}": gate_macs(block, n, self.width)},
                                elementwise_ops=n * 4 * self.width * 3)  # fmt: skip
            self.counter.ran(f"{name}.pool")
            self.counter.ran(f"{name}.fwd")

    def choose(self, b: int, p: np.ndarray) -> np.ndarray:
        """Indices of the samples that run block ``b``: p > u with u drawn per (iteration, gate,
        sample). Evaluation samples too (from a fixed seed), so the test sees the executed fraction
        it was trained with."""
        draws = [derive_seed(derive_seed(self.seed, SLU_STREAM + b), i) for i in range(len(p))]
        return np.flatnonzero(p > np.array(draws, np.float64) / 2.0**64)

    def gate_gradient(self, add_op: Op, tensors: dict) -> None:
        """dL/dm of executed samples after the block's add backward: ⟨dL/dy, body(x)⟩."""
        block = self.rt.by_add[add_op.layer]
        dy = tensors[add_op.reads[0]]
        body_out = tensors[self.rt.graph.model.layer(block.add).inputs[0] + ".y"]
        dm = np.zeros(dy.shape[0], np.float32)
        idx = self.idx[block.index]
        if len(idx):
            dm[idx] = (dy[idx].reshape(len(idx), -1) * body_out.reshape(len(idx), -1)).sum(axis=1)
        self.dm[block.index] = dm

    def finish(self, tensors: dict, lr: float, momentum: float) -> None:
        """Train the gates: straight-through gradients plus the cost term, one SGD step."""
        if not self.run.caches:
            return
        n = self.batch
        fraction = sum(len(i) for i in self.idx.values()) / (n * len(self.idx))
        push = self.rt.spec.cost_weight * np.sign(fraction - self.rt.spec.target_fraction)
        dp = [self.dm.get(b, np.zeros(n, np.float32)) + push * self.rt.cost[b] for b in range(len(self.run.caches))]
        params = {name: self.arrays[name] for name in self.rt.param_names}
        grads = gate_backward(params, self.run, dp)
        for name, grad in grads.items():
            velocity = momentum * self.arrays[f"{name}.momentum"] + grad
            tensors[f"{name}.momentum.next"] = velocity.astype(np.float32)
            tensors[f"{name}.next"] = (params[name] - lr * velocity).astype(np.float32)
        count = sum(g.size for g in grads.values())
        if self.counter is not None:
            for b, block in enumerate(self.rt.blocks[: len(self.run.caches)]):
                name = f"slu.gate{b}.bwd"
                self.counter.record(name, macs={f"{GATE_BITS}x{GATE_BITS}": 2 * gate_macs(block, n, self.width)},
                                    elementwise_ops=n * 4 * self.width * 6)  # fmt: skip
                self.counter.ran(name)
            self.counter.record("slu.gates.update", elementwise_ops=ew_ops.sgd_step(count, momentum, 0.0))
            self.counter.ran("slu.gates.update")

    # -- subsets ------------------------------------------------------------------------------------
    def per_sample(self, name: str) -> bool:
        """Does the tensor have one slice per sample (activations, errors, pooling indices)?"""
        t = self.rt.graph.tensors.get(name)
        return t is not None and t.role in BATCH_ROLES

    def run_op(self, op: Op, run, tensors: dict) -> None:
        """Run ``op`` (``run()`` calls its handler) on the samples its block executes."""
        b = self.rt.block_of.get(op.layer)
        if b is not None and op.phase == "fwd" and b not in self.idx:
            self.decide(b, tensors)
        if b is not None and len(self.idx[b]) == 0:
            self._skip(op, b, tensors)
            return
        swapped = {}
        for name in op.reads:
            array = tensors.get(name)
            if array is None or not self.per_sample(name):
                continue
            if b is not None and name not in self.subset:
                swapped[name], tensors[name] = array, array[self.idx[b]]
            elif b is None and name in self.subset:
                full = np.zeros((self.batch, *array.shape[1:]), array.dtype)
                full[self.idx[self.subset[name]]] = array
                swapped[name], tensors[name] = array, full
        run()
        tensors.update(swapped)
        if b is not None:
            self.subset.update({name: b for name in op.writes if self.per_sample(name)})
            if self.counter is not None and op.macs:
                skipped = op.macs * (self.batch - len(self.idx[b])) / self.rt.graph.batch_size
                self.counter.record(op.name, skipped_macs=skipped)
        if self.training and op.layer in self.rt.by_add and op.phase == "bwd_data":
            self.gate_gradient(op, tensors)

    def _skip(self, op: Op, b: int, tensors: dict) -> None:
        """Every sample skips this block: per-sample outputs are empty, gradients zero, running
        statistics unchanged."""
        for name in op.writes:
            t = self.rt.graph.tensors[name]
            if self.per_sample(name):
                tensors[name] = np.zeros((0, *t.shape[1:]), np.float32)
                self.subset[name] = b
            elif name.endswith(".next") and name[: -len(".next")] in tensors:
                tensors[name] = tensors[name[: -len(".next")]]
            else:
                tensors[name] = np.zeros(t.shape, np.float32)
        if self.counter is not None and op.macs:
            self.counter.record(op.name, skipped_macs=op.macs * self.batch / self.rt.graph.batch_size)


BATCH_ROLES = ("input", "activation", "error", "index")


class Slu(Policy):
    """Gates every residual block but the first per sample; the gates' own work is lowered after the model's ops."""

    key = "slu"
    Spec = SluSpec
    checks = FrozenDict({"target_fraction": fraction_positive, "cost_weight": at_most(non_negative_number, 1000),
                         "gate_channels": at_most(positive_int, 4096)})  # fmt: skip

    def __init__(self, spec: SluSpec, workload):
        super().__init__(spec, workload)
        self.runtime: SluRuntime | None = None

    def check_model(self, model: Model) -> None:
        blocks = sum(layer.kind == "add" for layer in model.layers)
        if blocks < 2:
            raise SpecError.single(self.workload.source, "policy.slu", f"selective layer update gates residual "
                                   f"blocks, and {model.name} has {'none' if not blocks else 'only one'} (it gates "
                                   "every block but the first: use a residual model with two or more)")  # fmt: skip

    def extend(self, graph: TrainingGraph) -> GraphExtension:
        ops, tensors, state = gate_ops(graph, self.spec, self.workload.training.momentum)
        return GraphExtension(self.key, after=tuple(ops), tensors=tensors, state=frozenset(state))

    def bind(self, graph: TrainingGraph, engine: Engine) -> None:
        self.runtime = SluRuntime(graph, self.spec)

    def initial_parameters(self, seed: int) -> dict[str, np.ndarray]:
        return self.runtime.parameters(np.random.default_rng([seed, 1]))

    def open_pass(self, tensors: dict, counter: OpCounter | None, seed: int, training: bool) -> PassHook:
        if not training:  # inference samples the gates from a fixed seed, uncounted
            return self.runtime.start(tensors, None, 0, training=False)
        return self.runtime.start(tensors, counter, seed, training=True)

    def stats(self) -> dict:
        return self.runtime.stats.as_dict()

    def save(self) -> tuple[dict, dict]:
        return {}, asdict(self.runtime.stats)

    def restore(self, arrays: dict, saved: dict) -> None:
        self.runtime.stats = SluStats(**saved)
