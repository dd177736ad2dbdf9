"""Skip policies execute what they claim: PSG's predictor and counts (SMD is in test_run.py)."""

import numpy as np
import pytest
import twins

import e2sim.functional as F
from e2sim.config.formats import parse_format
from e2sim.config.workload import PsgSpec
from e2sim.counting import OpCounter
from e2sim.numerics.quantize import quantize
from e2sim.policies.psg import PsgStats, msb_operand, predictor_operands, psg_weight_gradient

rng = np.random.default_rng(5)


def test_msb_operand_keeps_the_rounded_top_bits():
    q8 = quantize(np.array([127, 100, 8, 7, -9, -127, 0, 24], np.float32), parse_format("int8"))
    q4 = msb_operand(q8, 4)
    np.testing.assert_array_equal(q4.values, [7, 6, 0, 0, -1, -7, 0, 2])  # round(q / 16), clipped to ±7
    assert q4.scale.item() == pytest.approx(16 * q8.scale.item())


@pytest.mark.parametrize(("stride", "padding"), [(1, 1), (2, 0)])
def test_psg_predictor_equals_a_4bit_msb_reference_conv(stride, padding):
    x = rng.standard_normal((4, 3, 9, 9)).astype(np.float32)
    p = (9 + 2 * padding - 3) // stride + 1
    dy = rng.standard_normal((4, 5, p, p)).astype(np.float32)
    xp, dyp = predictor_operands(x, dy, PsgSpec(), seed=0)
    # the integer reference: 4-bit MSBs of the 8-bit input times the 16-bit error, summed exactly
    x8 = np.rint(x / (np.abs(x).max() / 127)).astype(np.int64)
    x4 = np.clip(np.rint(x8 / 16), -7, 7)
    dy16 = np.rint(dy / (np.abs(dy).max() / 32767)).astype(np.int64)
    np.testing.assert_array_equal(xp.values, x4)
    np.testing.assert_array_equal(dyp.values, dy16)
    reference = twins.conv2d_grad_weight(x4.astype(np.int64), dy16, (5, 3, 3, 3), stride, padding, padding)
    got = F.conv2d_grad_weight(xp.values, dyp.values, (5, 3, 3, 3), stride, padding)
    np.testing.assert_array_equal(got, reference)


def test_psg_counts_predictor_and_accurate_macs_where_needed():
    x = rng.standard_normal((8, 4, 10, 10)).astype(np.float32)
    dy = rng.standard_normal((8, 6, 10, 10)).astype(np.float32) * 1e-3
    fmt = F.precision(weights="int8", activations="int8", errors="int8", gradients="int16", accumulator="int32")
    counter, stats = OpCounter(), PsgStats()
    spec = PsgSpec(threshold=0.3, adaptive=True)  # a coarse threshold: many elements need the accurate gradient
    update = psg_weight_gradient(x, dy, (6, 4, 3, 3), 1, 1, fmt, spec, stats, False, counter, "c.bwd_weight", 0, "c")
    count = counter.ops["c.bwd_weight"]
    per_element = 8 * 10 * 10
    assert count.macs["4x4"] == 6 * 4 * 9 * per_element  # the predictor covers every element
    needed = stats.total - stats.predicted
    assert 0 < needed < stats.total
    assert count.macs["8x8"] == needed * per_element  # the accurate gradient only where needed
    assert count.skipped_macs == stats.predicted * per_element
    values = np.unique(np.abs(update))
    assert len(values) == 1 and values[0] > 0  # scaled signs
    xp, dyp = predictor_operands(x, dy, spec, 0)
    predicted = F.conv2d_grad_weight(xp.dequantize(), dyp.dequantize(), (6, 4, 3, 3), 1, 1)
    confident = np.abs(predicted) >= 0.3 * np.abs(predicted).max()
    assert int(confident.sum()) == stats.predicted
    np.testing.assert_array_equal(np.sign(update)[confident], np.sign(predicted)[confident])
