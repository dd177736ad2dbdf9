"""The sparsity that prices an iteration: measured by a training run (the zeros each GEMM operand
had as the op read it, the MACs with a zero operand, the run-length pairs of feature maps), or
stated as densities (non-zero fractions of activations, errors and weights) where nothing ran.
Stated densities treat the two operands of a MAC as independent; measured counts are exact."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from e2sim.counting import OpCounter
from e2sim.graph.ir import Op, Tensor
from e2sim.schedule.compression import expected_rle_pairs, stored_bytes

# the names the kernels count a PE-array op's two operands under (op.reads order), per phase
OPERAND_NAMES = {"fwd": ("x", "w"), "bwd_data": ("dy", "w"), "bwd_weight": ("x", "dy")}
ROLE_DENSITY = {"activation": "activations", "input": "activations", "error": "errors", "weight": "weights"}
FEATURE_MAPS = ("activation", "error")  # what compression stores compressed


@dataclass(frozen=True)
class TensorSparsity:
    """Non-zero fraction of a tensor; run-length pairs per value when measured."""

    density: float
    rle_pairs_per_value: float | None
    measured: bool


def tensor_sparsity(ops: Sequence[Op], tensors: Mapping[str, Tensor], counter: OpCounter | None,
                    densities: Mapping[str, float]) -> dict[str, TensorSparsity]:  # fmt: skip
    """Per tensor: measured where a GEMM read it in the run, else stated by its role, else absent."""
    found: dict[str, TensorSparsity] = {}
    if counter is not None:
        for op in ops:
            count = counter.ops.get(op.name)
            if count is None or op.kind not in ("conv", "gemm") or op.phase not in OPERAND_NAMES:
                continue
            for short, name in zip(OPERAND_NAMES[op.phase], op.reads[:2], strict=True):
                read = count.reads.get(short)
                if name in found or short not in count.zeros or not read:
                    continue
                pairs = count.rle_pairs.get(short)
                found[name] = TensorSparsity(1.0 - count.zeros[short] / read, None if pairs is None else pairs / read,
                                             True)  # fmt: skip
    for name, t in tensors.items():
        role = ROLE_DENSITY.get(t.role)
        if name not in found and role in densities:
            found[name] = TensorSparsity(densities[role], None, False)
    return found


def zero_operand_macs(op: Op, macs: float, counter: OpCounter | None, sparsity: Mapping[str, TensorSparsity]) -> float:
    """MACs of ``op`` (``macs`` of them priced) in which an operand is zero: counted, or from the
    stated densities of its two operands (independent)."""
    if not op.macs:
        return 0.0
    count = counter.ops.get(op.name) if counter is not None else None
    if count is not None:
        return float(count.zero_macs) if count.zeros else 0.0
    if counter is not None:
        return 0.0
    a, b = (sparsity.get(name) for name in op.reads[:2])
    if a is None and b is None:
        return 0.0
    return macs * (1.0 - (a.density if a else 1.0) * (b.density if b else 1.0))


def storage_ratio(t: Tensor, fmt: str, found: TensorSparsity | None) -> float:
    """Stored bytes over raw bytes of a feature map in DRAM under ``fmt`` (1 when not compressed)."""
    if fmt == "none" or found is None or t.role not in FEATURE_MAPS or not t.numel:
        return 1.0
    nonzero = t.numel * found.density
    pairs = (t.numel * found.rle_pairs_per_value if found.rle_pairs_per_value is not None
             else expected_rle_pairs(t.numel, found.density))  # fmt: skip
    return stored_bytes(t.numel, t.bits, fmt, nonzero, pairs) / max(t.bytes, 1)
