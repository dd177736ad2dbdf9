"""Number formats per tensor role (the ``precision:`` block of a workload, or a preset's)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from e2sim.config.formats import NumberFormat, parse_format
from e2sim.config.frozen import FrozenDict
from e2sim.config.reader import Invalid, Section, describe, one_of

ROUNDINGS = ("nearest", "stochastic", "truncate")
# Dynamic-scale granularities per role: one scale per tensor, per output channel (weights, weight
# gradients), per sample (activations, errors), or Banner et al.'s mean of per-sample ranges.
SCALED_ROLES: Mapping[str, tuple[str, ...]] = FrozenDict(
    {
        "weights": ("tensor", "channel"),
        "activations": ("tensor", "sample", "batch_mean"),
        "errors": ("tensor", "sample", "batch_mean"),
        "gradients": ("tensor", "channel"),
    }
)


@dataclass(frozen=True)
class PrecisionSpec:
    """Number format per tensor role; ``gradients`` are weight gradients, ``errors`` activation errors."""

    weights: NumberFormat
    activations: NumberFormat
    errors: NumberFormat
    gradients: NumberFormat
    accumulator: NumberFormat
    rounding: str
    scales: Mapping[str, str] = field(default_factory=lambda: FrozenDict(dict.fromkeys(SCALED_ROLES, "tensor")))

    def scale(self, role: str) -> str:
        """Scale granularity of an ``intN`` role: tensor, channel, sample or batch_mean."""
        return self.scales[role]


def _format_check(max_int_bits: int) -> Callable[[Any], NumberFormat]:
    def check(value: Any) -> NumberFormat:
        try:
            return parse_format(value, max_int_bits)
        except ValueError as exc:
            raise Invalid(str(exc)) from None

    return check


_FP32 = parse_format("fp32")
OPERAND_ROLES = ("weights", "activations", "errors", "gradients")


def read_precision(s: Section | None) -> PrecisionSpec | None:
    if s is None:
        return None
    formats = {role: s.read(role, _format_check(16), default=_FP32) for role in OPERAND_ROLES}
    accumulator = s.read("accumulator", _format_check(64), default=_FP32)
    rounding = s.read("rounding", one_of(*ROUNDINGS), default="nearest")
    scales = _read_scales(s.section("scale", default={}), formats)
    s.finish()
    if accumulator is not None and all(formats.values()):
        _check_accumulator(s, formats, accumulator)
    return PrecisionSpec(accumulator=accumulator, rounding=rounding, scales=scales, **formats)


def _read_scales(s: Section | None, formats: dict[str, NumberFormat | None]) -> Mapping[str, str]:
    """Scale granularity per role; only integer (``intN``) formats have a dynamic scale."""
    scales = dict.fromkeys(SCALED_ROLES, "tensor")
    if s is None:
        return FrozenDict(scales)
    for role, options in SCALED_ROLES.items():
        if not s.has(role):
            continue
        scales[role] = s.read(role, one_of(*options))
        fmt = formats[role]
        if fmt is not None and fmt.kind != "int":
            s.log.add(s.key_path(role), f"only intN formats have a dynamic scale, {role} is {fmt.name}")
    s.finish()
    return FrozenDict(scales)


def _check_accumulator(s: Section, formats: dict[str, NumberFormat], accumulator: NumberFormat) -> None:
    """Integer MAC operands need an integer accumulator wide enough for one product; floats a float one."""
    operands = [formats["weights"], formats["activations"], formats["errors"]]
    path = s.key_path("accumulator")
    if all(f.is_integer for f in operands):
        product_bits = max(a.bits + b.bits for i, a in enumerate(operands) for b in operands[i + 1 :])
        if not accumulator.is_integer or accumulator.kind == "fixed":
            wanted = "integer weights/activations/errors need an intN accumulator"
            s.log.add(path, f"{wanted}, got {describe(accumulator.name)}")
        elif accumulator.bits < product_bits:
            s.log.add(path, f"must hold one product ({product_bits} bits), got {accumulator.name}")
    elif accumulator.is_integer:
        s.log.add(path, "floating-point operands need a floating accumulator (e.g. fp32)")
