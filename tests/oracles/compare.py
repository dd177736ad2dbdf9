"""e2sim against the recorded oracles (AccelForge, ZigZag) on the architectures and layers of
tests/data/oracle_arches.yaml: DRAM bits and energy under the same per-bit energies.

Energy is computed the same way for both sides from their access counts: DRAM bits × the DRAM
energy + global-buffer bits × the buffer energy + register/scratchpad bits × the register energy
(where the architecture prices registers) + MACs × the MAC energy. Used by tests/test_oracles.py
and by ``python benchmarks/oracle_comparison.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

import e2sim

DATA = Path(__file__).resolve().parent.parent / "data"
SPEC = yaml.safe_load((DATA / "oracle_arches.yaml").read_text())
ORACLES = ("accelforge", "zigzag")
DRAM_NAMES = ("MainMemory", "dram")
BUFFER_NAMES = ("GlobalBuffer", "global_buffer")


def hardware(name: str, dram_price: float = 1.0) -> e2sim.hw.Accelerator:
    """The e2sim hardware spec of an architecture of the file, with its per-bit energies (DRAM's
    × ``dram_price`` for the mapper: to find the mapping that moves the fewest DRAM bytes)."""
    arch, e, bits = SPEC["arches"][name], SPEC["energy"], SPEC["bits"]
    pe = {"rows": arch["rows"], "cols": arch["cols"], "dataflow": arch["dataflow"], "mac_bits": [bits]}
    if arch["dataflow"] == "rs":
        pe["scratchpads"] = arch["scratchpads"]
    tiny = 1e-9  # what the oracles do not price (networks, clock) must not steer e2sim's search either
    overrides = {
        "dram_lpddr4_pj_per_bit": e["dram_pj_per_bit"] * dram_price,
        "sram_access_64b_8kb_pj": 64 * e["buffer_pj_per_bit"],
        "sram_size_exponent": 0, "rf_access_16b_pj": 16 * e["register_pj_per_bit"], "int_mult_8b_pj": e["mac_pj"] / 2,
        "int_mult_width_exponent": 0, "int_add_32b_pj": e["mac_pj"] * 32 / bits / 2, "noc_16b_pj": tiny,
        "pe_hop_16b_pj": tiny, "clock_pj_per_pe_cycle": tiny,
    }  # fmt: skip
    return e2sim.load_hw({
        "name": name, "technology": "45nm", "clock_mhz": 200, "static_power_mw": 0, "pe_array": pe,
        "buffers": {"global": {"size_kb": arch["buffer_kb"], "word_bits": 64}},
        "dram": {"type": "lpddr4", "bandwidth_gb_per_s": 12.8, "overlaps_compute": False},
        "energy_overrides": overrides,
    })  # fmt: skip


def energy_pj(dram_bits: float, buffer_bits: float, register_bits: float, macs: float, arch: str) -> float:
    e = SPEC["energy"]
    registers = e["register_pj_per_bit"] if SPEC["arches"][arch].get("register_energy", True) else 0.0
    return (dram_bits * e["dram_pj_per_bit"] + buffer_bits * e["buffer_pj_per_bit"] + register_bits * registers
            + macs * e["mac_pj"])  # fmt: skip


def e2sim_case(arch: str, name: str, case: dict, folder: Path, dram_price: float = 1.0) -> dict:
    """e2sim's DRAM bits, buffer bits, register bits and MACs on one recorded case (energy at the
    file's prices whatever ``dram_price`` steered the mapper)."""
    hw, bits = hardware(arch, dram_price), SPEC["bits"]
    if "convs" in case:  # a chain: the network of the convs, forward only; its output is written out
        (c0, k0, h0, r0, _), (_, k1, _, r1, _) = case["convs"]
        spec = {"name": name, "dataset": {"name": "cifar10"}, "training": {"batch_size": 1, "epochs": 1, "lr": 0.1},
                "model": {"layers": [{"type": "conv", "out_channels": k0, "kernel": r0},
                                     {"type": "conv", "out_channels": k1, "kernel": r1},
                                     {"type": "global_avgpool"}, {"type": "linear", "out_features": 10}]},
                "precision": dict.fromkeys(("weights", "activations", "errors", "gradients", "accumulator"),
                                           f"fp{bits}")}  # fmt: skip
        report = e2sim.estimate(spec, hw, forward_only=True)
        rows = [r for r in report.rows if r.op.name in ("conv1.fwd", "conv2.fwd")]
        written = report.placements["conv2.y"].placement == "dram"  # else streamed on: the oracle writes it out
        dram = sum(r.cost.dram_bytes for r in rows) * 8 + (0 if written else report.tensors["conv2.y"].bytes * 8)
    else:
        topo = folder / f"{name}.csv"
        if "gemm" in case:
            topo.write_text("Layer, M, N, K,\n" + f"{name}, " + ", ".join(map(str, case["gemm"])) + ",\n")
        else:
            c, k, h, r, stride = case["conv"]
            topo.write_text("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
                            f"Num Filter, Strides,\n{name}, {h}, {h}, {r}, {r}, {c}, {k}, {stride},\n")  # fmt: skip
        report = e2sim.estimate(topo, hw, operand_bits=bits, accumulator_bits=bits)
        rows = list(report.rows)
        dram = sum(r.cost.dram_bytes for r in rows) * 8
    buffer = sum(sum(r.cost.sram_bits.values()) for r in rows)
    registers = sum(r.cost.rf_bits for r in rows)
    macs = sum(r.op.macs for r in rows)
    return {"dram_bits": dram, "buffer_bits": buffer, "register_bits": registers, "macs": macs,
            "energy_pj": energy_pj(dram, buffer, registers, macs, arch)}  # fmt: skip


def oracle_case(record: dict) -> dict:
    """The same quantities from an oracle's recorded bits."""
    dram = buffer = registers = 0.0
    for component, tensors in record["bits"].items():
        moved = sum(v["read"] + v["write"] for v in tensors.values())
        if component in DRAM_NAMES:
            dram += moved
        elif component in BUFFER_NAMES:
            buffer += moved
        else:
            registers += moved
    macs = case_macs(record)
    return {"dram_bits": dram, "buffer_bits": buffer, "register_bits": registers, "macs": macs,
            "energy_pj": energy_pj(dram, buffer, registers, macs, record["arch"])}  # fmt: skip


def case_macs(case: dict) -> int:
    if "gemm" in case:
        m, n, k = case["gemm"]
        return m * n * k
    total = 0
    for c, k, h, r, stride in case.get("convs") or [case["conv"]]:
        p = (h - r) // stride + 1
        total += c * k * p * p * r * r
    return total


def recorded(oracle: str) -> list[dict]:
    path = DATA / f"{oracle}_golden.json"
    return json.loads(path.read_text())["cases"] if path.exists() else []


def comparison(folder: Path) -> list[dict]:
    """One row per recorded (oracle, architecture, case): both sides and their ratios."""
    rows, mine = [], {}
    for oracle in ORACLES:
        for record in recorded(oracle):
            key = (record["arch"], record["case"])
            if key not in mine:
                mine[key] = e2sim_case(record["arch"], record["case"], case_of(record), folder)
            theirs = oracle_case(record)
            row = {"oracle": oracle, "arch": record["arch"], "case": record["case"], "e2sim": mine[key],
                         "oracle_result": theirs,
                         "dram_ratio": mine[key]["dram_bits"] / max(theirs["dram_bits"], 1.0),
                   "energy_ratio": mine[key]["energy_pj"] / theirs["energy_pj"]}  # fmt: skip
            if row["dram_ratio"] > 1.05:  # what the mapping that moves the fewest DRAM bytes would cost
                frugal = e2sim_case(record["arch"], record["case"], case_of(record), folder, dram_price=10.0)
                row["frugal"] = {"dram_ratio": frugal["dram_bits"] / max(theirs["dram_bits"], 1.0),
                                 "energy_ratio": frugal["energy_pj"] / theirs["energy_pj"],
                                 "energy_over_chosen": frugal["energy_pj"] / mine[key]["energy_pj"]}  # fmt: skip
            rows.append(row)
    return rows


def case_of(record: dict) -> dict:
    return {k: record[k] for k in ("conv", "gemm", "convs") if k in record}
