"""Counts of what the kernels executed, keyed by the graph op (or functional call) that issued them.

These counts are the input of the accelerator model and of every policy: MACs by operand
bit-widths (``"8x8"``: an 8-bit by 8-bit product), MACs a policy skipped, element-wise ops,
elements read and written per operand, saturated (clipped) values per operand, and the sparsity
the kernels saw: zero values per GEMM operand (as quantized for the op) and the MACs in which
either operand was zero (exact counts, not estimates from the zero fractions).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


def _add(into: dict[str, int], more: Mapping[str, int] | None) -> None:
    for key, value in (more or {}).items():
        into[key] = into.get(key, 0) + int(value)


@dataclass
class OpCount:
    """``runs``: times the graph op ran (set by the training engine); ``calls``: kernel calls."""

    runs: int = 0
    calls: int = 0
    macs: dict[str, int] = field(default_factory=dict)
    skipped_macs: int = 0
    elementwise_ops: int = 0
    reads: dict[str, int] = field(default_factory=dict)
    writes: dict[str, int] = field(default_factory=dict)
    saturated: dict[str, int] = field(default_factory=dict)
    zeros: dict[str, int] = field(default_factory=dict)
    rle_pairs: dict[str, int] = field(default_factory=dict)  # run-length pairs of feature-map operands
    zero_macs: int = 0

    @property
    def total_macs(self) -> int:
        return sum(self.macs.values())

    def zero_fractions(self) -> dict[str, float]:
        """Zero values per GEMM operand over the values the op read."""
        return {k: v / self.reads[k] for k, v in sorted(self.zeros.items()) if self.reads.get(k)}

    def as_dict(self) -> dict:
        return {
            "runs": self.runs,
            "calls": self.calls,
            "macs": dict(sorted(self.macs.items())),
            "skipped_macs": self.skipped_macs,
            "elementwise_ops": self.elementwise_ops,
            "reads": dict(sorted(self.reads.items())),
            "writes": dict(sorted(self.writes.items())),
            "saturated": dict(sorted(self.saturated.items())),
            "zeros": dict(sorted(self.zeros.items())),
            "rle_pairs": dict(sorted(self.rle_pairs.items())),
            "zero_macs": self.zero_macs,
        }


@dataclass
class OpCounter:
    """Accumulates :class:`OpCount` per op name; pass one to functional calls to record them."""

    ops: dict[str, OpCount] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # MACs skipped before any op ran, by policy key

    def skip(self, source: str, macs: float) -> None:
        """``source`` (a policy) skipped ``macs`` of work that no op stands for (filtered instances)."""
        self.skipped[source] = self.skipped.get(source, 0) + int(macs)

    def skipped_macs(self) -> int:
        """Every skipped MAC: those of ops that ran in part, and those :meth:`skip` recorded."""
        return sum(c.skipped_macs for c in self.ops.values()) + sum(self.skipped.values())

    def record(
        self,
        op: str,
        macs: Mapping[str, int] | None = None,
        skipped_macs: int = 0,
        elementwise_ops: int = 0,
        reads: Mapping[str, int] | None = None,
        writes: Mapping[str, int] | None = None,
        saturated: Mapping[str, int] | None = None,
        zeros: Mapping[str, int] | None = None,
        rle_pairs: Mapping[str, int] | None = None,
        zero_macs: int = 0,
    ) -> None:
        count = self.ops.setdefault(op, OpCount())
        count.calls += 1
        _add(count.macs, macs)
        count.skipped_macs += int(skipped_macs)
        count.elementwise_ops += int(elementwise_ops)
        _add(count.reads, reads)
        _add(count.writes, writes)
        _add(count.saturated, {k: v for k, v in (saturated or {}).items() if v})
        _add(count.zeros, zeros)
        _add(count.rle_pairs, rle_pairs)
        count.zero_macs += int(zero_macs)

    def ran(self, op: str) -> None:
        """The graph op ``op`` ran once more (its kernels record their work separately)."""
        self.ops.setdefault(op, OpCount()).runs += 1

    def total_macs(self) -> int:
        return sum(c.total_macs for c in self.ops.values())

    def merge(self, other: OpCounter) -> None:
        _add(self.skipped, other.skipped)
        for name, count in other.ops.items():
            mine = self.ops.setdefault(name, OpCount())
            mine.runs += count.runs
            mine.calls += count.calls
            _add(mine.macs, count.macs)
            mine.skipped_macs += count.skipped_macs
            mine.elementwise_ops += count.elementwise_ops
            _add(mine.reads, count.reads)
            _add(mine.writes, count.writes)
            _add(mine.saturated, count.saturated)
            _add(mine.zeros, count.zeros)
            _add(mine.rle_pairs, count.rle_pairs)
            mine.zero_macs += count.zero_macs
