"""e2sim's mapper against AccelForge and ZigZag (recorded in tests/data, live where installed), on
the same architectures, layers and per-bit energies. The target: e2sim's mappings move at most
1.05x the oracle's DRAM bits and cost at most 1.1x its energy. Where e2sim's energy-optimal mapping
moves more DRAM bits, it must be because it costs less energy in e2sim's model, and the mapping
that moves the fewest bytes (found by pricing DRAM 10x) must meet the DRAM target; the README
lists those cases."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "oracles"))
import compare


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    return compare.comparison(tmp_path_factory.mktemp("oracles"))


def test_every_case_of_both_architectures_is_recorded(rows):
    cases = set(compare.SPEC["layers"])
    for oracle in compare.ORACLES:
        seen = {(r["arch"], r["case"]) for r in rows if r["oracle"] == oracle}
        expected = {(a, c) for a in compare.SPEC["arches"] for c in cases}
        if oracle == "accelforge":
            expected |= {(a, c) for a in compare.SPEC["arches"] for c in compare.SPEC["chains"]}
        assert expected <= seen, sorted(expected - seen)


def test_dram_traffic_and_energy_against_the_oracles(rows):
    for r in rows:
        label = f"{r['oracle']} {r['arch']} {r['case']}"
        assert r["e2sim"]["macs"] == r["oracle_result"]["macs"], label  # the same layer on both sides
        assert r["energy_ratio"] <= 1.10, (label, r["energy_ratio"])
        if r["dram_ratio"] > 1.05:  # traded for energy: the frugal mapping exists and costs more in e2sim
            assert r["frugal"]["dram_ratio"] <= 1.05 and r["frugal"]["energy_over_chosen"] > 1, (label, r)
            assert r["energy_ratio"] < 1, (label, r["energy_ratio"])


def test_the_chain_keeps_its_intermediate_on_chip(rows):
    """Fused, the tensor between the two convs never reaches DRAM in either tool."""
    for r in (r for r in rows if r["case"] in compare.SPEC["chains"]):
        (c0, k0, h0, r0, _), (_, k1, h1, r1, _) = compare.SPEC["chains"][r["case"]]["convs"]
        p1 = h1 - r1 + 1
        compulsory = 16 * (c0 * h0 * h0 + k0 * c0 * r0 * r0 + k1 * k0 * r1 * r1 + k1 * p1 * p1)
        assert r["e2sim"]["dram_bits"] == pytest.approx(compulsory)


def live(variable: str, script: str, tmp_path: Path) -> list[dict]:
    python = os.environ.get(variable)
    if not python:
        pytest.skip(f"set {variable} to a Python with the oracle installed (.ci/run does when it can install it)")
    out = tmp_path / "live.json"
    root = Path(__file__).resolve().parent
    subprocess.run([python, str(root / "oracles" / script), str(out), "resnet20.layer1", "resnet20.fc"], check=True,
                   capture_output=True, timeout=1800)  # fmt: skip
    return json.loads(out.read_text())["cases"]


@pytest.mark.parametrize(("variable", "script", "oracle"), [
    ("E2SIM_ACCELFORGE_PYTHON", "accelforge_oracle.py", "accelforge"),
    ("E2SIM_ZIGZAG_PYTHON", "zigzag_oracle.py", "zigzag"),
])  # fmt: skip
def test_against_the_oracles_run_live(tmp_path, variable, script, oracle):
    """The oracle, run now, agrees with its recording and e2sim stays within the bounds."""
    recorded = {(r["arch"], r["case"]): r for r in compare.recorded(oracle)}
    for record in live(variable, script, tmp_path):
        theirs = compare.oracle_case(record)
        assert theirs["dram_bits"] == pytest.approx(compare.oracle_case(recorded[record["arch"], record["case"]])
                                                    ["dram_bits"])  # fmt: skip
        case = {k: record[k] for k in ("conv", "gemm") if k in record}
        mine = compare.e2sim_case(record["arch"], record["case"], case, tmp_path)
        assert mine["dram_bits"] <= 1.05 * theirs["dram_bits"] and mine["energy_pj"] <= 1.10 * theirs["energy_pj"]
