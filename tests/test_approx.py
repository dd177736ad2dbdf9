"""Approximate multipliers match their definitions bit for bit (plain-Python twins)."""

import numpy as np
import pytest

from e2sim.kernels import approx

rng = np.random.default_rng(3)


def drum_twin(x: int, k: int) -> int:
    if x < 2**k:
        return x
    n = x.bit_length() - 1
    shift = n - k + 1
    return ((x >> shift) | 1) << shift


def mitchell_twin(x: int, y: int) -> int:
    if x == 0 or y == 0:
        return 0
    kx, ky = x.bit_length() - 1, y.bit_length() - 1
    fx, fy = x - 2**kx, y - 2**ky
    if fx / 2**kx + fy / 2**ky < 1:  # the fraction parts of the logarithms: no carry
        return 2 ** (kx + ky) + fx * 2**ky + fy * 2**kx
    return 2 ** (kx + ky + 1) * (fx * 2**ky + fy * 2**kx) // 2 ** (kx + ky)


def twin(a: int, b: int, kind: int, param: int) -> int:
    sign = -1 if (a < 0) != (b < 0) else 1
    x, y = abs(a), abs(b)
    if kind == approx.TRUNCATION:
        return sign * ((x >> param) << param) * ((y >> param) << param)
    if kind == approx.DRUM:
        return sign * drum_twin(x, param) * drum_twin(y, param)
    if kind == approx.MITCHELL:
        return sign * mitchell_twin(x, y)
    return sign * x * y


@pytest.mark.parametrize(("kind", "param"), [(approx.TRUNCATION, 2), (approx.TRUNCATION, 4), (approx.DRUM, 4),
                                             (approx.DRUM, 6), (approx.MITCHELL, 0), (approx.EXACT, 0)])  # fmt: skip
def test_multipliers_match_their_definitions(kind, param):
    pairs = rng.integers(-32767, 32768, (4000, 2))
    pairs[:200] = rng.integers(-9, 10, (200, 2))  # small operands and zeros
    for a, b in pairs:
        assert approx.approx_product(np.int64(a), np.int64(b), kind, param) == twin(int(a), int(b), kind, param)


def test_known_values():
    # Mitchell 100 × 100: log2 ≈ 6 + 36/64 each; the fractions sum to 1.125, so 2^13 × 1.125
    assert approx.approx_product(np.int64(100), np.int64(100), approx.MITCHELL, 0) == 9216
    # DRUM-4 of 255 keeps 1111 from the leading one (lowest bit forced to 1): 240; 3 < 2^4 stays exact
    assert approx.approx_product(np.int64(-255), np.int64(3), approx.DRUM, 4) == -720
    assert approx.drum_operand(np.int64(0b10110111), 4) == 0b10110000
    assert approx.drum_operand(np.int64(0b10100111), 4) == 0b10110000  # 1010 -> 1011: the unbiasing one
    assert approx.approx_product(np.int64(255), np.int64(255), approx.TRUNCATION, 4) == 240 * 240


def test_approximate_gemms_equal_the_per_product_sums():
    a = rng.integers(-127, 128, (7, 30)).astype(np.float32)
    b = rng.integers(-127, 128, (30, 5)).astype(np.float32)
    want = np.array([[sum(twin(int(a[i, k]), int(b[k, j]), approx.MITCHELL, 0) for k in range(30)) for j in range(5)]
                     for i in range(7)])  # fmt: skip
    np.testing.assert_array_equal(approx.mitchell_matmul(a, b), want)
    for kind, param in ((approx.TRUNCATION, 3), (approx.DRUM, 4)):
        got = approx.transform_operands(a, kind, param).astype(np.int64) @ approx.transform_operands(
            b, kind, param).astype(np.int64)  # fmt: skip
        want = np.array([[sum(twin(int(a[i, k]), int(b[k, j]), kind, param) for k in range(30)) for j in range(5)]
                         for i in range(7)])  # fmt: skip
        np.testing.assert_array_equal(got, want)
    errors = [
        abs(twin(int(x), int(y), approx.MITCHELL, 0) - x * y) / (x * y) for x, y in rng.integers(1, 256, (2000, 2))
    ]
    assert max(errors) < 0.112  # Mitchell's worst-case error is 11.1%
