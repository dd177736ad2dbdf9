"""The ``approximate:`` block of a hardware spec: YAML -> checked -> :class:`ApproximateMode`.

approximate:
  multiplier: {kind: drum, kept_bits: 4}   # exact | truncation (dropped_bits) | drum (kept_bits)
                                           # | mitchell | table (table_file, energy_ratio)
  supply_voltage_v: 0.7
  bit_error_rates: [[0.9, 0.0], [0.7, 1.0e-5], [0.5, 1.0e-3]]   # [voltage_v, rate] points
  bit_errors_on: [weights]                 # stored operands that see them (weights, activations)
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from e2sim.config.reader import Invalid, Section, describe, one_of, positive_number
from e2sim.hw.approximate import MULTIPLIERS, STORED_OPERANDS, ApproximateMode, MultiplierSpec

MAX_TABLE_ROWS = 256  # tables are for operands up to 8 bits (an 8-bit unsigned multiplier has 256)


def read_approximate(s: Section | None, base_dir: Path) -> ApproximateMode | None:
    """``base_dir``: where a relative ``table_file`` is looked up (the spec file's folder)."""
    if s is None:
        return None
    multiplier = _read_multiplier(s.section("multiplier"), base_dir)
    voltage = s.read("supply_voltage_v", _voltage)
    rates = _read_rates(s)
    stored = s.read_list("bit_errors_on", one_of(*STORED_OPERANDS), default=("weights",), check_all=_distinct_roles)
    s.finish()
    if multiplier is None or voltage is None or rates is None or stored is None:
        return None
    return ApproximateMode(multiplier, voltage, rates, stored)


def _read_multiplier(s: Section | None, base_dir: Path) -> MultiplierSpec | None:
    if s is None:
        return None
    kind = s.read("kind", one_of(*MULTIPLIERS))
    if kind is None:
        return None
    if kind == "truncation":
        bits = s.read("dropped_bits", _bits_in(1, 15))
        s.finish(" for kind truncation")
        return None if bits is None else MultiplierSpec(kind, dropped_bits=bits)
    if kind == "drum":
        bits = s.read("kept_bits", _bits_in(2, 15))
        s.finish(" for kind drum")
        return None if bits is None else MultiplierSpec(kind, kept_bits=bits)
    if kind == "table":
        name = s.read("table_file", _text)
        ratio = s.read("energy_ratio", _ratio)
        s.finish(" for kind table")
        if name is None or ratio is None:
            return None
        path = Path(name) if Path(name).is_absolute() else base_dir / name
        try:
            table, digest = read_product_table(path)
        except Invalid as exc:
            s.log.add(s.key_path("table_file"), f"{path}: {exc}")
            return None
        return MultiplierSpec(kind, table_file=name, table_sha256=digest, energy_ratio=ratio, table=table)
    s.finish(f" for kind {kind}")
    return MultiplierSpec(kind)


def read_product_table(path: Path) -> tuple[np.ndarray, str]:
    """A square CSV of non-negative integers, row a and column b holding the approximate |a|·|b|
    (magnitudes 0 .. n-1); returns the table (int64, read-only) and the file's SHA-256."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise Invalid(f"cannot be read ({exc.strerror})") from None
    rows = [
        row for row in csv.reader(raw.decode("utf-8", "replace").splitlines()) if row and not row[0].startswith("#")
    ]
    try:
        table = np.array([[int(cell) for cell in row] for row in rows], dtype=np.int64)
    except ValueError:
        raise Invalid("must hold integers only (one row per first operand, comma-separated)") from None
    if table.ndim != 2 or table.shape[0] != table.shape[1] or table.shape[0] < 2:
        raise Invalid(
            f"must be a square table of at least 2 x 2 products, got rows of {sorted({len(r) for r in rows})}"
        )
    if table.shape[0] > MAX_TABLE_ROWS:
        raise Invalid(
            f"has {table.shape[0]} rows; product tables are for operands up to 8 bits ({MAX_TABLE_ROWS} rows)"
        )
    if (table < 0).any() or (table >= 2**31).any():
        raise Invalid("products are magnitudes: non-negative and below 2^31 (the sign is applied outside)")
    table.setflags(write=False)
    return table, hashlib.sha256(raw).hexdigest()


def _bits_in(low: int, high: int):
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise Invalid(f"must be an integer from {low} to {high}")
        return value

    return check


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise Invalid("must be a file name")
    return value


def _ratio(value: Any) -> float:
    number = positive_number(value)
    if number > 1:
        raise Invalid("must be a number in (0, 1] (approximate / exact multiply energy)")
    return number


def _voltage(value: Any) -> float:
    number = positive_number(value)
    if number > 5:
        raise Invalid("must be a supply voltage in volts (0, 5]")
    return number


def _distinct_roles(roles: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(roles)) != len(roles):
        raise Invalid("must name each operand once")
    return roles


def _read_rates(s: Section) -> tuple[tuple[float, float], ...] | None:
    """``bit_error_rates``: a list of [voltage_v, rate] pairs, each value checked at its own path."""
    items = s.items("bit_error_rates", default=None)
    if items is None:
        return None if s.has("bit_error_rates") else ((1.0, 0.0),)
    points = []
    for path, item in items:
        if not isinstance(item, list) or len(item) != 2:
            s.log.add(path, f"must be a [voltage_v, bit_error_rate] pair, got {describe(item)}")
            continue
        point = []
        for check, index, value in ((_voltage, 0, item[0]), (_probability, 1, item[1])):
            try:
                point.append(check(value))
            except Invalid as exc:
                s.log.add(f"{path}[{index}]", f"{exc}, got {describe(value)}")
        if len(point) == 2:
            points.append(tuple(point))
    if len(points) != len(items):
        return None
    ordered = tuple(sorted(points))
    if len({v for v, _ in ordered}) != len(ordered):
        s.log.add(s.key_path("bit_error_rates"), "must give each voltage once")
        return None
    return ordered


def _probability(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 0.5:
        raise Invalid("must be a bit-error probability in [0, 0.5]")
    return float(value)
