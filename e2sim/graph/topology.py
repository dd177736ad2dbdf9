"""Forward ops of a SCALE-Sim topology (8-bit operands, SCALE-Sim's output-size rule)."""

from __future__ import annotations

import math

from e2sim.config.scalesim import TopologyLayer
from e2sim.graph.ir import ConvShape, GemmShape, Op, Tensor

TOPOLOGY_BITS = 8  # SCALE-Sim counts one-byte words


def ops_from_topology(layers: list[TopologyLayer]) -> tuple[list[Op], dict[str, Tensor]]:
    ops, tensors = [], {}

    def tensor(name: str, layer: str, role: str, shape: tuple[int, ...]) -> str:
        tensors[name] = Tensor(name, layer, role, shape, TOPOLOGY_BITS)
        return name

    for layer in layers:
        if layer.conv is not None:
            h, w, r, s, c, k, stride = layer.conv
            p, q = math.ceil((h - r) / stride) + 1, math.ceil((w - s) / stride) + 1
            conv = ConvShape(1, k, c, h, w, p, q, r, s, stride, 0, 0)
            gemm = GemmShape(p * q, k, c * r * s)
            reads = [tensor(f"{layer.name}.x", layer.name, "activation", (1, c, h, w)),
                     tensor(f"{layer.name}.w", layer.name, "weight", (k, c, r, s))]  # fmt: skip
            out = tensor(f"{layer.name}.y", layer.name, "activation", (1, k, p, q))
            kind = "conv"
        else:
            m, n, k = layer.gemm
            conv, gemm = None, GemmShape(m, n, k)
            reads = [tensor(f"{layer.name}.a", layer.name, "activation", (m, k)),
                     tensor(f"{layer.name}.b", layer.name, "weight", (k, n))]  # fmt: skip
            out = tensor(f"{layer.name}.y", layer.name, "activation", (m, n))
            kind = "gemm"
        ops.append(Op(f"{layer.name}.fwd", layer.name, kind, "fwd", kind, tuple(reads), (out,), gemm.macs, 0,
                      tensors[out].numel, conv, gemm))  # fmt: skip
    return ops, tensors
