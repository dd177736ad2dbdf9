"""Number formats named in a workload's ``precision:`` block, parsed into :class:`NumberFormat`.

Names accepted (case-insensitive):
- ``int2`` … ``int16`` (``int8`` …): signed integers with a dynamic, range-based scale;
  accumulators may be ``int16`` … ``int64``.
- ``qM.N``: signed static fixed point, M integer bits *including the sign bit* and N fraction bits
  (ARM's Q notation; ``q1.7`` is 8 bits, range [-1, 1)).
- ``fp32``, ``fp16``, ``bf16``, ``fp8_e4m3``, ``fp8_e5m2``, and a generic ``eXmY`` (sign + X
  exponent bits + Y mantissa bits, at most 32 bits in all).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAMED_FLOATS = {
    "fp32": (8, 23),
    "fp16": (5, 10),
    "bf16": (8, 7),
    "fp8_e4m3": (4, 3),
    "fp8_e5m2": (5, 2),
}

ACCEPTED = "int2..int16, qM.N (e.g. q1.7), fp32, fp16, bf16, fp8_e4m3, fp8_e5m2 or eXmY (e.g. e5m10)"


@dataclass(frozen=True)
class NumberFormat:
    """A number format. ``kind`` is ``int`` (dynamic scale), ``fixed`` (static Q) or ``float``."""

    name: str
    kind: str
    bits: int
    exponent_bits: int = 0
    mantissa_bits: int = 0
    fraction_bits: int = 0

    @property
    def is_integer(self) -> bool:
        """True for the integer-arithmetic formats (``int`` and ``fixed``)."""
        return self.kind in ("int", "fixed")


def parse_format(text: str, max_int_bits: int = 16) -> NumberFormat:
    """Parse a format name; raise ValueError saying what is accepted."""
    if not isinstance(text, str):
        raise ValueError(f"must be a number format ({ACCEPTED})")
    name = text.strip().lower()
    if name in _NAMED_FLOATS:
        exp, man = _NAMED_FLOATS[name]
        return NumberFormat(name, "float", 1 + exp + man, exp, man)
    if match := re.fullmatch(r"int(\d+)", name):
        bits = int(match[1])
        if not 2 <= bits <= max_int_bits:
            raise ValueError(f"integer formats here range from int2 to int{max_int_bits}")
        return NumberFormat(name, "int", bits)
    if match := re.fullmatch(r"q(\d+)\.(\d+)", name):
        integer, fraction = int(match[1]), int(match[2])
        if integer < 1 or not 2 <= integer + fraction <= max_int_bits:
            raise ValueError(f"qM.N needs M >= 1 (the sign bit) and 2 <= M+N <= {max_int_bits}")
        return NumberFormat(name, "fixed", integer + fraction, fraction_bits=fraction)
    if match := re.fullmatch(r"e(\d+)m(\d+)", name):
        exp, man = int(match[1]), int(match[2])
        if not (2 <= exp <= 8 and 0 <= man <= 23 and 1 + exp + man <= 32):
            raise ValueError("eXmY needs 2 <= X <= 8, 0 <= Y <= 23 and 1+X+Y <= 32")
        return NumberFormat(name, "float", 1 + exp + man, exp, man)
    raise ValueError(f"must be a number format ({ACCEPTED})")
