"""Predictive sign gradient descent (E2-Train, Wang et al. 2019), on conv weight gradients.

A predictor computes a cheap weight gradient g̃ from the 4 most significant bits (rounded, not
truncated) of the 8-bit inputs and weights and a 16-bit output error. Where |g̃| >= τ its sign is
used; elsewhere the accurate gradient g (the workload's formats) is computed and its sign used.
τ is fixed, or adaptive: τ · max|g̃| of the layer.

Choices where the paper is silent (documented here and in the README):
- The update is momentum SGD on sign gradients scaled by the layer's mean |g̃|, so that the
  workload's learning rate keeps its meaning (E2-Train tunes a separate learning rate instead).
- Counting: predictor MACs are priced as ``predictor_bits``-bit MACs (key ``"4x4"``), following
  E2-Train's accounting (a 4-bit multiplier; the 16-bit error streams through the accumulator
  path), for the whole gradient; accurate MACs
  (activations × errors) only for the weights below τ, counted per weight element (N·P·Q MACs
  each). Per element is what an output-stationary array can skip, one PE per element; on ws/is
  arrays the mask would apply per tile, so this is an optimistic bound there.
- Bias gradients and linear layers are computed accurately (the paper predicts conv weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from e2sim.config.formats import parse_format
from e2sim.config.frozen import FrozenDict
from e2sim.config.precision import PrecisionSpec
from e2sim.config.reader import at_most, boolean, one_of, positive_number
from e2sim.counting import OpCounter
from e2sim.graph.ir import Op
from e2sim.graph.layers import Layer
from e2sim.lazy import LazyModule
from e2sim.numerics.seeds import derive_seed
from e2sim.policies.base import Kernel, RecordedPolicy, Step

F = LazyModule("e2sim.functional")  # the kernels load when a policy first runs one
Q = LazyModule("e2sim.numerics.quantize")
if TYPE_CHECKING:
    from e2sim.numerics.quantize import Quantized

_INT8 = parse_format("int8")


@dataclass(frozen=True)
class PsgSpec:
    """Predictive sign gradient (E2-Train): a predictor of the weight gradient from the
    ``predictor_bits`` most significant bits of inputs and weights and a ``error_bits`` error; where
    |prediction| >= threshold its sign is used, elsewhere the accurate gradient's sign. With
    ``adaptive`` the threshold is ``threshold`` × max|prediction| of the layer."""

    threshold: float = 5e-5
    adaptive: bool = False
    predictor_bits: int = 4
    error_bits: int = 16


def msb_operand(q8: Quantized, bits: int) -> Quantized:
    """The ``bits`` most significant bits of an 8-bit grid, rounded: round(q / 2^(8-bits)), clipped."""
    shift = 2 ** (8 - bits)
    top = 2 ** (bits - 1) - 1
    values = np.clip(np.rint(q8.values / shift), -top, top).astype(np.float32)
    return Q.Quantized(values, (q8.scale * shift).astype(np.float32), 0, bits, float(top))


def predictor_operands(x: np.ndarray, dy: np.ndarray, spec: PsgSpec, seed: int) -> tuple[Quantized, Quantized]:
    """Predictor inputs: x at 8 bits then its MSBs; dy at ``error_bits``."""
    x8 = Q.quantize(x, _INT8, "nearest", "tensor", 0, derive_seed(seed, 31))
    dyq = Q.quantize(dy, parse_format(f"int{spec.error_bits}"), "nearest", "tensor", 0, derive_seed(seed, 32))
    return msb_operand(x8, spec.predictor_bits), dyq


@dataclass
class PsgStats:
    predicted: int = 0  # weight-gradient elements taken from the predictor
    total: int = 0
    per_layer: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        rate = self.predicted / self.total if self.total else float("nan")
        layers = {k: v[0] / v[1] for k, v in sorted(self.per_layer.items())}
        return {"predictor_hit_rate": rate, "weight_gradients": self.total, "per_layer_hit_rate": layers}


def psg_weight_gradient(
    x, dy, weight_shape, stride, padding, fmt: PrecisionSpec | None, spec: PsgSpec, stats: PsgStats,
    bias: bool, counter: OpCounter | None, op: str, seed: int, layer: str, groups: int = 1, dilation: int = 1,
):  # fmt: skip
    """Returns the weight gradient to apply (scaled signs), and the bias gradient if ``bias``."""
    xp, dyp = predictor_operands(x, dy, spec, seed)
    conv = dict(groups=groups, dilation=dilation)
    predicted = F.conv2d_grad_weight(xp.dequantize(), dyp.dequantize(), weight_shape, stride, padding, **conv)
    threshold = spec.threshold * float(np.max(np.abs(predicted))) if spec.adaptive else spec.threshold
    confident = np.abs(predicted) >= threshold
    accurate = F.conv2d_grad_weight(x, dy, weight_shape, stride, padding, fmt, bias=bias, seed=seed, **conv)
    dw, db = accurate if bias else (accurate, None)
    signs = np.where(confident, np.sign(predicted), np.sign(dw))
    scaled = (signs * np.mean(np.abs(predicted))).astype(np.float32)
    n, k, p, q = dy.shape
    per_element = n * p * q
    needed = int(np.count_nonzero(~confident))
    stats.predicted += int(confident.sum())
    stats.total += confident.size
    hit = stats.per_layer.get(layer, (0, 0))
    stats.per_layer[layer] = (hit[0] + int(confident.sum()), hit[1] + confident.size)
    if counter is not None:
        accurate_bits = f"{fmt.activations.bits}x{fmt.errors.bits}" if fmt else "32x32"
        counter.record(
            op,
            macs={f"{spec.predictor_bits}x{spec.predictor_bits}": confident.size * per_element,
                  accurate_bits: needed * per_element},
            skipped_macs=(confident.size - needed) * per_element,
            elementwise_ops=confident.size * 2 + (dy.size if bias else 0),  # compare with τ, take the sign
            reads={"x": x.size, "dy": dy.size}, writes={"dw": confident.size, **({"db": k} if bias else {})},
        )  # fmt: skip
    return (scaled, db) if bias else scaled


class Psg(RecordedPolicy):
    """Replaces the kernel of every conv's weight gradient by the predictor and the sign update."""

    key = "psg"
    Spec = PsgSpec
    checks = FrozenDict({"threshold": at_most(positive_number, 1e6), "adaptive": boolean,
                               "predictor_bits": one_of(*range(2, 9)), "error_bits": one_of(8, 12, 16)})  # fmt: skip

    def __init__(self, spec: PsgSpec, workload):
        super().__init__(spec, workload)
        self.record = PsgStats()

    def kernel(self, op: Op, layer: Layer, inner: Kernel) -> Kernel:
        if op.layer_kind != "conv" or op.phase != "bwd_weight":
            return inner

        def sign_gradient(s: Step, op: Op, layer: Layer, seed: int) -> None:
            x, dy = (s.tensors[name] for name in op.reads)
            shape = (dy.shape[1], *s.graph.tensors[op.writes[0]].shape[1:])
            out = psg_weight_gradient(x, dy, shape, layer.stride, layer.padding, s.fmt, self.spec, self.record,
                                      layer.bias, s.counter, op.name, seed, layer.name, layer.groups,
                                      layer.dilation)  # fmt: skip
            for name, value in zip(op.writes, out if layer.bias else (out,), strict=True):
                s.tensors[name] = value

        return sign_gradient
