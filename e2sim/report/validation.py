"""Text of ``e2sim validate`` and ``e2sim calibrate`` reports (from their JSON dicts)."""

from __future__ import annotations

import math
from typing import Any


def format_validation(report: dict[str, Any]) -> str:
    """The validation table, one line per measured value, then the error summaries."""
    lines = [f"{'measurement':<28}{'quantity':<24}{'layer':<8}{'measured':>12}{'predicted':>12}{'error':>9}"]
    for r in report["rows"]:
        quantity = r["quantity"] + (f" /{r['per']}" if r["per"] else "")
        lines.append(f"{r['measurement'][:27]:<28}{quantity:<24}{(r['layer'] or '-'):<8}{r['measured']:>12.4g}"
                     f"{r['predicted']:>12.4g}{r['relative_error']:>+9.1%}")  # fmt: skip
    summary = report["mape_percent"]
    lines.append("")
    lines.append(f"mean absolute percentage error: {_pct(summary['overall'])} over {len(report['rows'])} values")
    lines += [f"  {_pct(v)}  {source}" for source, v in summary["by_source"].items()]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.1f}%"


def format_calibration(report: dict[str, Any]) -> str:
    """Fitted values with standard errors and correlations, then the errors before, at the fit, and left out."""
    fit = report["fit"]
    lines = [f"calibration of {report['hardware']} on {fit['observations']} measured power/energy/efficiency values "
             f"({fit['loss']} loss; {'converged' if fit['converged'] else 'NOT converged'})"]
    for p in fit["parameters"]:
        lines.append(f"  {p['name']:<28} {p['initial']:>12.5g} -> {p['value']:>12.5g} ± {p['standard_error']:.3g}")
    if len(fit["parameters"]) > 1:
        lines.append("correlations:")
        for p, row in zip(fit["parameters"], fit["correlation"], strict=True):
            lines.append(f"  {p['name']:<28} " + " ".join(f"{c:>+6.2f}" for c in row))
    lines.append(f"residual spread (1σ of log predicted/measured): {fit['residual_sigma']:.3g}")
    m = report["mape_percent"]
    lines.append(f"mean absolute percentage error of the fitted values: uncalibrated {_pct(m['uncalibrated'])}, "
                 f"at the fit {_pct(m['fitted'])}, leave-one-out {_pct(m['leave_one_out'])}")
    for skipped in report["leave_one_out_skipped"]:
        lines.append(f"  not left out: {skipped['measurement']} ({skipped['why']})")
    if report["written"]:
        lines.append(f"wrote {report['written']}")
    return "\n".join(lines)
