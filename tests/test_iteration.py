"""Fusion and residency across the iteration, per-tensor DRAM accounting, power terms and the
operating point, and the inputs that used to be priced wrong."""

import dataclasses
import json

import pytest

import e2sim
from e2sim.cli.main import main


@pytest.fixture(scope="module")
def lenet():
    return {fusion: e2sim.estimate("lenet5-mnist", "zedboard", fusion=fusion).to_dict() for fusion in (True, False)}


def test_tensor_rows_add_up_to_the_dram_traffic(lenet):
    for report in lenet.values():
        per_tensor = sum(t["dram_read_bytes"] + t["dram_write_bytes"] for t in report["tensors"])
        assert per_tensor == pytest.approx(report["totals"]["dram_bytes"])
        assert all(t["reason"] for t in report["tensors"])


def test_layer_by_layer_sends_every_tensor_to_dram(lenet):
    layered = lenet[False]
    assert {t["placement"] for t in layered["tensors"]} == {"dram"}
    for t in layered["tensors"]:
        if t["producer"] is not None:  # written once, read once by each reader (no tile re-fetch in LeNet)
            assert t["dram_write_bytes"] == t["bytes"], t["tensor"]


def test_fusion_streams_single_use_tensors_and_keeps_others_on_chip(lenet):
    fused, layered = lenet[True], lenet[False]
    rows = {t["tensor"]: t for t in fused["tensors"]}
    assert rows["conv1.y"]["placement"] == "streamed"  # conv1's epilogue applies relu1
    assert rows["conv1.y"]["dram_read_bytes"] == rows["conv1.y"]["dram_write_bytes"] == 0
    on_chip = [t for t in fused["tensors"] if t["placement"] == "on_chip"]
    assert on_chip and all(t["dram_write_bytes"] == 0 for t in on_chip)
    for t in on_chip:  # produced on chip: no DRAM at all; an input: read once, by its first reader
        assert t["dram_read_bytes"] == (0 if t["producer"] else t["bytes"]), t["tensor"]
    assert "fc1.w" in [t["tensor"] for t in on_chip]  # from fc1.fwd to fc1.update
    state = [t for t in fused["tensors"] if t["tensor"].endswith(".next")]
    assert state and all(t["placement"] == "dram" and t["dram_write_bytes"] == t["bytes"] for t in state)
    assert fused["totals"]["dram_bytes"] < 0.6 * layered["totals"]["dram_bytes"]
    assert fused["energy_breakdown_j"]["dram"] < layered["energy_breakdown_j"]["dram"]


def test_residency_never_overfills_the_buffers():
    """At every op, the working set of its mapping plus every tensor held on chip across it fits the
    on-chip capacity (an op reading a held tensor needs no tile of it)."""
    report = e2sim.estimate("resnet20-cifar10", "systolic-32x32", batch_size=8)
    names = [r.op.name for r in report.rows]
    capacity = sum(b.size_bytes for b in report.hardware.buffers.values())
    held = [(names.index(t.producer) if t.producer else names.index(t.consumers[0]), names.index(t.consumers[-1]), t)
            for t in report.placements.values() if t.placement == "on_chip"]  # fmt: skip
    assert held
    for i, row in enumerate(report.rows):
        used = sum(m.tile_bytes for m in row.cost.moves)
        for start, end, t in held:
            if start <= i <= end:
                reads = [m.tile_bytes for m in row.cost.moves if m.tensor == t.tensor]
                used += t.bytes - (max(reads) if reads else 0)
        assert used <= capacity * (1 + 1e-9), row.op.name


def test_training_batch_norm_reads_its_input_twice_unless_fused():
    ops = {fusion: {o["name"]: o for o in e2sim.estimate("resnet20-cifar10", "systolic-16x16", batch_size=4,
                                                         fusion=fusion).to_dict()["ops"]}
           for fusion in (True, False)}  # fmt: skip
    x_bytes = 4 * 16 * 32 * 32  # layer1.0.conv1's output, int8
    assert ops[False]["layer1.0.bn1.fwd"]["dram_reads_bytes"]["ifmap"] >= 2 * x_bytes
    assert ops[True]["layer1.0.bn1.fwd"]["dram_reads_bytes"]["ifmap"] <= x_bytes + 160  # and gamma, beta, running stats


def test_no_fusion_on_the_command_line(capsys):
    assert main(["estimate", "lenet5-mnist", "--hw", "zedboard", "--no-fusion", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fusion"] is False and {t["placement"] for t in report["tensors"]} == {"dram"}
    assert main(["estimate", "lenet5-mnist", "--hw", "zedboard"]) == 0
    assert "fusion and residency across the iteration" in capsys.readouterr().out


def test_supply_voltage_scales_on_chip_dynamic_energy_only():
    hw = e2sim.load_hw("systolic-16x16")
    base = e2sim.estimate("lenet5-mnist", hw).to_dict()["energy_breakdown_j"]
    low = e2sim.estimate("lenet5-mnist", dataclasses.replace(hw, supply_voltage_v=0.45)).to_dict()
    factor = (0.45 / 0.9) ** 2
    for component in ("mac", "rf", "sram", "vector", "clock"):
        assert low["energy_breakdown_j"][component] == pytest.approx(base[component] * factor, rel=1e-6)
    for component in ("dram", "static"):
        assert low["energy_breakdown_j"][component] == pytest.approx(base[component], rel=1e-6)
    assert low["hardware"]["supply_voltage_v"] == 0.45


def test_clock_tree_energy_is_per_pe_and_cycle():
    report = e2sim.estimate("lenet5-mnist", "systolic-16x16")
    d = report.to_dict()
    assert d["energy_breakdown_j"]["clock"] == pytest.approx(
        report.table["clock_pj_per_pe_cycle"] * 256 * d["totals"]["cycles"] * 1e-12, rel=1e-9
    )


def test_dma_that_does_not_overlap_compute_adds_its_time(tmp_path):
    hw = e2sim.load_hw("zedboard")
    waits = dataclasses.replace(hw, dram=dataclasses.replace(hw.dram, overlaps_compute=False))
    overlapped, serial = (e2sim.estimate("lenet5-mnist", h).to_dict() for h in (hw, waits))
    assert serial["totals"]["cycles"] > overlapped["totals"]["cycles"]
    for o in serial["ops"]:  # each op: compute, then every byte at the DRAM bandwidth
        expected = o["compute_cycles"] + o["dram_bytes"] / hw.dram_bytes_per_cycle
        assert o["cycles"] >= expected * (1 - 1e-9), o["name"]


def test_topology_batch_and_widths_are_honoured(tmp_path, capsys):
    topo = tmp_path / "t.csv"
    topo.write_text("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, "
                    "Strides,\nc1, 18, 18, 3, 3, 16, 32, 1,\n")  # fmt: skip
    assert main(["estimate", str(topo), "--hw", "systolic-16x16", "--batch", "4", "--json"]) == 0
    four = json.loads(capsys.readouterr().out)
    one = e2sim.estimate(topo, "systolic-16x16").to_dict()
    assert four["batch_size"] == 4 and four["totals"]["macs"] == 4 * one["totals"]["macs"] == 4 * 16 * 16 * 9 * 16 * 32
    assert four["forward_only"] is True
    wide = e2sim.estimate(topo, "systolic-16x16", operand_bits=16).to_dict()
    assert wide["tensors"][0]["bytes"] == 2 * one["tensors"][0]["bytes"]
    assert main(["estimate", str(topo), "--hw", "systolic-16x16"]) == 0
    assert "one forward pass at batch 1" in capsys.readouterr().out
    assert main(["estimate", "lenet5-mnist", "--hw", "zedboard", "--operand-bits", "16"]) == 2
    assert "operand_bits: applies to SCALE-Sim topology inputs only" in capsys.readouterr().err


def test_a_batch_larger_than_the_training_split_is_one_line(tmp_path, capsys):
    spec = tmp_path / "big.yaml"
    spec.write_text("name: big\ndataset: {name: mnist5k}\nmodel: {arch: lenet5}\n"
                    "training: {batch_size: 5000, epochs: 1, lr: 0.05}\n")  # fmt: skip
    assert main(["run", str(spec), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"e2sim: {spec}: training.batch_size: 5000 is more than")


def test_scalesim_config_assumptions_are_stated_and_overridable(tmp_path, capsys):
    cfg = tmp_path / "a.cfg"
    base = ("[architecture_presets]\nArrayHeight : 8\nArrayWidth : 8\nIfmapSramSzkB : 64\nFilterSramSzkB : 64\n"
            "OfmapSramSzkB : 64\nDataflow : ws\n")  # fmt: skip
    cfg.write_text(base)
    assert main(["estimate", "lenet5-mnist", "--hw", str(cfg)]) == 0
    text = capsys.readouterr().out
    assert "assumed: clock_mhz = 1000.0" in text and "assumed: technology = 45nm" in text
    cfg.write_text(base + "[e2sim]\nclock_mhz = 250\ntechnology = 65nm\nstatic_power_mw = 12\n")
    hw = e2sim.load_hw(cfg)
    assert (hw.clock_mhz, hw.technology, hw.static_power_mw) == (250.0, "65nm", 12.0)
    assert [k for k, _ in hw.assumptions] == ["dram_type"]
    report = e2sim.estimate("lenet5-mnist", hw).to_dict()
    assert report["hardware"]["assumptions"][0]["key"] == "dram_type"
    cfg.write_text(base + "[e2sim]\nclock_mhz = fast\ncolour = red\n")
    with pytest.raises(e2sim.SpecError) as exc:
        e2sim.load_hw(cfg)
    assert [str(p) for p in exc.value.problems] == [f"{cfg}: e2sim.clock_mhz: must be a positive number, got 'fast'",
                                                    f"{cfg}: e2sim.colour: unknown key (known: clock_mhz, technology, "
                                                    "dram_type, static_power_mw)"]  # fmt: skip
