"""Invariants of a lowered training graph, checked independently of how lowering built it.

A violation is a bug in e2sim (or in a policy plug-in), not a user error: :func:`verify` raises
:class:`GraphError`. Ops a policy contributes are checked for structure and dataflow (names,
tensors, one writer, order, acyclicity, shapes of gradients and updates); the operand geometry
and backward-mirror checks apply to the model's own ops.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import networkx as nx

from e2sim.graph.ir import OP_KINDS, PHASES, ROLES, Op, TrainingGraph

_GRAD = ".grad"


class GraphError(RuntimeError):
    """The lowered graph breaks an invariant; the message lists every violation."""


def verify(graph: TrainingGraph) -> None:
    problems = check_graph(graph)
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise GraphError(f"{graph.workload}: lowered graph breaks {len(problems)} invariant(s):\n  {shown}{more}")


def check_graph(graph: TrainingGraph) -> list[str]:
    """Every invariant violation, as text (empty when the graph is sound)."""
    problems: list[str] = []
    problems += _check_structure(graph)
    if problems:
        return problems  # later checks assume every referenced tensor exists
    problems += _check_producers_and_order(graph)
    problems += _check_shapes(graph)
    problems += _check_mirror(graph)
    return problems


def primal_of(name: str) -> str | None:
    """``x.y`` for ``x.y.grad`` or ``x.y.grad@consumer``; None for a tensor that is not a gradient."""
    base, _, _ = name.partition("@")
    return base[: -len(_GRAD)] if base.endswith(_GRAD) else None


def _check_structure(graph: TrainingGraph) -> list[str]:
    problems = []
    names = Counter(op.name for op in graph.ops)
    problems += [f"op name {n} used {c} times" for n, c in names.items() if c > 1]
    problems += [f"op {n} shares its name with a tensor" for n in names if n in graph.tensors]
    for op in graph.ops:
        if op.phase not in PHASES or op.kind not in OP_KINDS:
            problems.append(f"{op.name}: unknown phase {op.phase!r} or kind {op.kind!r}")
        problems += [f"{op.name} uses unknown tensor {t}" for t in op.reads + op.writes if t not in graph.tensors]
    for t in graph.tensors.values():
        if t.role not in ROLES or t.bits <= 0 or any(d <= 0 for d in t.shape):
            problems.append(f"tensor {t.name}: bad role {t.role!r}, bits {t.bits} or shape {t.shape}")
        if t.alias_of is not None and (t.alias_of not in graph.tensors or graph.tensors[t.alias_of].shape != t.shape):
            problems.append(f"tensor {t.name} aliases {t.alias_of}, which is missing or of another shape")
    if graph.dag.number_of_nodes() != len(graph.ops) + len(graph.tensors):
        problems.append("the DAG's nodes are not exactly the ops and the tensors")
    elif not nx.is_directed_acyclic_graph(graph.dag):
        problems.append(f"the DAG has a cycle: {nx.find_cycle(graph.dag)}")
    return problems


def _check_producers_and_order(graph: TrainingGraph) -> list[str]:
    problems = []
    writers = Counter(t for op in graph.ops for t in op.writes)
    for name in graph.tensors:
        expected = 0 if name in graph.inputs else 1
        if writers[name] != expected:
            problems.append(f"tensor {name} is written {writers[name]} times, expected {expected}")
    available = set(graph.inputs)
    for op in graph.ops:
        problems += [f"{op.name} reads {t} before it is written" for t in op.reads if t not in available]
        available.update(op.writes)
    read = {t for op in graph.ops for t in op.reads}
    problems += [
        f"gradient {name} is computed but never used"
        for name, t in graph.tensors.items()
        if t.role == "error" and name not in read
    ]
    return problems


def _check_shapes(graph: TrainingGraph) -> list[str]:
    problems = []
    shape = {name: t.shape for name, t in graph.tensors.items()}
    for name in graph.tensors:
        base = primal_of(name) or (name[: -len(".next")] if name.endswith(".next") else None)
        if base is None and name.endswith(".momentum"):
            base = name[: -len(".momentum")]
        if base is not None and (base not in shape or shape[base] != shape[name]):
            problems.append(f"tensor {name} has shape {shape[name]} but {base} has {shape.get(base)}")
    for op in graph.model_ops:  # a policy's ops: structure and dataflow only (a gate's GEMM is a bundle)
        if op.kind == "conv":
            problems += _check_conv(op, shape)
        elif op.kind == "gemm":
            problems += _check_gemm(op, graph)
        elif op.macs:
            problems.append(f"{op.name}: a {op.kind} op has {op.macs} MACs")
    return problems


def _check_conv(op: Op, shape: dict) -> list[str]:
    g = op.conv
    if g is None or op.gemm is None:
        return [f"{op.name}: conv op without geometry"]
    problems = []
    span_h, span_w = g.spans
    if g.p != (g.h + 2 * g.pad_h - span_h) // g.stride + 1 or g.q != (g.w + 2 * g.pad_w - span_w) // g.stride + 1:
        problems.append(f"{op.name}: output {g.p}×{g.q} does not follow from the input, kernel, stride, padding "
                        "and dilation")  # fmt: skip
    if g.c % g.groups or g.k % g.groups or op.gemm.groups != g.groups:
        problems.append(f"{op.name}: {g.groups} groups do not divide {g.c} channels and {g.k} filters, or differ "
                        f"from its GEMM's {op.gemm.groups}")  # fmt: skip
    macs = g.n * g.k * (g.c // g.groups) * g.p * g.q * g.r * g.s
    if op.macs != macs or op.gemm.macs != macs:
        problems.append(f"{op.name}: {op.macs} MACs (GEMM {op.gemm.macs}), geometry gives {macs}")
    x, w, y = (g.n, g.c, g.h, g.w), (g.k, g.c // g.groups, g.r, g.s), (g.n, g.k, g.p, g.q)
    expected = {
        "fwd": ((x, w), (y,)),
        "bwd_data": ((y, w), (x,)),
        "bwd_weight": ((x, y), (w,)),
    }.get(op.phase)
    if expected is None:
        return [*problems, f"{op.name}: conv op in phase {op.phase}"]
    got = (tuple(shape[t] for t in op.reads[:2]), tuple(shape[t] for t in op.writes[:1]))
    if got != expected:
        problems.append(f"{op.name}: operand shapes {got}, geometry gives {expected}")
    return problems


def _check_gemm(op: Op, graph: TrainingGraph) -> list[str]:
    if op.gemm is None or op.macs != op.gemm.macs:
        return [f"{op.name}: MACs {op.macs} differ from its GEMM {op.gemm}"]
    m, n, k = op.gemm.m, op.gemm.n, op.gemm.k
    size = [graph.tensors[t].numel for t in (*op.reads[:2], op.writes[0])]
    expected = {"fwd": [m * k, n * k, m * n], "bwd_data": [m * k, k * n, m * n], "bwd_weight": [k * n, k * m, m * n]}
    if size != expected.get(op.phase):
        return [f"{op.name}: operand sizes {size} do not fit GEMM {m}×{n}×{k} in phase {op.phase}"]
    return []


def _check_mirror(graph: TrainingGraph) -> list[str]:
    """Backward mirrors forward: gradients exist exactly where needed, and each has its op."""
    problems = []
    by_layer: dict[str, dict[str, list[Op]]] = defaultdict(lambda: defaultdict(list))
    for op in graph.model_ops:  # a policy's ops mirror nothing (gates read detached activations)
        by_layer[op.layer][op.phase].append(op)
    needs_grad = {name for name, t in graph.tensors.items() if t.role in ("weight", "bias") and name in graph.inputs}
    for layer, phases in by_layer.items():
        fwd = phases["fwd"]
        if len(fwd) != 1:
            problems.append(f"layer {layer} has {len(fwd)} forward ops")
            continue
        fwd_op = fwd[0]
        if any(t in needs_grad for t in fwd_op.reads):
            needs_grad.update(t for t in fwd_op.writes if graph.tensors[t].role == "activation")
        written = {t for op in phases["bwd_data"] for t in op.writes}
        for t in fwd_op.reads:
            if graph.tensors[t].role not in ("input", "activation"):
                continue
            has_grad = t in needs_grad
            mine = {f"{t}{_GRAD}", f"{t}{_GRAD}@{layer}"} & written
            if has_grad != bool(mine):
                state = "missing" if has_grad else "present but not needed"
                problems.append(f"layer {layer}: the gradient of its input {t} is {state}")
        params = [t for t in fwd_op.reads if t in graph.inputs and graph.tensors[t].role in ("weight", "bias")]
        if params:
            grads = {t for op in phases["bwd_weight"] for t in op.writes}
            nexts = {t for op in phases["update"] for t in op.writes}
            for p in params:
                if f"{p}{_GRAD}" not in grads or f"{p}.next" not in nexts:
                    problems.append(f"layer {layer}: parameter {p} lacks its gradient or its update")
        if fwd_op.kind in ("conv", "gemm"):
            for op in phases["bwd_data"] + phases["bwd_weight"]:
                if op.kind == fwd_op.kind and op.macs != fwd_op.macs:  # not the layer's grad_sum
                    problems.append(f"{op.name}: {op.macs} MACs, forward has {fwd_op.macs}")
    for name in dict.fromkeys(t for op in graph.model_ops for t in op.writes):
        t, primal = graph.tensors[name], primal_of(name)
        if t.role == "error" and primal not in needs_grad:
            problems.append(f"gradient {name} of {primal}, which needs none")
    return problems
