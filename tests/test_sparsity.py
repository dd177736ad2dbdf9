"""Sparsity measured in a run and priced: zero statistics, exact zero-operand MAC counts, zero
gating, compression formats, stated densities, and what the reports say."""

import dataclasses
import itertools

import numpy as np
import pytest
import twins
from hypothesis import given
from hypothesis import strategies as st

import e2sim
import e2sim.functional as F
from e2sim.counting import OpCounter
from e2sim.kernels.sparsity import map_zeros_part, zero_runs
from e2sim.numerics.zeros import RLE_MAX_RUN, joined_runs, map_zeros, tap_nonzeros, window_products
from e2sim.schedule.compression import compressed_bytes, stored_bytes


@given(st.lists(st.sampled_from([0, 0, 0, 1, -3]), max_size=300), st.integers(1, 40))
def test_zero_runs_match_twin(values, max_run):
    array = np.array(values, dtype=np.float32)
    assert tuple(int(v) for v in zero_runs(array, max_run)) == twins.zero_runs(array, max_run)


@pytest.mark.parametrize(("stride", "pad", "dil", "groups"), [(1, 1, 1, 1), (2, 0, 1, 1), (2, 1, 2, 3), (1, 2, 3, 6),
                                                               (3, 1, 1, 2)])  # fmt: skip
def test_window_nonzero_counts_equal_counts_over_the_columns(stride, pad, dil, groups):
    """The non-zeros per row of im2col(x), and the products of non-zero errors and non-zero taps
    per group, from per-group non-zero sums alone."""
    rng = np.random.default_rng(stride + 7 * dil + groups)
    x = sparse(rng, (3, 6, 9, 8), 0.5)
    r, s = 3, 2
    p, q = (twins.out_size(size, pad, k, stride, dil) for size, k in ((9, r), (8, s)))
    cols = twins.im2col(x, r, s, stride, pad, pad, p, q, dil) != 0
    stats = map_zeros(x, groups)
    assert (stats.zeros, stats.pairs) == twins.zero_runs(x, 31)
    rows = tap_nonzeros(stats.over_samples, r, s, stride, pad, pad, p, q, dil)
    np.testing.assert_array_equal(rows, cols.sum(axis=1))
    errors = sparse(rng, (3, 6, p, q), 0.4)
    by_group = map_zeros(errors, groups).over_channels.transpose(1, 0, 2, 3).reshape(groups, -1)  # (G, N·P·Q)
    per_column = cols.reshape(groups, -1, cols.shape[1]).sum(axis=1)  # non-zero taps per group's column
    assert window_products(map_zeros(errors, groups).over_channels, stats.over_channels, r, s, stride, pad, pad,
                           dil) == int((by_group.astype(np.int64) * per_column).sum())  # fmt: skip


@given(st.lists(st.sampled_from([0, 0, 0, 1, -3]), min_size=24, max_size=24), st.sampled_from([1, 3, 7]),
       st.integers(0, 4))  # fmt: skip
def test_map_zeros_in_pieces_match_twins(values, max_run, cut):
    """One pass over a feature map cut between any two samples: zeros, run-length pairs (runs
    across the cut joined) and the non-zero sums over samples and over each group's channels
    (runs of max_run + 1 zeros, a power of two, as the kernel requires)."""
    x = np.array(values, dtype=np.float32).reshape(4, 6, 1)
    pieces, sums, over_channels = [], [], np.zeros((4, 3, 1), np.int64)
    for lo, hi in ((0, cut), (cut, 4)):
        sums.append(np.zeros((6, 1), np.int64))
        pieces.append(map_zeros_part(x, 3, max_run, sums[-1], over_channels, lo, hi))
    assert joined_runs(pieces, max_run) == twins.zero_runs(x, max_run)
    np.testing.assert_array_equal(sums[0] + sums[1], (x != 0).sum(axis=0))
    np.testing.assert_array_equal(over_channels, (x != 0).reshape(4, 3, 2, 1).sum(axis=2))


def test_map_zeros_counts_long_runs_of_the_coder():
    """Runs far longer than RLE_MAX_RUN (whole zero rows and samples), cut into pieces anywhere."""
    rng = np.random.default_rng(5)
    x = np.where(rng.random((6, 5, 40)) < 0.97, 0, 1).astype(np.float32)
    x[2] = 0
    x[4, 1:3] = 0
    expected = twins.zero_runs(x, RLE_MAX_RUN)
    for cuts in ((0, 6), (0, 2, 3, 6), (0, 1, 2, 3, 4, 5, 6)):
        sums, over_channels = np.zeros((5, 40), np.int64), np.zeros((0, 1, 1), np.int64)
        pieces = [map_zeros_part(x, 1, RLE_MAX_RUN, sums, over_channels, lo, hi) for lo, hi in itertools.pairwise(cuts)]
        assert joined_runs(pieces, RLE_MAX_RUN) == expected
        np.testing.assert_array_equal(sums, (x != 0).sum(axis=0))


@given(st.integers(0, 2**32 - 1), st.sampled_from([1, 3, 7, 15, 31, 63]), st.integers(1, 70),
       st.sampled_from([0.0, 0.3, 0.7, 0.9, 0.98, 1.0]), st.booleans())  # fmt: skip
def test_map_zeros_counts_runs_across_blocks_and_maps_like_the_twin(seed, max_run, hw, zero, clustered):
    """Maps of any width (whole blocks or not), zeros scattered or in long stretches that cross
    blocks and maps, each sample a piece of its own: the same statistics as the twin."""
    rng = np.random.default_rng(seed)
    x = np.where(rng.random((3, 4, hw)) < zero, 0, 1).astype(np.float32)
    if clustered:  # a few long zero stretches anywhere in the flat order
        flat = x.reshape(-1)
        for start in rng.integers(0, flat.size, 3):
            flat[start : start + int(rng.integers(1, 4 * (max_run + 1)))] = 0
    sums, over_channels = np.zeros((4, hw), np.int64), np.zeros((3, 2, hw), np.int64)
    pieces = [map_zeros_part(x, 2, max_run, sums, over_channels, n, n + 1) for n in range(3)]
    assert joined_runs(pieces, max_run) == twins.zero_runs(x, max_run)
    whole = map_zeros_part(x, 2, max_run, np.zeros((4, hw), np.int64), np.zeros((0, 1, 1), np.int64), 0, 3)
    assert joined_runs([whole], max_run) == twins.zero_runs(x, max_run)
    np.testing.assert_array_equal(sums, (x != 0).sum(axis=0))
    np.testing.assert_array_equal(over_channels, (x != 0).reshape(3, 2, 2, hw).sum(axis=2))


def sparse(rng, shape, zero):
    a = rng.standard_normal(shape).astype(np.float32)
    a[rng.random(shape) < zero] = 0
    return a


@pytest.mark.parametrize(("stride", "pad"), [(1, 1), (2, 0), (2, 1)])
def test_conv_zero_operand_macs_are_exact(stride, pad):
    rng = np.random.default_rng(stride + pad)
    x, w = sparse(rng, (2, 3, 7, 7), 0.5), sparse(rng, (4, 3, 3, 3), 0.3)
    counter = OpCounter()
    F.conv2d(x, w, stride=stride, padding=pad, counter=counter, op="c")
    count = counter.ops["c"]
    assert count.zero_macs == twins.zero_operand_macs_conv(x, w, stride, pad)
    assert count.zeros == {"x": int(np.sum(x == 0)), "w": int(np.sum(w == 0))}
    assert count.rle_pairs["x"] == twins.zero_runs(x, 31)[1]


def test_backward_and_linear_zero_operand_macs_are_exact():
    rng = np.random.default_rng(3)
    x, w, dy = sparse(rng, (2, 3, 6, 6), 0.5), sparse(rng, (4, 3, 3, 3), 0.2), sparse(rng, (2, 4, 6, 6), 0.6)
    counter = OpCounter()
    F.conv2d_grad_input(dy, w, x.shape, padding=1, counter=counter, op="gi")
    F.conv2d_grad_weight(x, dy, w.shape, padding=1, counter=counter, op="gw")
    # the same MACs as the forward nest, over (n, k, p, q, c, r, s), one by one
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    grad_input = grad_weight = 0
    for n, k, p, q, c, r, s in np.ndindex(2, 4, 6, 6, 3, 3, 3):
        grad_input += dy[n, k, p, q] == 0 or w[k, c, r, s] == 0
        grad_weight += dy[n, k, p, q] == 0 or xp[n, c, p + r, q + s] == 0
    assert counter.ops["gi"].zero_macs == grad_input and counter.ops["gw"].zero_macs == grad_weight
    a, b, e = sparse(rng, (5, 7), 0.5), sparse(rng, (3, 7), 0.4), sparse(rng, (5, 3), 0.5)
    F.linear(a, b, counter=counter, op="l")
    F.linear_grad_input(e, b, counter=counter, op="li")
    F.linear_grad_weight(a, e, counter=counter, op="lw")
    brute = {
        "l": sum(a[i, j] == 0 or b[o, j] == 0 for i, o, j in np.ndindex(5, 3, 7)),
        "li": sum(e[i, o] == 0 or b[o, j] == 0 for i, o, j in np.ndindex(5, 3, 7)),
        "lw": sum(a[i, j] == 0 or e[i, o] == 0 for i, o, j in np.ndindex(5, 3, 7)),
    }
    assert {name: counter.ops[name].zero_macs for name in brute} == brute


def test_compression_formats_on_a_synthetic_tensor():
    """40 zeros, 5, 3 zeros, 7 (45 values, 8-bit). Run-length: (31, 0) spends 32 zeros, then (8, 5),
    (3, 7): 3 pairs, 4 to a 64-bit word at 8 bits: 8 bytes. Bitmask: ⌈45/8⌉ = 6 + 2 values = 8 bytes.
    At 16 bits: 3 pairs to a word: 8 bytes, bitmask 6 + 4 = 10 bytes; raw 90."""
    t = np.array([0] * 40 + [5] + [0] * 3 + [7], dtype=np.float32)
    assert compressed_bytes(t, 8, "rle") == 8 and compressed_bytes(t, 8, "bitmask") == 8
    assert compressed_bytes(t, 16, "rle") == 8 and compressed_bytes(t, 16, "bitmask") == 10
    assert compressed_bytes(t, 8, "none") == 45
    dense = np.arange(1, 101, dtype=np.float32)
    assert compressed_bytes(dense, 8, "rle") == 100  # never more than raw: stored raw


def nominal_counts(graph, zeros_of=None):
    """One nominal iteration's counts; ``zeros_of``: op -> (operand, zeros, rle pairs, zero MACs)."""
    counter = OpCounter()
    for op in graph.ops:
        counter.record(op.name, macs={"8x8": op.macs} if op.macs else None, elementwise_ops=op.elementwise_ops)
        counter.ran(op.name)
    ops = {op.name: op for op in graph.ops}
    for name, (operand, zeros, pairs, zero_macs) in (zeros_of or {}).items():
        numel = graph.tensors[ops[name].reads[0]].numel  # the op's first operand (x, or dy in bwd_data)
        counter.record(name, reads={operand: numel}, zeros={operand: zeros}, rle_pairs={operand: pairs},
                       zero_macs=zero_macs)  # fmt: skip
        counter.ops[name].calls -= 1
    return counter


@pytest.mark.parametrize("fmt", ["bitmask", "rle"])
def test_compression_moves_the_bytes_its_format_defines(fmt):
    """pool1.y (LeNet-5's conv2 input, 64·6·14·14 int8) with counted zeros and run-length pairs:
    every DRAM move of it is its stored size in the format."""
    graph = e2sim.lower("lenet5-mnist")
    numel = graph.tensors["pool1.y"].numel
    zeros, pairs = 3 * numel // 4, numel // 4 + 500
    counter = nominal_counts(graph, {"conv2.fwd": ("x", zeros, pairs, 0)})
    hw = e2sim.load_hw("zedboard")
    packed = dataclasses.replace(hw, sparsity=e2sim.hw.Sparsity(compression=fmt))
    raw, squeezed = ({t["tensor"]: t for t in e2sim.estimate("lenet5-mnist", h, counts=counter, fusion=False)
                      .to_dict()["tensors"]} for h in (hw, packed))  # fmt: skip
    stored = stored_bytes(numel, 8, fmt, numel - zeros, pairs)
    assert stored < numel
    assert squeezed["pool1.y"]["dram_write_bytes"] == pytest.approx(stored)
    assert squeezed["pool1.y"]["dram_read_bytes"] == pytest.approx(raw["pool1.y"]["dram_read_bytes"] * stored / numel)
    assert squeezed["pool1.y"]["stored_fraction"] == pytest.approx(stored / numel)
    assert squeezed["conv1.w"]["dram_read_bytes"] == raw["conv1.w"]["dram_read_bytes"]  # weights stay raw


def test_zero_gating_saves_the_counted_zero_macs_times_their_energy():
    """Each gated MAC spends no 8×8 multiply and no read of its two 8-bit operand registers."""
    graph = e2sim.lower("lenet5-mnist")
    zero_macs = 1_000_000
    counter = nominal_counts(graph, {"conv2.fwd": ("x", 0, 0, zero_macs)})
    hw = e2sim.load_hw("zedboard")
    gated = dataclasses.replace(hw, sparsity=e2sim.hw.Sparsity(zero_gating=True))
    ops = [{o["name"]: o for o in e2sim.estimate("lenet5-mnist", h, counts=counter).to_dict()["ops"]}
           for h in (hw, gated)]
    table = e2sim.estimate("lenet5-mnist", hw).table
    saved = sum(ops[0]["conv2.fwd"]["energy_breakdown_j"][c] - ops[1]["conv2.fwd"]["energy_breakdown_j"][c]
                for c in ("mac", "rf"))  # fmt: skip
    assert saved == pytest.approx(zero_macs * (table.mult_pj(8, 8, False) + table.rf_pj(16)) * 1e-12, rel=1e-9)
    assert ops[1]["conv2.fwd"]["cycles"] == ops[0]["conv2.fwd"]["cycles"]  # gating saves energy, not time
    skipping = dataclasses.replace(hw, sparsity=e2sim.hw.Sparsity(zero_gating=True, skip_zero_cycles=True))
    fast = {o["name"]: o for o in e2sim.estimate("lenet5-mnist", skipping, counts=counter).to_dict()["ops"]}
    assert fast["conv2.fwd"]["compute_cycles"] == pytest.approx(
        ops[0]["conv2.fwd"]["compute_cycles"] * (1 - zero_macs / ops[0]["conv2.fwd"]["macs"]))
    for name in ops[0]:
        if name != "conv2.fwd":
            assert ops[1][name]["energy_j"] == pytest.approx(ops[0][name]["energy_j"])


def test_stated_densities_price_an_estimate():
    hw = dataclasses.replace(e2sim.load_hw("systolic-16x16"),
                             sparsity=e2sim.hw.Sparsity(zero_gating=True, compression="bitmask"))  # fmt: skip
    report = e2sim.estimate("lenet5-mnist", hw, densities={"activations": 0.5, "errors": 0.25}).to_dict()
    ops = {o["name"]: o for o in report["ops"]}
    assert ops["conv2.fwd"]["zero_macs"] == pytest.approx(ops["conv2.fwd"]["macs"] * (1 - 0.5))
    assert ops["conv2.bwd_weight"]["zero_macs"] == pytest.approx(ops["conv2.bwd_weight"]["macs"] * (1 - 0.5 * 0.25))
    row = next(t for t in report["tensors"] if t["tensor"] == "pool1.y")
    numel = row["bytes"]
    assert row["density"] == 0.5 and row["density_measured"] is False
    assert row["stored_fraction"] == pytest.approx((-(-numel // 8) + numel // 2) / numel)
    with pytest.raises(e2sim.SpecError, match="must be a fraction"):
        e2sim.estimate("lenet5-mnist", hw, densities={"activations": 1.5})


def test_measured_zero_fractions_in_run_reports():
    run = e2sim.run("lenet5-mnist", epochs=1)
    result, report = run.training, run.to_dict()  # the report derives from the typed result
    rows = {r["op"]: r for r in report["sparsity"]}
    assert {"conv2.fwd", "conv2.bwd_weight", "fc1.bwd_data"} <= set(rows)
    for name, row in rows.items():
        count = result.counts.ops[name]
        assert row["zero_fractions"] == pytest.approx(count.zero_fractions())
        assert 0 <= row["zero_mac_fraction"] <= 1 and all(0 <= v <= 1 for v in row["zero_fractions"].values())
    assert rows["fc1.fwd"]["zero_fractions"]["x"] > 0.2  # behind ReLU and max pooling
    from e2sim.report.run import format_run

    assert "zeros in conv/linear inputs (forward): conv1" in format_run(report)


@pytest.mark.parametrize(
    ("block", "message"),
    [("{skip_zero_cycles: true}", "sparsity.skip_zero_cycles: needs zero_gating: true"),
     ("{compression: zip}", "sparsity.compression: must be one of none, bitmask, rle"),
     ("{densities: {activations: 1.5}}", "sparsity.densities.activations: must be a fraction"),
     ("{densities: {outputs: 0.5}}", "sparsity.densities.outputs: unknown key")],
)  # fmt: skip
def test_bad_sparsity_blocks(write_yaml, block, message):
    text = (e2sim.api.Path(e2sim.config.loading.embedded_dir("hardware")) / "zedboard.yaml").read_text()
    with pytest.raises(e2sim.SpecError, match=message):
        e2sim.load_hw(write_yaml(text + f"sparsity: {block}\n"))
