"""The mapper: hand-derivable DRAM traffic, partial sums kept on chip, the legal search space, row
stationary as the Eyeriss papers map it, and the mapping shown in the reports."""

import dataclasses

import pytest

import e2sim
from e2sim.energy.account import target_of
from e2sim.energy.tables import load_table
from e2sim.schedule.nest import LoopNest
from e2sim.schedule.ops import MAPPINGS, map_nest


def hardware(ifmap_kb=64.0, filter_kb=64.0, ofmap_kb=64.0, dataflow="ws", rows=8, cols=8, overlap=True, **extra):
    doc = {
        "name": "h", "technology": "45nm", "clock_mhz": 200, "static_power_mw": 0,
        "pe_array": {"rows": rows, "cols": cols, "dataflow": dataflow, "mac_bits": [8, 16]},
        "buffers": {"ifmap": {"size_kb": ifmap_kb}, "filter": {"size_kb": filter_kb}, "ofmap": {"size_kb": ofmap_kb}},
        "dram": {"type": "lpddr4", "bandwidth_gb_per_s": 12.8, "overlaps_compute": overlap},
    }  # fmt: skip
    doc.update(extra)
    return e2sim.load_hw(doc)


def gemm_topology(tmp_path, m, n, k, name="g.csv"):
    path = tmp_path / name
    path.write_text(f"Layer, M, N, K,\ng, {m}, {n}, {k},\n")
    return path


def conv_topology(tmp_path, rows, name="c.csv"):
    path = tmp_path / name
    text = "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,\n"
    path.write_text(text + "".join(f"l{i}, {', '.join(map(str, r))},\n" for i, r in enumerate(rows)))
    return path


def only_op(report):
    (op,) = report["ops"]
    return op


@pytest.mark.parametrize("dataflow", ["ws", "os", "is", "rs"])
def test_a_layer_that_fits_moves_each_operand_through_dram_once(tmp_path, dataflow):
    """Input, weights and output of a conv each cross the DRAM interface exactly once."""
    pads = {"filter_bytes": 448, "ifmap_bytes": 24, "psum_bytes": 48}
    extra = {"buffers": {"global": {"size_kb": 512}},
             "pe_array": {"rows": 12, "cols": 14, "dataflow": "rs", "scratchpads": pads}} if dataflow == "rs" else {}
    hw = hardware(256, 256, 256, dataflow, **extra)
    topo = conv_topology(tmp_path, [(18, 18, 3, 3, 16, 32, 1)])
    op = only_op(e2sim.estimate(topo, hw, batch_size=2).to_dict())
    x, w, y = 2 * 16 * 18 * 18, 32 * 16 * 3 * 3, 2 * 32 * 16 * 16  # bytes at 8 bits
    assert op["dram_reads_bytes"]["ifmap"] == pytest.approx(x)
    assert op["dram_reads_bytes"]["filter"] == pytest.approx(w)
    assert op["dram_reads_bytes"]["ofmap"] == 0  # no partial sum comes back
    assert op["dram_writes_bytes"]["ofmap"] == pytest.approx(y)
    assert set(op["mapping"]["refetch"].values()) == {1.0}


def test_a_gemm_that_fits_once_tiled_moves_each_operand_once(tmp_path):
    """out[64×64] = A·B, 8-bit, ws on 8×8 with 1 KB ifmap and 2 KB filter buffers: neither A nor B
    (4 KB each) fits, but the 16 KB of 32-bit sums do, so the reduction is split in chunks that fit
    and the output stays put across them: every operand crosses DRAM once (12 KB)."""
    op = only_op(e2sim.estimate(gemm_topology(tmp_path, 64, 64, 64), hardware(1, 2, 64)).to_dict())
    assert op["mapping"]["buffer_tile"]["c"] < 64 and set(op["mapping"]["refetch"].values()) == {1.0}
    assert op["dram_bytes"] == 3 * 4096


def test_a_gemm_that_cannot_fit_moves_the_derived_amount(tmp_path):
    """The same GEMM on an 8×8 output-stationary array with 1 KB ifmap, 1 KB filter and 4 KB ofmap
    buffers. The outputs stay (one copy) while the reduction streams, so an output block holds at
    most 1024 32-bit sums: a 32×32 block, 2 × 2 blocks. A is read again for each of the 2 column
    blocks and B for each of the 2 row blocks (any other shape re-reads 1 + 4 times):
    2·4 + 2·4 + 4 (outputs) = 20 KB, and no partial sum leaves the chip."""
    op = only_op(e2sim.estimate(gemm_topology(tmp_path, 64, 64, 64), hardware(1, 1, 4, "os")).to_dict())
    m = op["mapping"]
    assert (m["buffer_tile"]["n"], m["buffer_tile"]["k"]) == (32, 32) and m["stationary"] == "y"
    assert m["refetch"] == {"A": 2.0, "B": 2.0, "out": 1.0}
    assert op["dram_reads_bytes"] == {"ifmap": 8192, "filter": 8192, "ofmap": 0}
    assert op["dram_bytes"] == 20 * 1024


def test_partial_sums_stay_on_chip_when_an_output_tile_fits(tmp_path):
    """A long reduction (K = 8192) whose inputs cannot fit: the reduction is split, the small output
    (16×16 sums) stays in the buffer across it."""
    hw = hardware(2, 2, 64)
    op = only_op(e2sim.estimate(gemm_topology(tmp_path, 16, 16, 8192), hw).to_dict())
    assert op["mapping"]["buffer_tile"]["c"] < 8192
    assert op["dram_reads_bytes"]["ofmap"] == 0 and op["mapping"]["refetch"]["out"] == 1.0
    assert op["dram_writes_bytes"]["ofmap"] == 16 * 16


def test_tiles_fit_their_buffers_and_folds_stay_scalesims():
    """Every mapping of a ResNet-20 iteration fits its buffers (the stationary tile once, the others
    twice), and its compute cycles are those of SCALE-Sim's walk of the whole GEMM."""
    from e2sim.schedule.systolic import systolic_cost

    hw = e2sim.load_hw("systolic-16x16")
    report = e2sim.estimate("resnet20-cifar10", hw, batch_size=32)
    for row in report.rows:
        m = row.cost.mapping
        if m is None:
            continue
        for stream, need in zip(("ifmap", "filter", "ofmap"), m.footprint_bytes, strict=True):
            assert need <= hw.buffers[stream].size_bytes, (row.op.name, stream)
        g = row.op.gemm
        assert m.compute_cycles == systolic_cost("ws", 16, 16, g.m, g.n, g.k).compute_cycles, row.op.name


def test_the_search_prefers_what_the_objective_asks(tmp_path):
    hw = hardware(4, 4, 16)
    topo = conv_topology(tmp_path, [(34, 34, 3, 3, 32, 64, 1)])
    by = {obj: only_op(e2sim.estimate(topo, hw, batch_size=4, objective=obj).to_dict())
          for obj in ("energy", "latency")}
    assert by["energy"]["energy_j"] <= by["latency"]["energy_j"] * (1 + 1e-9)
    assert by["latency"]["cycles"] <= by["energy"]["cycles"] * (1 + 1e-9)
    with pytest.raises(e2sim.SpecError, match="objective"):
        e2sim.estimate(topo, hw, objective="area")


def test_mappings_are_cached_by_nest_and_target():
    hw = e2sim.load_hw("systolic-16x16")
    target = target_of(hw, load_table(hw.technology))
    nest = LoopNest("fwd", 8, 32, 16, 16, 16, 3, 3, 1, 16, 16, 18, 18, 8, 8, 8, 32)
    MAPPINGS.clear()
    first = map_nest(nest, target)
    assert map_nest(nest, target) is first and MAPPINGS.hits == 1


@pytest.fixture(scope="module")
def eyeriss_resnet():
    return e2sim.estimate("resnet20-cifar10", "eyeriss", batch_size=4)


def test_row_stationary_respects_the_scratchpads(eyeriss_resnet):
    """Every processing pass fits the Eyeriss scratchpads: p·q·S' filter taps in 224 words, q·S'
    inputs in 12, p partial sums in 24 (at the op's widths), and uses at most the 168 PEs."""
    hw = eyeriss_resnet.hardware
    spads = hw.pe_array.scratchpad_bytes
    for row in eyeriss_resnet.rows:
        m, nest = row.cost.mapping, row.cost.nest
        if m is None:
            continue
        d = dict(m.detail)
        in_bits, f_bits = (nest.b_bits, nest.a_bits) if nest.role == "bwd_weight" else (nest.a_bits, nest.b_bits)
        assert d["p"] * d["q"] * d["taps"] <= spads[0] * 8 // f_bits, row.op.name
        assert d["q"] * d["taps"] <= spads[1] * 8 // in_bits, row.op.name
        assert d["p"] <= spads[2] * 8 // nest.acc_bits, row.op.name
        assert d["set_rows"] * d["e"] * d["r"] * d["t"] <= hw.pe_array.pes, row.op.name
        assert row.cost.compute_cycles >= nest.macs / hw.pe_array.pes


def test_row_stationary_folds_a_filter_taller_than_the_array(tmp_path):
    """R = 15 on 12 rows: the filter is folded into two sets of 8 rows, never truncated; every MAC runs."""
    eyeriss = e2sim.load_hw("eyeriss")
    topo = conv_topology(tmp_path, [(30, 30, 15, 15, 2, 4, 1)])
    op = only_op(e2sim.estimate(topo, eyeriss, operand_bits=16, accumulator_bits=16).to_dict())
    detail = op["mapping"]["detail"]
    assert detail["set_rows"] == 8 and detail["folds"] >= 2
    assert op["macs"] == 16 * 16 * 15 * 15 * 2 * 4 and op["compute_cycles"] >= op["macs"] / 168


def test_smaller_scratchpads_mean_more_buffer_traffic(eyeriss_resnet):
    hw = eyeriss_resnet.hardware
    smaller = dataclasses.replace(hw.pe_array, scratchpad_bytes=(56, 6, 12))
    small = e2sim.estimate("resnet20-cifar10", dataclasses.replace(hw, pe_array=smaller), batch_size=4)
    reads = [sum(sum(o["sram_reads"].values()) for o in r.to_dict()["ops"]) for r in (eyeriss_resnet, small)]
    assert reads[1] > reads[0]


def test_alexnet_conv_on_eyeriss_moves_at_most_twice_the_compulsory_traffic():
    """AlexNet conv1–5 (the Eyeriss papers' shapes), batch 4, 16-bit values and sums as Eyeriss
    stores them, no compression: DRAM bytes ≤ 2 × (every layer's input, weights and output once)."""
    report = e2sim.estimate("alexnet-conv", "eyeriss", batch_size=4, operand_bits=16, accumulator_bits=16)
    compulsory = sum(t.bytes for t in report.tensors.values())
    moved = report.to_dict()["totals"]["dram_bytes"]
    assert moved <= 2 * compulsory, moved / compulsory


def test_reports_show_each_mapping(tmp_path, capsys):
    from e2sim.cli.main import main

    assert main(["estimate", "lenet5-mnist", "--hw", "zedboard", "--json"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    mapped = [o for o in report["ops"] if "mapping" in o]
    assert len(mapped) == sum(o["kind"] in ("conv", "gemm") for o in report["ops"]) > 0
    assert {"spatial", "buffer_tile", "dram_loops", "stationary", "refetch", "utilisation", "dram_read_bytes",
            "buffer_read_bits", "footprint_bytes"} <= set(mapped[0]["mapping"])  # fmt: skip
    assert main(["estimate", "lenet5-mnist", "--hw", "eyeriss"]) == 0
    text = capsys.readouterr().out
    assert "buffer tile (n k c p q r s)" in text and "conv2.bwd_weight" in text
