"""The accelerator model: agreement with SCALE-Sim v3, timeline, row stationary, energy consistency."""

import dataclasses
import json
import os
import subprocess

import numpy as np
import pytest
from conftest import ROOT

import e2sim
from e2sim import SpecError
from e2sim.energy.account import target_of
from e2sim.energy.tables import load_table
from e2sim.schedule.mapper import timeline
from e2sim.schedule.systolic import systolic_cost

GOLDEN = json.loads((ROOT / "tests" / "data" / "scalesim_golden.json").read_text())["cases"]
CFG = """[general]
run_name = t
[architecture_presets]
ArrayHeight : {rows}
ArrayWidth : {cols}
IfmapSramSzkB : 256
FilterSramSzkB : 256
OfmapSramSzkB : 256
IfmapOffset : 0
FilterOffset : 10000000
OfmapOffset : 20000000
Bandwidth : 10
Dataflow : {df}
ReadRequestBuffer : 32
WriteRequestBuffer : 32
"""


def write_case_files(tmp_path, rows, cols, df, cases, gemm):
    cfg = tmp_path / f"a{rows}x{cols}{df}.cfg"
    cfg.write_text(CFG.format(rows=rows, cols=cols, df=df))
    topo = tmp_path / f"t{rows}x{cols}{df}{int(gemm)}.csv"
    if gemm:
        lines = ["Layer, M, N, K,"] + [f"g{i}, {m}, {n}, {k}," for i, (m, n, k) in enumerate(c["gemm"] for c in cases)]
    else:
        lines = ["Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,"]
        lines += [f"l{i}, " + ", ".join(map(str, c["conv"])) + "," for i, c in enumerate(cases)]
    topo.write_text("\n".join(lines) + "\n")
    return topo, cfg


def compare(report_ops, cases):
    for op, case in zip(report_ops, cases, strict=True):
        assert op["compute_cycles"] == pytest.approx(case["total_cycles"], rel=0.01), (case, op["compute_cycles"])
        assert op["sram_reads"]["ifmap"] == pytest.approx(case["sram_ifmap_reads"], rel=0.02), case
        assert op["sram_reads"]["filter"] == pytest.approx(case["sram_filter_reads"], rel=0.02), case
        assert op["sram_writes"]["ofmap"] == pytest.approx(case["sram_ofmap_writes"], rel=0.02), case


def test_agrees_with_scalesim_golden_data(tmp_path):
    """Every recorded SCALE-Sim v3 case (conv and GEMM, ws/os/is, six array shapes), run end to end
    through e2sim's SCALE-Sim topology and config readers."""
    groups = {}
    for case in GOLDEN:
        key = (case["rows"], case["cols"], case["dataflow"], "gemm" in case)
        groups.setdefault(key, []).append(case)
    assert len(GOLDEN) >= 300 and len(groups) == 36
    for (rows, cols, df, gemm), cases in groups.items():
        topo, cfg = write_case_files(tmp_path, rows, cols, df, cases, gemm)
        compare(e2sim.estimate(topo, cfg).to_dict()["ops"], cases)


@pytest.mark.parametrize("dataflow", ["ws", "os", "is"])
def test_backward_ops_agree_with_scalesim_gemm_mode(dataflow):
    """ResNet-20's backward ops at batch 2 on systolic arrays = SCALE-Sim's GEMM mode on their GEMMs."""
    graph = e2sim.lower("resnet20-cifar10", batch_size=2)
    golden = {(c["rows"], c["cols"], c["dataflow"], *c["gemm"]): c for c in GOLDEN if "gemm" in c}
    checked = 0
    for op in graph.ops:
        if op.kind != "conv" or op.phase == "fwd":
            continue
        for rows, cols in ((8, 8), (16, 16), (32, 32), (12, 14)):
            case = golden.get((rows, cols, dataflow, op.gemm.m, op.gemm.n, op.gemm.k))
            if case is None:
                continue
            cost = systolic_cost(dataflow, rows, cols, op.gemm.m, op.gemm.n, op.gemm.k)
            assert cost.compute_cycles == pytest.approx(case["total_cycles"], rel=0.01)
            assert (cost.ifmap_reads, cost.filter_reads, cost.ofmap_writes) == (
                case["sram_ifmap_reads"], case["sram_filter_reads"], case["sram_ofmap_writes"])  # fmt: skip
            checked += 1
    assert checked >= 4 * 4 * 6  # both backward ops of the three stage shapes, on four arrays


@pytest.mark.skipif(not os.environ.get("E2SIM_SCALESIM_PYTHON"), reason="set E2SIM_SCALESIM_PYTHON to a Python "
                    "with scalesim installed (.ci/run does when it can install it)")  # fmt: skip
def test_agrees_with_scalesim_run_live(tmp_path):
    """Runs SCALE-Sim itself on a handful of fresh layers and compares."""
    rng = np.random.default_rng(7)
    layers = [(int(h), int(h), r, r, int(c), int(k), s) for h, r, c, k, s in
              zip(rng.integers(6, 20, 4), (1, 3, 3, 5), rng.integers(1, 20, 4), rng.integers(1, 40, 4), (1, 2, 1, 2),
                  strict=True)]  # fmt: skip
    script = (
        f"import json, sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); from scalesim_oracle import run; "
        f"print(json.dumps([run(r, c, df, {layers!r}) for r, c, df in ((8, 8, 'ws'), (16, 8, 'os'), (8, 16, 'is'))]))"
    )
    out = subprocess.run([os.environ["E2SIM_SCALESIM_PYTHON"], "-c", script], capture_output=True, text=True,
                         check=True, timeout=600).stdout  # fmt: skip
    for (rows, cols, df), report in zip(((8, 8, "ws"), (16, 8, "os"), (8, 16, "is")), json.loads(out), strict=True):
        cases = [
            {"conv": list(layer), "total_cycles": int(c[2]), "sram_ifmap_reads": int(float(d[3])),
             "sram_filter_reads": int(float(d[6])), "sram_ofmap_writes": int(float(d[9]))}
            for layer, c, d in zip(layers, report["COMPUTE_REPORT"][1:], report["DETAILED_ACCESS_REPORT"][1:],
                                   strict=True)
        ]  # fmt: skip
        topo, cfg = write_case_files(tmp_path, rows, cols, df, cases, gemm=False)
        compare(e2sim.estimate(topo, cfg).to_dict()["ops"], cases)


def test_timeline_overlaps_dma_with_compute():
    hw = e2sim.load_hw("systolic-16x16")
    target = dataclasses.replace(target_of(hw, load_table(hw.technology)), dram_bytes_per_cycle=1.0)
    assert timeline(100.0, 64.0, 64.0, 1, target) == 228  # one tile: load, compute, store
    assert timeline(1000.0, 100.0, 100.0, 10, target) == pytest.approx(1020)  # compute-bound: first load, last store
    total = timeline(100.0, 1000.0, 1000.0, 10, target)  # bandwidth-bound: DMA time plus edges
    assert total == pytest.approx(100 + 100 + 8 * 200 + 100 + 100)
    serial = dataclasses.replace(target, double_buffered=False)  # DMA waits: everything adds up
    assert timeline(1000.0, 100.0, 100.0, 10, serial) == 1200
    vector = timeline(np.array([100.0, 1000.0]), np.array([64.0, 100.0]), np.array([64.0, 100.0]), np.array([1, 10]),
                      target)  # fmt: skip
    assert vector.tolist() == pytest.approx([228, 1020])


@pytest.fixture(scope="module")
def resnet_report():
    return e2sim.estimate("resnet20-cifar10", "systolic-16x16", batch_size=8).to_dict()


def test_totals_are_the_sum_of_ops(resnet_report):
    ops, totals = resnet_report["ops"], resnet_report["totals"]
    assert sum(o["energy_j"] for o in ops) == pytest.approx(totals["energy_j"])
    assert sum(o["cycles"] for o in ops) == pytest.approx(totals["cycles"])
    assert sum(resnet_report["energy_breakdown_j"].values()) == pytest.approx(totals["energy_j"])
    assert sum(p["energy_j"] for p in resnet_report["phases"].values()) == pytest.approx(totals["energy_j"])
    assert sum(layer["energy_j"] for layer in resnet_report["layers"]) == pytest.approx(totals["energy_j"])
    assert totals["macs"] == e2sim.lower("resnet20-cifar10", 8).macs()
    assert totals["time_s"] == pytest.approx(totals["cycles"] / 200e6)
    for o in ops:
        assert o["cycles"] == pytest.approx(o["compute_cycles"] + o["stall_cycles"]) and o["stall_cycles"] >= 0


@pytest.mark.parametrize(
    ("entry", "component"),
    [("int_mult_8b_pj", "mac"), ("rf_access_16b_pj", "rf"), ("sram_access_64b_8kb_pj", "sram"),
     ("dram_lpddr4_pj_per_bit", "dram"), ("fp32_add_pj", "vector")],
)  # fmt: skip
def test_doubling_an_action_energy_changes_only_its_component(resnet_report, entry, component):
    hw = e2sim.load_hw("systolic-16x16")
    base = e2sim.estimate("resnet20-cifar10", hw, batch_size=8)
    value = base.table[entry]
    doubled_hw = dataclasses.replace(hw, energy_overrides={entry: 2 * value})
    doubled = e2sim.estimate("resnet20-cifar10", doubled_hw, batch_size=8).to_dict()["energy_breakdown_j"]
    for name, joules in base.to_dict()["energy_breakdown_j"].items():
        if name == component:
            assert joules < doubled[name] <= 2 * joules * (1 + 1e-9)
        else:
            assert doubled[name] == pytest.approx(joules)
    assert doubled_hw.energy_overrides and "hardware spec override" in json.dumps(
        e2sim.estimate("lenet5-mnist", doubled_hw).to_dict()["energy_table"]
    )


def conv_workload(out_channels, precision="int8"):
    formats = {"weights": precision, "activations": precision, "errors": precision, "gradients": "int16",
               "accumulator": "int32"}  # fmt: skip
    return {
        "name": "c", "dataset": {"name": "cifar10"}, "training": {"batch_size": 4, "epochs": 1, "lr": 0.1},
        "model": {"layers": [{"type": "conv", "out_channels": out_channels, "kernel": 3, "padding": 1},
                             {"type": "global_avgpool"}, {"type": "linear", "out_features": 10}]},
        "precision": formats,
    }  # fmt: skip


def layer_energy(report, layer, component):
    return sum(o["energy_breakdown_j"][component] for o in report["ops"] if o["layer"] == layer)


def test_twice_the_output_channels_costs_twice_the_mac_energy():
    one = e2sim.estimate(conv_workload(32), "systolic-16x16").to_dict()
    two = e2sim.estimate(conv_workload(64), "systolic-16x16").to_dict()
    assert layer_energy(two, "conv1", "mac") == pytest.approx(2 * layer_energy(one, "conv1", "mac"))


def array_with_mac_bits(bits):
    hw = e2sim.load_hw("systolic-16x16")
    return dataclasses.replace(hw, pe_array=dataclasses.replace(hw.pe_array, mac_bits=tuple(bits)))


def test_narrower_macs_cost_less():
    hw = array_with_mac_bits([4, 8, 16])
    macs = [layer_energy(e2sim.estimate(conv_workload(32, p), hw).to_dict(), "conv1", "mac")
            for p in ("int4", "int8", "int16")]  # fmt: skip
    assert macs[0] < macs[1] < macs[2]


def test_mac_units_bound_the_operand_widths():
    """int4 on an 8-bit-only array costs what int8 costs; int16 on it takes four passes."""
    only8 = array_with_mac_bits([8])
    reports = {p: e2sim.estimate(conv_workload(32, p), only8).to_dict() for p in ("int4", "int8", "int16")}
    assert layer_energy(reports["int4"], "conv1", "mac") == pytest.approx(layer_energy(reports["int8"], "conv1", "mac"))
    cycles = {p: next(o["compute_cycles"] for o in r["ops"] if o["name"] == "conv1.fwd") for p, r in reports.items()}
    assert cycles["int16"] == 4 * cycles["int8"] == 4 * cycles["int4"]
    assert layer_energy(reports["int16"], "conv1", "mac") == pytest.approx(
        4 * layer_energy(reports["int8"], "conv1", "mac") * 0 + 4 * layer_energy(reports["int8"], "conv1", "mac")
    )


def test_row_stationary_on_eyeriss():
    report = e2sim.estimate("resnet20-cifar10", "eyeriss", batch_size=4)
    hw = report.hardware
    for row in report.rows:
        if row.op.kind == "conv":
            assert row.cost.compute_cycles >= row.op.macs / hw.pe_array.pes
    smaller = dataclasses.replace(hw.pe_array, rf_bytes=64, scratchpad_bytes=(55, 3, 6))
    small_rf = dataclasses.replace(hw, pe_array=smaller)
    glb = {name: sum(sum(o["sram_reads"].values()) for o in e2sim.estimate("resnet20-cifar10", h, batch_size=4)
                     .to_dict()["ops"]) for name, h in (("big", hw), ("small", small_rf))}  # fmt: skip
    assert glb["small"] > glb["big"]  # less scratchpad, less reuse, more global-buffer traffic


def test_counts_from_training_price_what_ran():
    from e2sim.counting import OpCounter

    graph = e2sim.lower("lenet5-mnist")
    counter = OpCounter()
    for op in graph.ops:  # three iterations' worth of nominal work, the conv2 weight gradient half skipped
        macs = op.macs * 3 // (2 if op.name == "conv2.bwd_weight" else 1)
        counter.record(op.name, macs={"8x8": macs} if op.macs else None, elementwise_ops=op.elementwise_ops * 3)
        counter.ops[op.name].calls = 3
    nominal = e2sim.estimate("lenet5-mnist", "zedboard").to_dict()
    counted = e2sim.estimate("lenet5-mnist", "zedboard", counts=counter).to_dict()
    skipped = 1.5 * next(o.macs for o in graph.ops if o.name == "conv2.bwd_weight")
    assert counted["counted"] and counted["totals"]["macs"] == pytest.approx(3 * nominal["totals"]["macs"] - skipped)
    ratio = {o["name"]: o["energy_j"] for o in counted["ops"]}
    for o in nominal["ops"]:
        expected = 1.5 if o["name"] == "conv2.bwd_weight" else 3
        assert ratio[o["name"]] == pytest.approx(expected * o["energy_j"], rel=1e-6), o["name"]


def test_forward_only_prices_inference():
    """Layer by layer, inference costs what the training forward pass costs; with residency less,
    as no activation has to be saved for a backward pass."""
    for fusion in (False, True):
        full = e2sim.estimate("lenet5-mnist", "systolic-16x16", fusion=fusion).to_dict()
        fwd = e2sim.estimate("lenet5-mnist", "systolic-16x16", forward_only=True, fusion=fusion).to_dict()
        assert {o["phase"] for o in fwd["ops"]} == {"fwd"}
        if fusion:
            assert fwd["totals"]["energy_j"] < full["phases"]["fwd"]["energy_j"]
        else:
            assert fwd["totals"]["energy_j"] == pytest.approx(full["phases"]["fwd"]["energy_j"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[general]\nrun_name = x\n", "architecture_presets: missing section"),
        ("[architecture_presets]\nArrayHeight : 0\nArrayWidth : 8\nIfmapSramSzkB : 8\nFilterSramSzkB : 8\n"
         "OfmapSramSzkB : 8\nDataflow : ws\n", "architecture_presets.ArrayHeight: must be a positive integer, got '0'"),
        ("[architecture_presets]\nArrayHeight : 8\nArrayWidth : 8\nIfmapSramSzkB : 8\nFilterSramSzkB : 8\n"
         "OfmapSramSzkB : 8\nDataflow : diagonal\n", "architecture_presets.Dataflow: must be one of ws, os, is"),
        ("[architecture_presets]\nArrayHeight : 8\nArrayWidth : 8\nIfmapSramSzkB : 8\nFilterSramSzkB : 8\n"
         "Dataflow : ws\nArrayDepth : 3\n", "architecture_presets.OfmapSramSzkB: missing required key"),
        ("not a config at all", "not a SCALE-Sim config"),
    ],
)  # fmt: skip
def test_bad_scalesim_configs(tmp_path, text, message):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(text)
    with pytest.raises(SpecError, match=message) as exc:
        e2sim.load_hw(cfg)
    assert all(str(p).startswith(f"{cfg}: ") for p in exc.value.problems)


def test_bad_topologies(tmp_path):
    topo = tmp_path / "t.csv"
    topo.write_text("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, "
                    "Strides,\nc1, 8, 8, 3, 3, 0, 4, 1,\nc2, 2, 2, 3, 3, 1, 1, 1,\n")  # fmt: skip
    with pytest.raises(SpecError) as exc:
        e2sim.estimate(topo, "systolic-16x16")
    lines = [str(p) for p in exc.value.problems]
    assert lines == [f"{topo}: line 2 (c1).Channels: must be a positive integer, got '0'",
                     f"{topo}: line 3 (c2): the filter is larger than the input"]  # fmt: skip


def test_buffers_too_small_for_a_tile():
    doc = {"name": "h", "technology": "45nm", "clock_mhz": 100, "static_power_mw": 1,
           "pe_array": {"rows": 64, "cols": 64, "dataflow": "ws"}, "dram": {"type": "ddr3", "bandwidth_gb_per_s": 1},
           "buffers": {"ifmap": {"size_kb": 1}, "filter": {"size_kb": 4}, "ofmap": {"size_kb": 1}}}  # fmt: skip
    with pytest.raises(SpecError, match=r"buffers\.filter\.size_kb: too small for the smallest double-buffered tile "
                       r"of a 64x64 array \(8192 bytes\), got 4 KB"):  # fmt: skip
        e2sim.load_hw(doc)


def test_cli_estimate(capsys):
    from e2sim.cli.main import main

    assert main(["estimate", "lenet5-mnist", "--hw", "zedboard", "--json", "--batch", "8"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["totals"]) >= {"energy_j", "cycles", "time_s", "macs"}
    assert set(report["energy_breakdown_j"]) >= {"mac", "rf", "sram", "dram", "static"}
    row = report["ops"][0]
    assert set(row) >= {"layer", "phase", "macs", "compute_cycles", "stall_cycles", "cycles", "energy_j",
                        "sram_reads", "sram_writes", "dram_reads_bytes", "dram_writes_bytes"}  # fmt: skip
    assert report["energy_table"]["table"] == "fpga"
    assert main(["estimate", "resnet20-cifar10", "--hw", "eyeriss", "--forward-only"]) == 0
    out = capsys.readouterr().out
    assert "one forward pass at batch 128" in out and "layer1.0.conv1" in out
    assert main(["estimate", "lenet5-mnist", "--hw", "nowhere"]) == 2
    assert "no embedded hardware spec of that name" in capsys.readouterr().err


def test_prices_a_resnet110_iteration():
    """All 1,275 ops of a ResNet-110 training iteration (benchmarks/schedule_speed.py times it)."""
    report = e2sim.estimate("resnet110-cifar10", "systolic-32x32")
    assert len(report.rows) == 1275 and report.energy_j > 0 and report.cycles > 0
