"""SCALE-Sim v3 inputs: a ``.cfg`` as hardware and a topology CSV (conv or GEMM form) as layers.

A SCALE-Sim config has no clock, technology, DRAM type or static power. Unless an ``[e2sim]``
section of the same file gives them (``clock_mhz``, ``technology``, ``dram_type``,
``static_power_mw``), e2sim assumes 1 GHz, 45 nm, LPDDR4 and no static power, and says so in
every report (``hardware.assumptions``). SRAMs have 8-bit words that feed the array at full rate;
the DRAM bandwidth is ``Bandwidth`` words per cycle (10 when absent, SCALE-Sim's sample value).
A topology's input sizes include padding and its output size follows SCALE-Sim:
⌈(H − R) / stride⌉ + 1.
"""

from __future__ import annotations

import configparser
import csv
from dataclasses import dataclass
from pathlib import Path

from e2sim.config.errors import Problem, SpecError
from e2sim.config.frozen import FrozenDict
from e2sim.hw.accelerator import DRAM_TYPES, TECHNOLOGIES, Accelerator, Buffer, Dram, PEArray, VectorUnit

ASSUMED_CLOCK_MHZ = 1000.0
ASSUMED_TECHNOLOGY = "45nm"
_KNOWN_KEYS = {  # keys SCALE-Sim defines in [architecture_presets]; e2sim uses the first six
    "arrayheight", "arraywidth", "ifmapsramszkb", "filtersramszkb", "ofmapsramszkb", "dataflow",
    "bandwidth", "ifmapoffset", "filteroffset", "ofmapoffset", "readrequestbuffer", "writerequestbuffer",
    "topologycsvloc", "memorybanks",
}  # fmt: skip


def read_scalesim_cfg(path: str | Path) -> Accelerator:
    source = str(path)
    if not Path(path).is_file():
        raise SpecError.single(source, "", "no such file")
    parser = configparser.ConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise SpecError.single(source, "", f"not a SCALE-Sim config: {' '.join(str(exc).split())}") from None
    section = "architecture_presets"
    if not parser.has_section(section):
        raise SpecError.single(source, section, "missing section (a SCALE-Sim config needs [architecture_presets])")
    keys = parser[section]
    problems: list[Problem] = []

    def integer(key: str, default: int | None = None) -> int | None:
        if key.lower() not in keys:
            if default is None:
                problems.append(Problem(source, f"{section}.{key}", "missing required key"))
            return default
        text = keys[key.lower()].strip()
        if not text.isdigit() or int(text) <= 0:
            problems.append(Problem(source, f"{section}.{key}", f"must be a positive integer, got {text!r}"))
            return None
        return int(text)

    rows, cols = integer("ArrayHeight"), integer("ArrayWidth")
    sizes = {name: integer(f"{name.capitalize()}SramSzkB") for name in ("ifmap", "filter", "ofmap")}
    bandwidth = integer("Bandwidth", default=10)
    dataflow = keys.get("dataflow", "").strip()
    if dataflow not in ("ws", "os", "is"):
        problems.append(Problem(source, f"{section}.Dataflow", f"must be one of ws, os, is, got {dataflow!r}"))
    for key in keys:
        if key not in _KNOWN_KEYS:
            problems.append(Problem(source, f"{section}.{key}", "unknown key for a SCALE-Sim config"))
    settings, assumed = _e2sim_section(parser, source, problems)
    if problems:
        raise SpecError(problems)
    clock = settings["clock_mhz"]
    feed = float(max(rows, cols))  # elements (bytes) per cycle: the array never waits on its SRAMs
    buffers = {name: Buffer(float(kb), 1, 8, feed) for name, kb in sizes.items()}
    name = parser.get("general", "run_name", fallback=Path(path).stem).strip() or Path(path).stem
    dram = Dram(settings["dram_type"], bandwidth * clock * 1e6 / 1e9)
    return Accelerator(
        name=name, description=f"SCALE-Sim config {Path(path).name}", source=source, technology=settings["technology"],
        clock_mhz=clock, pe_array=PEArray(rows, cols, dataflow, 0, (8,)),
        buffers=FrozenDict(buffers), dram=dram, vector=VectorUnit(cols, 32, True),
        static_power_mw=settings["static_power_mw"], energy_overrides=FrozenDict({}), assumptions=assumed,
    )  # fmt: skip


DEFAULTS = {"clock_mhz": ASSUMED_CLOCK_MHZ, "technology": ASSUMED_TECHNOLOGY, "dram_type": "lpddr4",
            "static_power_mw": 0.0}  # fmt: skip


def _e2sim_section(parser: configparser.ConfigParser, source: str, problems: list[Problem]):
    """The values a SCALE-Sim config lacks: from its ``[e2sim]`` section, else assumed (and listed)."""
    given = dict(parser["e2sim"]) if parser.has_section("e2sim") else {}
    settings, assumed = {}, []
    for key, default in DEFAULTS.items():
        if key not in given:
            settings[key] = default
            assumed.append((key, f"{default} (not in a SCALE-Sim config; set it in an [e2sim] section)"))
            continue
        text = given.pop(key).strip()
        if key in ("clock_mhz", "static_power_mw"):
            try:
                value = float(text)
            except ValueError:
                value = -1.0
            if value < 0 or (key == "clock_mhz" and value == 0):
                kind = "positive" if key == "clock_mhz" else "non-negative"
                problems.append(Problem(source, f"e2sim.{key}", f"must be a {kind} number, got {text!r}"))
            settings[key] = value
        else:
            options = TECHNOLOGIES if key == "technology" else DRAM_TYPES
            if text not in options:
                problems.append(Problem(source, f"e2sim.{key}", f"must be one of {', '.join(options)}, got {text!r}"))
            settings[key] = text
    for key in given:
        problems.append(Problem(source, f"e2sim.{key}", f"unknown key (known: {', '.join(DEFAULTS)})"))
    return settings, tuple(assumed)


@dataclass(frozen=True)
class TopologyLayer:
    """One row of a topology: a conv (H, W with padding, R, S, C, K, stride) or a GEMM (M, N, K)."""

    name: str
    conv: tuple[int, int, int, int, int, int, int] | None = None
    gemm: tuple[int, int, int] | None = None


CONV_COLUMNS = ("IFMAP Height", "IFMAP Width", "Filter Height", "Filter Width", "Channels", "Num Filter", "Strides")
GEMM_COLUMNS = ("M", "N", "K")


def read_scalesim_topology(path: str | Path) -> list[TopologyLayer]:
    source = str(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            table = [[cell.strip() for cell in row] for row in csv.reader(f)]
    except FileNotFoundError:
        raise SpecError.single(source, "", "no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SpecError.single(source, "", f"cannot be read as CSV ({exc})") from None
    table = [[c for c in row if c != ""] for row in table if any(row)]
    if not table:
        raise SpecError.single(source, "", "empty topology")
    header = [h.lower() for h in table[0][1:]]
    gemm = header[:3] == ["m", "n", "k"]
    columns = GEMM_COLUMNS if gemm else CONV_COLUMNS
    if not gemm and header[: len(columns)] != [c.lower() for c in columns]:
        raise SpecError.single(source, "line 1", f"header must be 'Layer name, {', '.join(CONV_COLUMNS)}' "
                               "or 'Layer, M, N, K'")  # fmt: skip
    layers, problems = [], []
    for line, row in enumerate(table[1:], start=2):
        name = row[0] if row else f"layer{line - 1}"
        values = row[1 : 1 + len(columns)]
        if len(values) < len(columns):
            problems.append(Problem(source, f"line {line} ({name})", f"needs {len(columns)} values after the name"))
            continue
        numbers = []
        for column, text in zip(columns, values, strict=True):
            if not text.isdigit() or int(text) <= 0:
                problems.append(
                    Problem(source, f"line {line} ({name}).{column}", f"must be a positive integer, got {text!r}")
                )
            numbers.append(int(text) if text.isdigit() else 0)
        if not gemm and all(numbers) and (numbers[2] > numbers[0] or numbers[3] > numbers[1]):
            problems.append(Problem(source, f"line {line} ({name})", "the filter is larger than the input"))
        layers.append(TopologyLayer(name, gemm=tuple(numbers)) if gemm else TopologyLayer(name, conv=tuple(numbers)))
    if problems:
        raise SpecError(problems)
    return layers
