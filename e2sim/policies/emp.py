"""Error-map pruning (Wu, Wang, Shi, Hu 2020, arXiv 2007.03213).

In the backward pass of every conv, output-error channels j are ranked by
S_j = Σ_batch (γ1·‖W_j‖₁ + γ2·‖δ_j‖₁) = N·γ1·‖W_j‖₁ + γ2·Σ_n ‖δ_{n,j}‖₁, and the top ⌈α·K⌉ are kept
for the whole batch (ties broken by channel index). Pruned channels skip both the input-error
convolution and the weight-gradient computation; their weight gradients are zero. The selection
(absolute sums, the ranking) is counted as element-wise work of a ``{layer}.emp_select`` op.

The pruned kernels wrap whichever kernel computes a conv's backward (the engine's, or PSG's sign
gradient): it runs on the kept channels' errors, and the pruned channels' outputs are zero.

Grouped and depthwise convolutions are left unpruned (the paper prunes dense convolutions; pruning
channels unevenly across groups changes the layer's structure): they run their full backward
pass, and the report lists them under ``unpruned_grouped_layers``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from e2sim.config.frozen import FrozenDict
from e2sim.config.reader import at_most, fraction_positive, non_negative_number
from e2sim.graph.ir import GraphExtension, Op, TrainingGraph
from e2sim.graph.layers import Layer
from e2sim.lazy import LazyModule
from e2sim.policies.base import Kernel, RecordedPolicy, Step

F = LazyModule("e2sim.functional")  # the kernels load when a policy first runs one


@dataclass(frozen=True)
class EmpSpec:
    """Error-map pruning (Wu et al. 2020): in each conv's backward pass keep the ``keep_ratio``
    output-error channels with the largest S_j = Σ_batch(γ1·‖W_j‖₁ + γ2·‖δ_j‖₁); the others skip
    both the input-gradient and the weight-gradient computation. γ1 = ``weight_coefficient``,
    γ2 = ``error_coefficient`` (the paper leaves them open; both default to 1)."""

    keep_ratio: float = 0.5
    weight_coefficient: float = 1.0
    error_coefficient: float = 1.0


def keep_count(channels: int, spec: EmpSpec) -> int:
    return max(1, math.ceil(spec.keep_ratio * channels))


def channel_scores(w: np.ndarray, dy: np.ndarray, spec: EmpSpec) -> np.ndarray:
    weight_norm = np.abs(w).reshape(w.shape[0], -1).sum(axis=1, dtype=np.float64)
    error_norm = np.abs(dy).sum(axis=(0, 2, 3), dtype=np.float64)
    return dy.shape[0] * spec.weight_coefficient * weight_norm + spec.error_coefficient * error_norm


def select_channels(w: np.ndarray, dy: np.ndarray, spec: EmpSpec) -> np.ndarray:
    """Sorted indices of the output-error channels kept."""
    scores = channel_scores(w, dy, spec)
    order = np.lexsort((np.arange(scores.size), -scores))  # highest score first, then lowest index
    return np.sort(order[: keep_count(scores.size, spec)])


def selection_ops(w_size: int, dy_size: int, channels: int) -> int:
    """Element-wise work of one selection: |·| and a sum per element, a sort of the scores."""
    return 2 * (w_size + dy_size) + channels * max(1, math.ceil(math.log2(max(channels, 2))))


def prunable(op: Op) -> bool:
    """A dense (ungrouped) conv's backward op."""
    return op.kind == "conv" and op.conv is not None and op.conv.groups == 1


def emp_ops(graph: TrainingGraph) -> list[Op]:
    """The selection op of every dense conv, reading its weights and output error."""
    ops = []
    for op in graph.ops:
        if prunable(op) and op.phase == "bwd_weight":
            x, dy = op.reads
            w = f"{op.layer}.w"
            ew = selection_ops(graph.tensors[w].numel, graph.tensors[dy].numel, graph.tensors[w].shape[0])
            ops.append(Op(f"{op.layer}.emp_select", op.layer, "conv", "bwd_data", "vector", (w, dy), (), 0, ew,
                          graph.tensors[w].shape[0]))  # fmt: skip
    return ops


@dataclass
class EmpStats:
    kept: int = 0
    total: int = 0
    per_layer: dict = field(default_factory=dict)
    unpruned: list = field(default_factory=list)  # grouped convs, left as they are

    def add(self, layer: str, kept: int, total: int) -> None:
        self.kept += kept
        self.total += total
        k, t = self.per_layer.get(layer, (0, 0))
        self.per_layer[layer] = (k + kept, t + total)

    def as_dict(self) -> dict:
        return {
            "kept_channel_fraction": self.kept / self.total if self.total else float("nan"),
            "per_layer": {name: k / t for name, (k, t) in sorted(self.per_layer.items())},
            **({"unpruned_grouped_layers": sorted(set(self.unpruned))} if self.unpruned else {}),
        }


class Emp(RecordedPolicy):
    key = "emp"
    Spec = EmpSpec
    checks = FrozenDict({"keep_ratio": fraction_positive, "weight_coefficient": at_most(non_negative_number, 1e6),
              "error_coefficient": at_most(non_negative_number, 1e6)})  # fmt: skip

    def __init__(self, spec: EmpSpec, workload):
        super().__init__(spec, workload)
        self.record = EmpStats()

    def extend(self, graph: TrainingGraph) -> GraphExtension:
        return GraphExtension(self.key, after=tuple(emp_ops(graph)))

    def channels(self, s: Step, layer: Layer) -> np.ndarray:
        """The output-error channels kept for ``layer`` in this pass (chosen once, counted once)."""
        key = f"{layer.name}.{self.key}"
        if key not in s.stash:
            w, dy = s.tensors[f"{layer.name}.w"], s.tensors[f"{layer.name}.y.grad"]
            kept = select_channels(w, dy, self.spec)
            s.stash[key] = kept
            self.record.add(layer.name, kept.size, w.shape[0])
            if s.counter is not None:
                name = f"{layer.name}.emp_select"
                s.counter.record(name, elementwise_ops=selection_ops(w.size, dy.size, w.shape[0]),
                                 reads={"w": w.size, "dy": dy.size})  # fmt: skip
                s.counter.ran(name)
        return s.stash[key]

    def kernel(self, op: Op, layer: Layer, inner: Kernel) -> Kernel:
        if op.layer_kind != "conv" or op.phase not in ("bwd_data", "bwd_weight"):
            return inner
        if not prunable(op):
            if layer.name not in self.record.unpruned:
                self.record.unpruned.append(layer.name)
            return inner

        def pruned_input_gradient(s: Step, op: Op, layer: Layer, seed: int) -> None:
            dy_name, w_name = op.reads
            dy, w = s.tensors[dy_name], s.tensors[w_name]
            kept = self.channels(s, layer)
            s.tensors[dy_name], s.tensors[w_name] = np.ascontiguousarray(dy[:, kept]), np.ascontiguousarray(w[kept])
            inner(s, op, layer, seed)
            s.tensors[dy_name], s.tensors[w_name] = dy, w
            if s.counter is not None:
                per_channel = dy.shape[0] * dy.shape[2] * dy.shape[3] * int(np.prod(w.shape[1:]))
                s.counter.record(op.name, skipped_macs=(w.shape[0] - kept.size) * per_channel)

        def pruned_weight_gradient(s: Step, op: Op, layer: Layer, seed: int) -> None:
            dy_name = op.reads[1]
            dy = s.tensors[dy_name]

            def compute(kept_dy: np.ndarray, kept_shape: tuple) -> np.ndarray | tuple:
                s.tensors[dy_name] = kept_dy
                inner(s, op, layer, seed)
                s.tensors[dy_name] = dy
                return tuple(s.tensors[name] for name in op.writes) if layer.bias else s.tensors[op.writes[0]]

            shape = s.graph.tensors[op.writes[0]].shape
            out = F.pruned_weight_gradient(compute, dy, shape, self.channels(s, layer), layer.bias, s.counter, op.name)
            for name, value in zip(op.writes, out if layer.bias else (out,), strict=True):
                s.tensors[name] = value

        return pruned_input_gradient if op.phase == "bwd_data" else pruned_weight_gradient
