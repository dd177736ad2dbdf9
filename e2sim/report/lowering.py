"""What one lowered iteration computes: totals per phase, rows per layer and per op."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from e2sim.graph.ir import PHASES, TrainingGraph


def _per_phase(values: dict[str, int]) -> dict[str, int]:
    totals = {phase: values.get(phase, 0) for phase in PHASES}
    totals["total"] = sum(totals.values())
    return totals


def summarize(graph: TrainingGraph) -> dict[str, Any]:
    """A JSON-ready dict with stable keys: per-phase totals, per-layer rows, ops and tensors."""
    macs: dict[str, int] = {}
    elementwise: dict[str, int] = {}
    traffic: dict[str, int] = {}
    count: dict[str, int] = {}
    layers: dict[str, dict[str, Any]] = {}
    ops = []
    for op in graph.ops:
        read, written = graph.bytes_read(op), graph.bytes_written(op)
        macs[op.phase] = macs.get(op.phase, 0) + op.macs
        elementwise[op.phase] = elementwise.get(op.phase, 0) + op.elementwise_ops
        traffic[op.phase] = traffic.get(op.phase, 0) + read + written
        count[op.phase] = count.get(op.phase, 0) + 1
        row = layers.setdefault(
            op.layer,
            {"layer": op.layer, "kind": op.layer_kind, "ops": 0, "macs": dict.fromkeys(PHASES, 0),
             "elementwise_ops": 0, "bytes": 0},
        )  # fmt: skip
        row["ops"] += 1
        row["macs"][op.phase] += op.macs
        row["elementwise_ops"] += op.elementwise_ops
        row["bytes"] += read + written
        ops.append(
            {
                "name": op.name, "layer": op.layer, "layer_kind": op.layer_kind, "phase": op.phase,
                "kind": op.kind, "macs": op.macs, "elementwise_ops": op.elementwise_ops,
                "elements": op.elements, "bytes_read": read, "bytes_written": written,
                "reads": list(op.reads), "writes": list(op.writes),
                "conv": asdict(op.conv) if op.conv else None, "gemm": asdict(op.gemm) if op.gemm else None,
                "policy": graph.contributed.get(op.name), "optional": op.name in graph.optional,
            }
        )  # fmt: skip
    tensors = [
        {"name": t.name, "layer": t.layer, "role": t.role, "shape": list(t.shape), "bits": t.bits,
         "bytes": t.bytes, "alias_of": t.alias_of}
        for t in graph.tensors.values()
    ]  # fmt: skip
    return {
        "workload": graph.workload,
        "model": graph.model.name,
        "batch_size": graph.batch_size,
        "parameters": graph.model.parameters,
        "macs": _per_phase(macs),
        "elementwise_ops": _per_phase(elementwise),
        "bytes": _per_phase(traffic),
        "op_count": _per_phase(count),
        "layers": list(layers.values()),
        "ops": ops,
        "tensors": tensors,
    }


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [header] + [[f"{v:,}" if isinstance(v, int) else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        first = row[0].ljust(widths[0])
        lines.append("  ".join([first] + [v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)]))
        if n == 0:
            lines.append("-" * len(lines[0]))
    return lines


def format_summary(summary: dict[str, Any]) -> str:
    """The human table: per phase, then per layer."""
    head = (
        f"{summary['workload']}: one training iteration of {summary['model']} at batch {summary['batch_size']} "
        f"({summary['parameters']:,} parameters)"
    )
    added: dict[str, int] = {}
    for op in summary["ops"]:
        if op["policy"] is not None:
            added[op["policy"]] = added.get(op["policy"], 0) + 1
    if added:
        head += "; with the ops its policy adds: " + ", ".join(f"{n} of {key}" for key, n in added.items())
    phases = [*PHASES, "total"]
    by_phase = _table(
        ["phase", "ops", "MACs", "element-wise ops", "bytes"],
        [[p, summary["op_count"][p], summary["macs"][p], summary["elementwise_ops"][p], summary["bytes"][p]]
         for p in phases],
    )  # fmt: skip
    by_layer = _table(
        ["layer", "kind", "ops", "fwd MACs", "bwd_data MACs", "bwd_weight MACs", "element-wise ops", "bytes"],
        [[r["layer"], r["kind"], r["ops"], r["macs"]["fwd"], r["macs"]["bwd_data"], r["macs"]["bwd_weight"],
          r["elementwise_ops"], r["bytes"]] for r in summary["layers"]],
    )  # fmt: skip
    note = "bytes: every operand tensor once per op (reads + writes), before any on-chip reuse."
    return "\n".join([head, "", *by_phase, "", *by_layer, "", note])


EXPORT_FORMATS = {".graphml": "GraphML", ".dot": "DOT", ".gv": "DOT"}


def check_export_path(path: str | Path) -> Path:
    """``path`` if a graph can be written there: a known suffix, no file yet, an existing folder."""
    path = Path(path)
    if path.suffix.lower() not in EXPORT_FORMATS:
        raise FileExistsError(f"{path}: unknown graph format {path.suffix!r} (known: {', '.join(EXPORT_FORMATS)})")
    if path.exists():
        raise FileExistsError(f"{path}: exists; choose a new file")
    if not path.parent.is_dir():
        raise FileExistsError(f"{path}: no folder {path.parent}")
    return path


def export_graph(graph: TrainingGraph, path: str | Path) -> Path:
    """Write the iteration's DAG (``graph.dag``: op and tensor nodes, read and write edges) to
    ``path``: GraphML (``.graphml``) or Graphviz DOT (``.dot``, ``.gv``), with each node's attributes
    (ops: layer, kind, phase, MACs, element-wise ops, the policy that added it, and for PE-array ops
    the GEMM ``MxNxK`` of one group, the groups and the dilation; tensors: role, dims, bits, bytes; in
    DOT ops are boxes and tensors ellipses). Refuses a path that exists."""
    import networkx as nx

    path = check_export_path(path)
    fmt = EXPORT_FORMATS[path.suffix.lower()]
    dag = graph.dag.copy()
    dag.graph["name"] = f"{graph.workload} batch {graph.batch_size}"
    nx.set_node_attributes(dag, {op.name: {
        "layer": op.layer, "layer_kind": op.layer_kind, "kind": op.kind, "phase": op.phase, "macs": op.macs,
        "elementwise_ops": op.elementwise_ops, "policy": graph.contributed.get(op.name, ""),
        "optional": op.name in graph.optional, "gemm": f"{op.gemm.m}x{op.gemm.n}x{op.gemm.k}" if op.gemm else "",
        "groups": op.gemm.groups if op.gemm else 1, "dilation": op.conv.dilation if op.conv else 1}
        for op in graph.ops})  # fmt: skip
    nx.set_node_attributes(dag, {name: {
        "layer": t.layer, "role": t.role, "dims": "x".join(map(str, t.shape)), "bits": t.bits, "bytes": t.bytes,
        "alias_of": t.alias_of or ""} for name, t in graph.tensors.items()})  # fmt: skip
    if fmt == "GraphML":
        nx.write_graphml(dag, path)
    else:
        for _, data in dag.nodes(data=True):
            data["shape"] = "box" if data["type"] == "op" else "ellipse"
        nx.nx_pydot.write_dot(_quoted(dag), path)
    return path


def _quoted(dag):
    """A copy whose node names and attribute values DOT reads back as written (pydot needs quotes
    around names with dots and values with spaces or punctuation)."""
    import networkx as nx

    out = nx.DiGraph()
    names = {n: f'"{n}"' for n in dag.nodes}
    for node, data in dag.nodes(data=True):
        out.add_node(names[node], **{k: f'"{v}"' for k, v in data.items()})
    out.add_edges_from((names[a], names[b]) for a, b in dag.edges)
    return out
