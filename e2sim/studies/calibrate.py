"""Calibration: fit energy-table entries and ``static_power_mw`` of one hardware spec to measured
values by bounded least squares (``scipy.optimize.least_squares``) on the log of predicted over
measured, with the action counts of each measurement held (they do not depend on the prices for
a given mapping). Standard errors and correlations come from the Jacobian at the optimum
(s² (JᵀJ)⁻¹ with s² the residual variance); leave-one-out errors refit without each measurement
file in turn. The calibrated spec is written as a new file with the fitted values as overrides
and a ``calibration`` block that estimates turn into error bars."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from e2sim.config.errors import SpecError
from e2sim.config.loading import read_hardware_spec
from e2sim.config.measurement import ENERGY_QUANTITIES, LOSSES, Measurement
from e2sim.config.yaml_text import read_yaml_file
from e2sim.energy.parameters import PARAMETERS, STATIC_POWER, parameter_value
from e2sim.hw import Accelerator
from e2sim.hw.energy_entries import ENERGY_ENTRIES
from e2sim.studies.validate import Observation, Row, mape, predict_measurement, row_of, validate_measurements

METHOD = ("bounded least squares (scipy.optimize.least_squares, trf) on log(predicted / measured) of the "
          "energy-dependent measured values, action counts held; standard errors s²(JᵀJ)⁻¹")  # fmt: skip


@dataclass(frozen=True)
class Parameter:
    """A parameter to fit: its name, its value before the fit and its bounds."""

    name: str
    initial: float
    low: float
    high: float


def parameter_of(hw: Accelerator, text: str, source: str = "--fit") -> Parameter:
    """``NAME`` or ``NAME=LOW:HIGH`` (a table entry or static_power_mw) on ``hw``."""
    name, _, bounds = text.partition("=")
    if name not in PARAMETERS:
        raise SpecError.single(source, name, f"not a fittable parameter (energy-table entries: "
                               f"{', '.join(ENERGY_ENTRIES)}; or {STATIC_POWER})")  # fmt: skip
    low, high = 0.0, (10.0 if name.endswith("exponent") else math.inf)
    if bounds:
        try:
            low, high = (float(v) for v in bounds.split(":"))
        except ValueError:
            raise SpecError.single(source, name, f"bounds must be LOW:HIGH numbers, got {bounds!r}") from None
        if not (math.isfinite(low) and low >= 0 and low < high):
            raise SpecError.single(source, name, f"bounds must satisfy 0 <= LOW < HIGH, got {bounds!r}")
    initial = parameter_value(hw, name)
    return Parameter(name, min(max(initial, low), high), low, high)


@dataclass(frozen=True)
class Fit:
    parameters: tuple[Parameter, ...]
    values: tuple[float, ...]
    standard_errors: tuple[float, ...]
    correlation: tuple[tuple[float, ...], ...]
    residual_sigma: float  # standard deviation of the log residuals (≈ relative error)
    observations: int
    loss: str
    success: bool
    message: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    def to_dict(self) -> dict[str, Any]:
        return {
            "parameters": [{"name": p.name, "initial": p.initial, "bounds": [p.low, None if math.isinf(p.high)
                            else p.high], "value": v, "standard_error": e}
                           for p, v, e in zip(self.parameters, self.values, self.standard_errors, strict=True)],
            "correlation": [list(r) for r in self.correlation], "residual_sigma": self.residual_sigma,
            "observations": self.observations, "loss": self.loss, "converged": self.success, "method": METHOD,
        }  # fmt: skip


def fit_parameters(observations: Sequence[Observation], parameters: Sequence[Parameter], loss: str = "linear",
                   errors: bool = True) -> Fit:  # fmt: skip
    """Fit ``parameters`` to the energy-dependent ``observations``: more of them than parameters, or
    (``errors`` False: the values alone, standard errors NaN) as many."""
    used = [o for o in observations if o.energy_dependent]
    names = [p.name for p in parameters]
    if len(used) < len(parameters) or (errors and len(used) == len(parameters)):
        n = len(parameters)
        raise SpecError.single("calibrate", "--fit", f"{n} parameters need more than {n} measured power, energy or "
                               f"efficiency values; the measurements give {len(used)}")  # fmt: skip
    measured = np.log([o.measured.value for o in used])

    def residuals(x: np.ndarray) -> np.ndarray:
        return np.log([o.predict_at(names, x) for o in used]) - measured

    from scipy.optimize import least_squares  # here: scipy is slow to import and most commands never fit

    x0 = np.array([_inside(p) for p in parameters])
    low, high = np.array([p.low for p in parameters]), np.array([p.high for p in parameters])
    result = least_squares(residuals, x0, bounds=(low, high), loss=loss, x_scale="jac", method="trf")
    jac, r = result.jac, result.fun
    dof = len(used) - len(parameters)
    s2 = float(r @ r) / dof if dof else math.nan
    try:
        covariance = s2 * np.linalg.inv(jac.T @ jac)
    except np.linalg.LinAlgError:
        covariance = s2 * np.linalg.pinv(jac.T @ jac)
    errors = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    scale = np.where(errors > 0, errors, 1.0)
    correlation = covariance / np.outer(scale, scale)
    np.fill_diagonal(correlation, 1.0)
    correlation = np.clip(correlation, -1.0, 1.0)
    return Fit(tuple(parameters), tuple(float(v) for v in result.x), tuple(float(e) for e in errors),
               tuple(tuple(float(c) for c in row) for row in correlation), math.sqrt(s2), len(used), loss,
               bool(result.success), str(result.message))  # fmt: skip


def _inside(p: Parameter) -> float:
    """The initial value strictly inside the bounds (least squares starts from an interior point)."""
    span = (p.high - p.low) if math.isfinite(p.high) else max(abs(p.initial), 1.0)
    margin = 1e-6 * span
    return min(max(p.initial, p.low + margin), p.high - margin if math.isfinite(p.high) else math.inf)


@dataclass(frozen=True)
class LeaveOneOut:
    """Each measurement predicted by a fit of the others."""

    rows: tuple[Row, ...]
    skipped: tuple[tuple[str, str], ...]  # (measurement, why it could not be left out)


def leave_one_out(observations: Sequence[Observation], parameters: Sequence[Parameter], loss: str) -> LeaveOneOut:
    names = [p.name for p in parameters]
    rows, skipped = [], []
    for left in dict.fromkeys(o.measurement.name for o in observations):
        rest = [o for o in observations if o.measurement.name != left]
        mine = [o for o in observations if o.measurement.name == left]
        if sum(o.energy_dependent for o in rest) < len(parameters):
            skipped.append((left, "the other measurements give fewer energy-dependent values than parameters"))
            continue
        fit = fit_parameters(rest, parameters, loss, errors=False)
        rows += [row_of(o, o.predict_at(names, fit.values)) for o in mine if o.energy_dependent]
    return LeaveOneOut(tuple(rows), tuple(skipped))


@dataclass(frozen=True)
class CalibrationResult:
    hardware: str
    fit: Fit
    before: tuple[Row, ...]  # the measurements predicted by the spec as it was
    fitted: tuple[Row, ...]  # predicted at the fitted values, same mappings
    after: tuple[Row, ...]  # predicted by the written spec (mapped again), when one was written
    loo: LeaveOneOut
    written: str | None

    def to_dict(self) -> dict[str, Any]:
        energy = [r for r in self.before if r.quantity in ENERGY_QUANTITIES]
        fitted = [r for r in self.fitted if r.quantity in ENERGY_QUANTITIES]
        return {
            "hardware": self.hardware,
            "fit": self.fit.to_dict(),
            "mape_percent": {"uncalibrated": mape(energy), "fitted": mape(fitted),
                             "leave_one_out": mape(self.loo.rows)},
            "rows": {"uncalibrated": [r.to_dict() for r in self.before],
                     "fitted": [r.to_dict() for r in self.fitted],
                     "calibrated_spec": [r.to_dict() for r in self.after],
                     "leave_one_out": [r.to_dict() for r in self.loo.rows]},
            "leave_one_out_skipped": [{"measurement": m, "why": w} for m, w in self.loo.skipped],
            "written": self.written,
        }  # fmt: skip


def write_calibrated_spec(spec_path: Path, hw: Accelerator, fit: Fit, measurements: Sequence[str], out: Path) -> None:
    """A new hardware spec at ``out`` (never over an existing file): ``spec_path``'s document with
    the fitted values and a ``calibration`` block; it is read back to check that it loads."""
    data = read_yaml_file(spec_path)
    overrides = dict(data.get("energy_overrides") or {})
    for name, value in zip(fit.names, fit.values, strict=True):
        if name == STATIC_POWER:
            data[STATIC_POWER] = value
        else:
            overrides[name] = value
    data.pop("energy_overrides", None)
    data.pop("calibration", None)
    data["name"] = f"{hw.name}-calibrated"
    header = [f"# {hw.name} calibrated by e2sim calibrate from {spec_path.name} on {len(measurements)} "
              f"measurements: {', '.join(measurements)}.",
              "# Fitted (value ± 1σ): " + "; ".join(f"{n} {v:.6g} ± {e:.3g}" for n, v, e in
                                                    zip(fit.names, fit.values, fit.standard_errors, strict=True)),
              f"# Method: {METHOD}."]  # fmt: skip
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    fitted = dict(zip(fit.names, fit.standard_errors, strict=True))
    lines = ["energy_overrides:"] if overrides else []
    for name, value in overrides.items():
        note = f"  # fitted by e2sim calibrate, ± {fitted[name]:.3g}" if name in fitted else ""
        lines.append(f"  {name}: {value!r}{note}")
    block = {"calibration": {
        "method": METHOD, "measurements": list(measurements),
        "parameters": {n: {"value": v, "standard_error": e}
                       for n, v, e in zip(fit.names, fit.values, fit.standard_errors, strict=True)},
        "correlation": [list(r) for r in fit.correlation]}}  # fmt: skip
    tail = yaml.safe_dump(block, sort_keys=False, allow_unicode=True)
    text = "\n".join([*header, body.rstrip("\n"), *lines]) + "\n" + tail
    try:
        with open(out, "x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise SpecError.single(str(out), "", "exists: calibrate writes a new file and never overwrites one") from None
    try:
        read_hardware_spec(out)
    except SpecError:
        out.unlink()  # ours, and broken: do not leave it behind
        raise


def calibrate_measurements(measurements: Sequence[Measurement], hw: Accelerator, spec_path: Path | None,
                           fit: Sequence[str], loss: str = "linear",
                           out: Path | None = None) -> CalibrationResult:  # fmt: skip
    """Fit ``fit`` (``NAME`` or ``NAME=LOW:HIGH``) of ``hw`` to ``measurements`` (each priced on
    ``hw`` at its own operating point); with ``out``, write the calibrated spec (from the YAML at
    ``spec_path``) and predict the measurements again with it."""
    if loss not in LOSSES:
        raise SpecError.single("calibrate", "--loss", f"must be one of {', '.join(LOSSES)}, got {loss!r}")
    if not fit:
        raise SpecError.single("calibrate", "--fit", "name at least one parameter to fit")
    parameters = [parameter_of(hw, text) for text in fit]
    names = [p.name for p in parameters]
    if len(set(names)) != len(names):
        raise SpecError.single("calibrate", "--fit", f"a parameter is named twice: {', '.join(names)}")
    if out is not None:
        if spec_path is None:
            raise SpecError.single("calibrate", "--out", "needs --hw as a YAML spec (name or path) to write from")
        if out.exists():
            raise SpecError.single(str(out), "", "exists: calibrate writes a new file and never overwrites one")
    observations = [o for m in measurements for o in predict_measurement(m, hw)[1]]
    result = fit_parameters(observations, parameters, loss)
    before = tuple(row_of(o) for o in observations)
    fitted = tuple(row_of(o, o.predict_at(names, result.values)) for o in observations)
    loo = leave_one_out(observations, parameters, loss)
    after: tuple[Row, ...] = ()
    if out is not None:
        write_calibrated_spec(spec_path, hw, result, [m.name for m in measurements], out)
        after = validate_measurements(measurements, read_hardware_spec(out)).rows
    return CalibrationResult(hw.name, result, before, fitted, after, loo, str(out) if out is not None else None)
