"""Forward ops of a SCALE-Sim topology at a batch size and operand width (SCALE-Sim's output-size
rule; the input sizes of a conv row include its padding)."""

from __future__ import annotations

import math

from e2sim.config.scalesim import TopologyLayer
from e2sim.graph.ir import ConvShape, GemmShape, Op, Tensor

TOPOLOGY_BITS = 8  # SCALE-Sim counts one-byte words
TOPOLOGY_ACCUMULATOR_BITS = 32


def ops_from_topology(layers: list[TopologyLayer], batch: int = 1,
                      bits: int = TOPOLOGY_BITS) -> tuple[list[Op], dict[str, Tensor]]:  # fmt: skip
    """One forward op per row. ``batch`` images per conv row; a GEMM row's M counts rows per image
    (the batch multiplies it)."""
    ops, tensors = [], {}

    def tensor(name: str, layer: str, role: str, shape: tuple[int, ...]) -> str:
        tensors[name] = Tensor(name, layer, role, shape, bits)
        return name

    for layer in layers:
        if layer.conv is not None:
            h, w, r, s, c, k, stride = layer.conv
            p, q = math.ceil((h - r) / stride) + 1, math.ceil((w - s) / stride) + 1
            conv = ConvShape(batch, k, c, h, w, p, q, r, s, stride, 0, 0)
            gemm = GemmShape(batch * p * q, k, c * r * s)
            reads = [tensor(f"{layer.name}.x", layer.name, "activation", (batch, c, h, w)),
                     tensor(f"{layer.name}.w", layer.name, "weight", (k, c, r, s))]  # fmt: skip
            out = tensor(f"{layer.name}.y", layer.name, "activation", (batch, k, p, q))
            kind = "conv"
        else:
            m, n, k = layer.gemm
            conv, gemm = None, GemmShape(batch * m, n, k)
            reads = [tensor(f"{layer.name}.a", layer.name, "activation", (batch * m, k)),
                     tensor(f"{layer.name}.b", layer.name, "weight", (k, n))]  # fmt: skip
            out = tensor(f"{layer.name}.y", layer.name, "activation", (batch * m, n))
            kind = "gemm"
        ops.append(Op(f"{layer.name}.fwd", layer.name, kind, "fwd", kind, tuple(reads), (out,), gemm.macs, 0,
                      tensors[out].numel, conv, gemm))  # fmt: skip
    return ops, tensors
