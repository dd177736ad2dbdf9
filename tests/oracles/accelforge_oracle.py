"""AccelForge (PyPI ``accelforge``, the Timeloop/Accelergy group's optimal and fusion-aware mapper)
as a test oracle for e2sim's mapper.

AccelForge is not an e2sim dependency: it needs Python >= 3.12 and lives in a virtualenv of its
own (``python3.12 -m venv /tmp/af && /tmp/af/bin/pip install accelforge``; it renders mappings with
Graphviz's ``dot``). Run

    /tmp/af/bin/python tests/oracles/accelforge_oracle.py tests/data/accelforge_golden.json [NAME ...]

to map every layer and chain of tests/data/oracle_arches.yaml on both architectures there (or
only those named) and record, per case, the bits each component reads and writes per tensor, the
MACs and the energy under the file's per-bit energies. tests/test_oracles.py compares e2sim with it.
"""

import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import accelforge as af
import yaml

HERE = Path(__file__).resolve().parent
SPEC = yaml.safe_load((HERE.parent / "data" / "oracle_arches.yaml").read_text())


def memory(name, size_bits, energy, keep, may_keep=None, spatial=None):
    node = {"name": name, "size": size_bits, "leak_power": 0, "area": 0, "tensors": {"keep": keep},
            "actions": [{"name": a, "energy": energy, "throughput": "inf"} for a in ("read", "write")]}  # fmt: skip
    if may_keep:
        node["tensors"]["may_keep"] = may_keep
    if spatial:
        node["spatial"] = spatial
    return node


def arch_nodes(arch: dict) -> list:
    """The architecture as AccelForge's node list (tagged in YAML by :func:`arch_yaml`)."""
    e, bits = SPEC["energy"], SPEC["bits"]
    nodes = [("Memory", memory("MainMemory", "inf", e["dram_pj_per_bit"], "~Intermediates", "All")),
             ("Memory", memory("GlobalBuffer", int(arch["buffer_kb"] * 1024 * 8), e["buffer_pj_per_bit"], "All"))]
    if arch["dataflow"] == "rs":  # filter rows shared along a PE row, partial sums summed up a column
        nodes.append(("Container", {"name": "PE", "spatial": [
            {"name": "reuse_weight", "fanout": arch["cols"], "reuse": "weight", "min_usage": 0},
            {"name": "reuse_output", "fanout": arch["rows"], "reuse": "output", "min_usage": 0}]}))  # fmt: skip
        pads = arch["scratchpads"]
        for name, tensor, key in (("InputScratchpad", "input", "ifmap_bytes"), ("WeightScratchpad", "weight",
                                  "filter_bytes"), ("OutputScratchpad", "output", "psum_bytes")):  # fmt: skip
            nodes.append(("Memory", memory(name, pads[key] * 8, e["register_pj_per_bit"], tensor)))
    else:  # weight stationary: inputs flow along rows, partial sums down columns, a weight per PE
        nodes.append(("Container", {"name": "PE", "spatial": [
            {"name": "reuse_input", "fanout": arch["cols"], "reuse": "input", "min_usage": 0},
            {"name": "reuse_output", "fanout": arch["rows"], "reuse": "output", "min_usage": 0}]}))  # fmt: skip
        energy = e["register_pj_per_bit"] if arch.get("register_energy", True) else 0
        nodes.append(("Memory", memory("Register", bits, energy, "weight")))
    nodes.append(("Compute", {"name": "MAC", "leak_power": 0, "area": 0,
                              "actions": [{"name": "compute", "energy": e["mac_pj"], "throughput": 1}]}))  # fmt: skip
    return nodes


def arch_yaml(arch: dict) -> str:
    lines = ["arch:", "  nodes:"]
    for tag, body in arch_nodes(arch):
        text = yaml.safe_dump(body, default_flow_style=False, sort_keys=False).rstrip().splitlines()
        lines.append(f"  - !{tag}")
        lines += [f"    {line}" for line in text]
    return "\n".join(lines) + "\n"


def conv_einsum(name, source, target, c, k, h, r, stride, output):
    p = (h - r) // stride + 1
    ranks = {f"C{name}": c, f"K{name}": k, f"H{name}": h, f"P{name}": p, f"R{name}": r}
    accesses = [
        {"name": source, "projection": {"N": "n", f"C{name}": f"c{name}", f"H{name}": f"{stride}*p{name} + r{name}",
                                        f"W{name}": f"{stride}*q{name} + s{name}"}},
        {"name": f"W{name}", "projection": {f"K{name}": f"k{name}", f"C{name}": f"c{name}", f"R{name}": f"r{name}",
                                            f"S{name}": f"s{name}"}},
        {"name": target, "projection": {"N": "n", f"K{name}": f"k{name}", f"P{name}": f"p{name}",
                                        f"Q{name}": f"q{name}"}, "output": True},
    ]  # fmt: skip
    einsum = {"name": f"Conv{name}", "tensor_accesses": accesses,
              "renames": {"input": source, "weight": f"W{name}", "output": target}}  # fmt: skip
    sizes = {**ranks, f"W{name}": h, f"Q{name}": p, f"S{name}": r}
    return einsum, sizes


def workload_yaml(case: dict) -> str:
    if "gemm" in case:
        m, n, k = case["gemm"]
        sizes = {"M": m, "N": n, "K": k}
        einsums = [{"name": "Gemm", "tensor_accesses": [
            {"name": "A", "projection": {"M": "m", "K": "k"}}, {"name": "B", "projection": {"K": "k", "N": "n"}},
            {"name": "Z", "projection": {"M": "m", "N": "n"}, "output": True}],
            "renames": {"input": "A", "weight": "B", "output": "Z"}}]  # fmt: skip
    else:
        convs = case.get("convs") or [case["conv"]]
        sizes, einsums = {"N": 1}, []
        for i, (c, k, h, r, stride) in enumerate(convs):
            source = "I" if i == 0 else f"T{i}"
            target = "O" if i == len(convs) - 1 else f"T{i + 1}"
            einsum, ranks = conv_einsum(str(i), source, target, c, k, h, r, stride, target == "O")
            einsums.append(einsum)
            sizes.update(ranks)
            if i > 0:  # the intermediate is one tensor: give both einsums the same rank names for it
                einsum["tensor_accesses"][0]["projection"] = {"N": "n", f"C{i}": f"c{i}", f"H{i}": f"p{i}+r{i}",
                                                             f"W{i}": f"q{i}+s{i}"}  # fmt: skip
                previous = einsums[i - 1]["tensor_accesses"][2]
                previous["projection"] = {"N": "n", f"C{i}": f"k{i - 1}", f"H{i}": f"p{i - 1}", f"W{i}": f"q{i - 1}"}
    doc = {"workload": {"rank_sizes": sizes, "bits_per_value": {"All": SPEC["bits"]}, "einsums": einsums}}
    return yaml.safe_dump(doc, sort_keys=False)


def run(arch_name: str, case_name: str, case: dict) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        arch_file, workload_file = Path(folder) / "arch.yaml", Path(folder) / "workload.yaml"
        arch_file.write_text(arch_yaml(SPEC["arches"][arch_name]))
        workload_file.write_text(workload_yaml(case))
        spec = af.Spec.from_yaml(str(arch_file), str(workload_file))
        spec.mapper.metrics = af.mapper.Metrics.ENERGY
        if "convs" in case:  # a chain: at most one loop shared by the fused einsums (AccelForge's tutorial setting)
            spec.mapper.max_fused_loops = 1
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            mapping = spec.map_workload_to_arch(print_progress=False)
        seconds = time.perf_counter() - start
    row = mapping.data.iloc[0]
    actions = {}
    for column in mapping.columns:
        parts = column.split("<SEP>")
        if len(parts) == 5 and parts[1] == "action" and parts[3] != "None":
            actions.setdefault(parts[2], {}).setdefault(parts[3], {})[parts[4]] = float(row[column])
    macs = sum(float(row[c]) for c in mapping.columns if c.endswith("<SEP>action<SEP>MAC<SEP>None<SEP>compute"))
    return {"arch": arch_name, "case": case_name, **case, "bits": actions, "macs": macs,
            "energy_pj": float(mapping.energy()), "seconds": seconds}  # fmt: skip


def main(out: str, names: list[str]) -> None:
    cases = {**SPEC["layers"], **SPEC["chains"]}
    path = Path(out)
    recorded = json.loads(path.read_text())["cases"] if path.exists() else []
    done = {(r["arch"], r["case"]) for r in recorded}
    for arch in SPEC["arches"]:
        for name, case in cases.items():
            if (names and name not in names) or (arch, name) in done:
                continue
            result = run(arch, name, case)
            recorded.append(result)
            print(f"{arch} {name}: {result['seconds']:.0f} s", file=sys.stderr)
            path.write_text(json.dumps({"oracle": f"accelforge {af.__version__}" if hasattr(af, "__version__")
                                        else "accelforge", "cases": recorded}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
