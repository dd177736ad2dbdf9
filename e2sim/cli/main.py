"""``e2sim`` command line: bad input is one line per problem on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from e2sim import __version__, api
from e2sim.report.estimate import format_estimate
from e2sim.report.lowering import check_export_path, export_graph, format_summary, summarize
from e2sim.report.run import (
    CHECKPOINT,
    format_run,
    plot_energy_accuracy,
    prepare_output_dir,
    read_run_report,
    write_outputs,
)
from e2sim.report.search import format_search, prepare_search_dir, search_report, write_search_outputs
from e2sim.report.sweep import format_sweep, prepare_sweep_dir, write_sweep_outputs
from e2sim.report.validation import format_calibration, format_validation

EXIT_BAD_INPUT = 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2sim",
        description="Simulate the energy and cycles of training CNNs on FPGA and ASIC accelerators.",
    )
    parser.add_argument("--version", action="version", version=f"e2sim {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    lower = commands.add_parser(
        "lower",
        help="show the ops of one training iteration (forward, backward-data, backward-weight, update)",
        description="Lower one training iteration of WORKLOAD to its dataflow graph and print it per phase "
        "and per layer.",
    )
    lower.add_argument("workload", metavar="WORKLOAD", help="workload YAML file, or the name of an embedded one")
    lower.add_argument("--batch", type=_positive_int, metavar="N", help="batch size (default: the workload's)")
    lower.add_argument("--json", action="store_true", help="print a JSON report instead of tables")
    lower.add_argument("--export", action="append", default=[], metavar="PATH",
                       help="also write the iteration's DAG to PATH: .graphml (GraphML) or .dot/.gv (Graphviz); "
                       "repeatable; never over an existing file")  # fmt: skip
    lower.set_defaults(handler=_lower)

    estimate = commands.add_parser(
        "estimate",
        help="energy and cycles of one training iteration on an accelerator (no training)",
        description="Schedule every op of one training iteration of WORKLOAD on the accelerator HW and price it. "
        "WORKLOAD may be a SCALE-Sim topology CSV and HW a SCALE-Sim .cfg.",
    )
    estimate.add_argument(
        "workload", metavar="WORKLOAD", help="workload YAML, embedded name, or SCALE-Sim topology CSV"
    )
    estimate.add_argument("--hw", required=True, metavar="HW", help="hardware YAML, embedded name, or SCALE-Sim .cfg")
    estimate.add_argument("--batch", type=_positive_int, metavar="N", help="batch size (default: the workload's)")
    estimate.add_argument("--forward-only", action="store_true", help="price the forward ops only (inference)")
    estimate.add_argument("--approximate", action="store_true",
                          help="run forward conv/linear ops on the hardware's approximate mode")  # fmt: skip
    estimate.add_argument("--operand-bits", type=_positive_int, metavar="BITS",
                          help="operand width of a SCALE-Sim topology (default 8)")  # fmt: skip
    estimate.add_argument("--accumulator-bits", type=_positive_int, metavar="BITS",
                          help="partial-sum width of a SCALE-Sim topology (default 32)")  # fmt: skip
    estimate.add_argument("--density", action="append", metavar="OPERAND=FRACTION", default=[],
                          help="non-zero fraction of activations, errors or weights (repeatable; over the "
                          "spec's sparsity.densities)")  # fmt: skip
    _model_options(estimate)
    estimate.add_argument("--json", action="store_true", help="print a JSON report instead of tables")
    estimate.set_defaults(handler=_estimate)

    run = commands.add_parser(
        "run",
        help="train a workload under a policy and price what ran on an accelerator",
        description="Train WORKLOAD (default: LeNet-5 on the embedded mnist5k) with real reduced-precision "
        "arithmetic under a skip policy, and report accuracy and the energy and cycles of the simulated "
        "accelerator (default: zedboard).",
    )
    run.add_argument(
        "workload",
        nargs="?",
        default=api.DEFAULT_WORKLOAD,
        metavar="WORKLOAD",
        help=f"workload YAML or embedded name (default: {api.DEFAULT_WORKLOAD})",
    )
    run.add_argument(
        "--hw",
        default=api.DEFAULT_HARDWARE,
        metavar="HW",
        help=f"hardware YAML, embedded name or SCALE-Sim .cfg (default: {api.DEFAULT_HARDWARE})",
    )
    presets = ", ".join(api.preset_names())
    run.add_argument("--policy", metavar="P", help=f"policy preset ({presets}) or YAML file with a policy block")
    run.add_argument("--epochs", type=_positive_int, metavar="N", help="epochs (default: the workload's)")
    run.add_argument("--data", metavar="DIR", help="dataset directory (overrides dataset.path)")
    run.add_argument("--out", metavar="DIR", help="also write run.json, CSV tables and PNG plots to DIR")
    run.add_argument("--json", action="store_true", help="print the JSON report instead of a summary")
    run.add_argument("--compare", choices=["baseline"], help="also run (or reuse) the baseline and report savings")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--threads", type=_positive_int, metavar="N",
                     help="threads of e2sim's parallel kernels (default: E2SIM_THREADS, else every core this "
                     "process may use; BLAS always runs on one)")  # fmt: skip
    run.add_argument("--resume", action="store_true",
                     help="continue the interrupted run whose checkpoint is in --out DIR (same arguments)")  # fmt: skip
    _model_options(run)
    run.set_defaults(handler=_run)

    sweep = commands.add_parser(
        "sweep",
        help="explore a design space: estimate or run points, stored, resumable, with the Pareto front",
        description="Run the design points of the sweep file SPEC that its store does not hold yet (a killed "
        "sweep started again runs only what is missing), then print the Pareto front.",
    )
    sweep.add_argument("spec", metavar="SPEC", help="sweep YAML file (see sweeps/)")
    _executor_options(sweep)
    sweep.add_argument("--status", action="store_true", help="show what is stored and what remains; run nothing")
    sweep.add_argument("--out", metavar="DIR", help="also write points.csv, points.parquet, front.csv and plots")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    sweep.set_defaults(handler=_sweep)

    compare = commands.add_parser(
        "compare",
        help="energy against accuracy of several runs (run.json files) in one table and one figure",
        description="Read the run.json of several `e2sim run --out` directories and compare their final accuracy "
        "and training energy (savings against the first).",
    )
    compare.add_argument("runs", nargs="+", metavar="RUN", help="run.json files, or directories holding one")
    compare.add_argument("--out", metavar="PNG", help="also plot energy against accuracy to PNG (a new file)")
    compare.set_defaults(handler=_compare)

    search = commands.add_parser(
        "search",
        help="RENA: search networks for accuracy within training-energy and resource budgets",
        description="Grow networks from the seed workload of the search file SPEC with RENA's controller (or at "
        "random), proxy-train and price every child, store them (a killed search resumes), and report the best "
        "networks under each constraint.",
    )
    search.add_argument("spec", metavar="SPEC", help="search YAML file (see searches/)")
    _executor_options(search)
    search.add_argument("--out", metavar="DIR", help="also write search.json, children.csv, plots and best-*.yaml")
    search.add_argument("--json", action="store_true", help="print the JSON report instead of a summary")
    search.set_defaults(handler=_search)

    validate = commands.add_parser(
        "validate",
        help="predicted against measured: published or lab measurements of real devices",
        description="Predict every measured value of the measurement files (each on its device, at its operating "
        "point) and report the relative errors and mean absolute percentage errors. 'shipped' names every "
        "measurement shipped with e2sim.",
    )
    validate.add_argument("measurements", nargs="+", metavar="MEASUREMENT",
                          help="measurement YAML files or names of shipped ones, or 'shipped'")  # fmt: skip
    validate.add_argument("--hw", metavar="HW", help="price every measurement on this spec instead of its own")
    validate.add_argument("--json", action="store_true", help="print the JSON report instead of a table")
    validate.add_argument("--out", metavar="DIR", help="also write validation.json and validation.png to DIR")
    validate.set_defaults(handler=_validate)

    calibrate = commands.add_parser(
        "calibrate",
        help="fit energy-table entries and static power of a spec to measurements; write a calibrated spec",
        description="Fit the named energy-table entries (and static_power_mw) of HW to the measured power, energy "
        "and efficiency values by bounded least squares; report each value with its standard error, the "
        "correlations and leave-one-out errors, and write the calibrated spec as a new file.",
    )
    calibrate.add_argument("measurements", nargs="+", metavar="MEASUREMENT",
                           help="measurement YAML files or names of shipped ones, or 'shipped'")  # fmt: skip
    calibrate.add_argument("--hw", required=True, metavar="HW", help="hardware YAML or embedded name to calibrate")
    calibrate.add_argument("--fit", action="append", required=True, metavar="ENTRY[=LOW:HIGH]",
                           help="an energy-table entry or static_power_mw to fit, with optional bounds "
                           "(repeatable)")  # fmt: skip
    calibrate.add_argument("--loss", choices=api.LOSSES, default="linear",
                           help="least-squares loss (robust ones damp outliers; default linear)")  # fmt: skip
    calibrate.add_argument("--out", metavar="PATH", help="write the calibrated spec to PATH (a new file)")
    calibrate.add_argument("--json", action="store_true", help="print the JSON report instead of a summary")
    calibrate.set_defaults(handler=_calibrate)
    return parser


def _executor_options(parser: argparse.ArgumentParser) -> None:
    """Where a sweep's or a search's points run, and the store they land in."""
    parser.add_argument("--workers", type=_positive_int, metavar="N", help="worker processes (default 1: this one)")
    parser.add_argument("--dask", action="store_true", help="run the workers as a Dask LocalCluster")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="join the Dask cluster at ADDRESS")
    parser.add_argument("--db", metavar="PATH", help="result store (default: SPEC's name .sqlite next to it)")


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-fusion", action="store_true",
                        help="price layer by layer: every tensor to DRAM and back (no fusion or residency)")
    parser.add_argument("--objective", choices=api.OBJECTIVES, default="energy",
                        help="what the mapper minimises for each op (default: energy)")  # fmt: skip


def _parse_densities(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        role, _, value = item.partition("=")
        try:
            out[role.strip()] = float(value)
        except ValueError:
            message = f"must be OPERAND=FRACTION, got {item!r}"
            raise api.SpecError.single("--density", role.strip() or item, message) from None
    return out


def _lower(args: argparse.Namespace) -> int:
    for path in args.export:
        check_export_path(path)
    graph = api.lower(args.workload, args.batch)
    summary = summarize(graph)
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    for path in args.export:
        print(f"wrote {export_graph(graph, path)}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _estimate(args: argparse.Namespace) -> int:
    report = api.estimate(args.workload, args.hw, forward_only=args.forward_only, batch_size=args.batch,
                          approximate=args.approximate, fusion=not args.no_fusion, objective=args.objective,
                          operand_bits=args.operand_bits, accumulator_bits=args.accumulator_bits,
                          densities=_parse_densities(args.density)).to_dict()  # fmt: skip
    print(json.dumps(report, indent=1) if args.json else format_estimate(report))
    return 0


def _run(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else None
    checkpoint = out / CHECKPOINT if out else None
    if args.resume and (checkpoint is None or not checkpoint.exists()):
        where = f"{out} holds no {CHECKPOINT}" if out else "give the --out DIR of the interrupted run"
        print(f"e2sim: --resume: nothing to continue ({where})", file=sys.stderr)
        return EXIT_BAD_INPUT
    if checkpoint is not None and checkpoint.exists() and not args.resume:
        print(f"e2sim: {out}: holds an interrupted run ({CHECKPOINT}); continue it with --resume, or choose another "
              "directory", file=sys.stderr)  # fmt: skip
        return EXIT_BAD_INPUT
    if out is not None and (out / "run.json").exists() and not args.resume:
        print(f"e2sim: {out}: holds an earlier run (run.json); choose another directory, or remove it yourself",
              file=sys.stderr)  # fmt: skip
        return EXIT_BAD_INPUT
    if out:
        prepare_output_dir(out)  # refuse a directory of someone else's files before training
    with api.stop_on_signals() as stop:
        result = api.run(args.workload, args.hw, args.policy, args.epochs, args.data,
                         progress=False if args.no_progress else None, compare_baseline=args.compare == "baseline",
                         fusion=not args.no_fusion, objective=args.objective, threads=args.threads,
                         checkpoint=checkpoint, resume=args.resume, stop=stop)  # fmt: skip
        report = result.to_dict()
        if out:  # still under the handler: a signal now cannot leave the outputs half written
            write_outputs(out, report, report.get("baseline"))
            if not result.partial and checkpoint.exists():
                checkpoint.unlink()  # the run is complete: nothing to resume
    complete = not result.partial and (args.compare != "baseline" or "comparison" in report)
    if complete:  # no signal, or one that came after the work was done
        print(json.dumps(report, indent=1) if args.json else format_run(report))
        return 0
    if result.partial:
        p = report["partial"]
        saved = (f"partial report in {out / 'run.json'}; continue with the same command and --resume" if out
                 else "nothing saved (give --out DIR to keep a checkpoint and a partial report)")  # fmt: skip
        print(f"e2sim: stopped by {p['signal']} in epoch {p['epoch']} after {p['iteration']} iterations "
              f"({p['completed_epochs']} epochs complete); {saved}", file=sys.stderr)  # fmt: skip
    else:
        print(f"e2sim: stopped by {stop.signal} during the baseline run; the run's report is complete"
              f"{' in ' + str(out / 'run.json') if out else ''}, without the comparison", file=sys.stderr)  # fmt: skip
    return 130


def _sweep(args: argparse.Namespace) -> int:
    if args.status:
        counts = api.sweep_status(args.spec, args.db)
        print(", ".join(f"{k} {v:,}" for k, v in counts.items()))
        return 0
    if args.out:
        prepare_sweep_dir(Path(args.out))
    result = api.sweep(args.spec, args.db, args.workers, args.scheduler, args.dask,
                       progress=False if args.no_progress else None)  # fmt: skip
    print(format_sweep(result))
    if args.out:
        for path in write_sweep_outputs(Path(args.out), result):
            print(f"wrote {path}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    runs = [read_run_report(Path(path)) for path in args.runs]
    if args.out and Path(args.out).exists():
        print(f"e2sim: {args.out}: exists; compare writes a new file", file=sys.stderr)
        return EXIT_BAD_INPUT
    first = runs[0][0]["energy"]["total_j"]
    print(f"{'run':<40}{'accuracy':>10}{'energy (J)':>14}{'saving':>9}")
    for report, label in runs:
        accuracy = report["accuracy"]["final"]
        text = "-" if accuracy is None else f"{accuracy:.2%}"
        saving = 1 - report["energy"]["total_j"] / first if first else float("nan")
        print(f"{label[:39]:<40}{text:>10}{report['energy']['total_j']:>14.4g}{saving:>+9.1%}")
    if args.out:
        plot_energy_accuracy([(r, label) for r, label in runs], Path(args.out))
        print(f"wrote {args.out}")
    return 0


def _search(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else None
    if out is not None:
        prepare_search_dir(out)
    result = api.search(args.spec, args.db, args.workers, args.scheduler, args.dask)
    report = search_report(result)
    print(json.dumps(report, indent=1, sort_keys=True) if args.json else format_search(report))
    if out is not None:
        for path in write_search_outputs(out, result, report):
            print(f"wrote {path}", file=sys.stderr if args.json else sys.stdout)
    return 0


VALIDATION_FILES = ("validation.json", "validation.png")


def _validate(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else None
    if out is not None:
        taken = [name for name in VALIDATION_FILES if (out / name).exists()]
        if taken:
            print(f"e2sim: {out}: already holds {', '.join(taken)}; choose another directory", file=sys.stderr)
            return EXIT_BAD_INPUT
    result = api.validate(args.measurements, args.hw)
    report = result.to_dict()
    text = json.dumps(report, indent=1, sort_keys=True)
    print(text if args.json else format_validation(report))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "validation.json").write_text(text + "\n")
        result.plot(out / "validation.png")
        where = sys.stderr if args.json else sys.stdout
        print(f"wrote {out / 'validation.json'} and {out / 'validation.png'}", file=where)
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    result = api.calibrate(args.measurements, args.hw, args.fit, args.loss, args.out)
    report = result.to_dict()
    print(json.dumps(report, indent=1, sort_keys=True) if args.json else format_calibration(report))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except api.SpecError as exc:
        for problem in exc.problems:
            print(f"e2sim: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (api.DataError, api.CheckpointError, FileExistsError, RuntimeError) as exc:
        print(f"e2sim: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except FloatingPointError as exc:  # a recipe that diverges (e.g. too high a learning rate)
        print(f"e2sim: {exc}; lower the learning rate or change the policy", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside a training run
        print("e2sim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
