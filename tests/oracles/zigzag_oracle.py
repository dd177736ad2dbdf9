"""ZigZag (PyPI ``zigzag-dse``) as a test oracle for e2sim's mapper.

ZigZag is not an e2sim dependency. Install it in a virtualenv of its own
(``python3 -m venv /tmp/zz && /tmp/zz/bin/pip install zigzag-dse six``) and run

    /tmp/zz/bin/python tests/oracles/zigzag_oracle.py tests/data/zigzag_golden.json [NAME ...]

to map every layer of tests/data/oracle_arches.yaml on both architectures there (or only those
named). ZigZag's own API turns on its inter-layer locality pass whenever it may unroll several
dimensions on one array axis; that pass drops DRAM for a layer that fits on chip, so this script
assembles ZigZag's stages itself, with mixed unrolling and without the locality pass. ZigZag
prices an access of a memory's port width; each port here is 64 bits wide and costs 64 × the
file's energy per bit. Records, per layer, the bits each memory reads and writes per operand, the
MACs and the energy. Chains are AccelForge's (ZigZag evaluates layers one at a time here).
"""

import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import yaml
from zigzag.stages.evaluation.cost_model_evaluation import CostModelStage
from zigzag.stages.main import MainStage
from zigzag.stages.mapping.spatial_mapping_generation import SpatialMappingGeneratorStage
from zigzag.stages.mapping.temporal_mapping_generator_stage import TemporalMappingGeneratorStage
from zigzag.stages.parser.accelerator_parser import AcceleratorParserStage
from zigzag.stages.parser.workload_parser import WorkloadParserStage
from zigzag.stages.results.reduce_stages import MinimalEnergyStage, SumStage
from zigzag.stages.workload_iterator import WorkloadStage

HERE = Path(__file__).resolve().parent
SPEC = yaml.safe_load((HERE.parent / "data" / "oracle_arches.yaml").read_text())
PORT_BITS = 64
OPERAND_OF = {"I": "I1", "W": "I2", "O": "O"}


def port(name, kind, operands, width=PORT_BITS):
    allocation = [f"{op}, {d}" for op in operands for d in (("fh", "tl") if op != "O" else ("fh", "tl", "fl", "th"))]
    if kind == "read":
        allocation = [a for a in allocation if a.endswith(("tl", "th"))]
    elif kind == "write":
        allocation = [a for a in allocation if a.endswith(("fh", "fl"))]
    return {"name": name, "type": kind, "bandwidth_min": width, "bandwidth_max": width, "allocation": allocation}


def memory(size_bits, pj_per_bit, operands, served, width=PORT_BITS):
    return {"size": size_bits, "r_cost": pj_per_bit * width, "w_cost": pj_per_bit * width, "area": 0, "latency": 1,
            "operands": operands, "ports": [port("r_port_1", "read", operands, width),
                                            port("w_port_1", "write", operands, width)],
            "served_dimensions": served}  # fmt: skip


def hardware(arch: dict) -> dict:
    e, bits = SPEC["energy"], SPEC["bits"]
    memories = {}
    if arch["dataflow"] == "rs":
        pads = arch["scratchpads"]
        for name, operand, key in (("spad_I", "I1", "ifmap_bytes"), ("spad_W", "I2", "filter_bytes"),
                                   ("spad_O", "O", "psum_bytes")):  # fmt: skip
            memories[name] = memory(pads[key] * 8, e["register_pj_per_bit"], [operand], [], bits)
    else:
        energy = e["register_pj_per_bit"] if arch.get("register_energy", True) else 0.0
        memories["reg_W"] = memory(bits, energy, ["I2"], [], bits)
    memories["global_buffer"] = memory(int(arch["buffer_kb"] * 1024 * 8), e["buffer_pj_per_bit"], ["I1", "I2", "O"],
                                       ["D1", "D2"])  # fmt: skip
    memories["dram"] = memory(10**12, e["dram_pj_per_bit"], ["I1", "I2", "O"], ["D1", "D2"])
    return {"name": arch["dataflow"], "memories": memories,
            "operational_array": {"unit_energy": e["mac_pj"], "unit_area": 1, "dimensions": ["D1", "D2"],
                                  "sizes": [arch["cols"], arch["rows"]]}}  # fmt: skip


def mapping(arch: dict) -> list:
    """Unrolling allowed per array axis: a weight-stationary array holds filters across its columns
    and the reduction (channels and filter taps) down its rows; a row-stationary one output rows
    (and filters) across, filter rows (and channels or filters) down."""
    if arch["dataflow"] == "rs":
        hint = {"D1": ["OY", "K"], "D2": ["FY", "C", "K"]}
    else:
        hint = {"D1": ["K"], "D2": ["C", "FX", "FY"]}
    return [{"name": "default", "spatial_mapping_hint": hint, "memory_operand_links": {"O": "O", "W": "I2", "I": "I1"}},
            {"name": "Gemm", "spatial_mapping_hint": {"D1": ["K"], "D2": ["C"]},
             "memory_operand_links": {"O": "O", "W": "I2", "I": "I1"}}]  # fmt: skip


def workload(case: dict) -> list:
    bits = SPEC["bits"]
    precision = {"W": bits, "I": bits, "O": bits, "O_final": bits}
    if "gemm" in case:
        m, n, k = case["gemm"]
        return [{"id": 0, "name": "layer", "operator_type": "Gemm", "equation": "O[b][k]+=W[k][c]*I[b][c]",
                 "loop_dims": ["B", "K", "C"], "loop_sizes": [m, n, k], "operand_precision": precision,
                 "operand_source": {"I": 0}}]  # fmt: skip
    c, k, h, r, stride = case["conv"]
    p = (h - r) // stride + 1
    return [{"id": 0, "name": "layer", "operator_type": "Conv",
             "equation": "O[b][k][oy][ox]+=W[k][c][fy][fx]*I[b][c][iy][ix]",
             "dimension_relations": [f"ix={stride}*ox+1*fx", f"iy={stride}*oy+1*fy"],
             "loop_dims": ["B", "K", "C", "OY", "OX", "FY", "FX"], "loop_sizes": [1, k, c, p, p, r, r],
             "operand_precision": precision, "operand_source": {"I": 0}}]  # fmt: skip


def run(arch_name: str, case_name: str, case: dict) -> dict:
    arch = SPEC["arches"][arch_name]
    with tempfile.TemporaryDirectory() as folder:
        files = {}
        for name, doc in (("hw", hardware(arch)), ("map", mapping(arch)), ("wl", workload(case))):
            files[name] = str(Path(folder) / f"{name}.yaml")
            Path(files[name]).write_text(yaml.safe_dump(doc, sort_keys=False))
        stages = [WorkloadParserStage, AcceleratorParserStage, SumStage, WorkloadStage, MinimalEnergyStage,
                  SpatialMappingGeneratorStage, MinimalEnergyStage, TemporalMappingGeneratorStage, CostModelStage]
        start = time.perf_counter()
        main = MainStage(list_of_callables=stages, accelerator=files["hw"], workload=files["wl"],
                         mapping=files["map"], dump_folder=folder, loma_lpf_limit=6, loma_show_progress_bar=False,
                         nb_mappings_generated=3, enable_mix_spatial_mapping_generation=True,
                         access_same_data_considered_as_no_access=True, temporal_mapping_type="uneven")  # fmt: skip
        cmes = main.run()
        seconds = time.perf_counter() - start
    cme = cmes[0][1][0][0]
    bits = {}
    for operand, levels in cme.memory_word_access.items():
        mem_op = OPERAND_OF[str(operand)]
        served = [level for level in cme.mem_level_list if mem_op in [str(o) for o in level.operands]]
        for level, moved in zip(served, levels, strict=True):
            name = level.memory_instance.name
            width = SPEC["bits"] if name.startswith(("spad", "reg")) else PORT_BITS
            count = {d.name: v for d, v in moved.data.items()}
            reads = (count["RD_OUT_TO_LOW"] + count["RD_OUT_TO_HIGH"]) * width
            writes = (count["WR_IN_BY_LOW"] + count["WR_IN_BY_HIGH"]) * width
            bits.setdefault(name, {})[str(operand)] = {"read": float(reads), "write": float(writes)}
    return {"arch": arch_name, "case": case_name, **case, "bits": bits, "macs": float(cme.layer.total_mac_count),
            "energy_pj": float(cme.energy_total), "spatial_mapping": str(cme.spatial_mapping),
            "temporal_mapping": str(cme.temporal_mapping), "seconds": seconds}  # fmt: skip


def main(out: str, names: list[str]) -> None:
    logging.disable(logging.CRITICAL)
    path = Path(out)
    recorded = json.loads(path.read_text())["cases"] if path.exists() else []
    done = {(r["arch"], r["case"]) for r in recorded}
    for arch in SPEC["arches"]:
        for name, case in SPEC["layers"].items():
            if (names and name not in names) or (arch, name) in done:
                continue
            result = run(arch, name, case)
            recorded.append(result)
            print(f"{arch} {name}: {result['seconds']:.0f} s", file=sys.stderr)
            path.write_text(json.dumps({"oracle": "zigzag-dse 3.9.1", "cases": recorded}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
