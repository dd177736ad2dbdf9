"""RENA's search space: a network is a sequence of units — ``conv`` (conv k×k, batch norm, ReLU),
``block`` (a basic residual block: two 3×3 convs, a projection shortcut when the shape changes)
and ``pool`` (2×2 max pool) — followed by a fixed head (global average pool, linear classifier).
Edits, as RENA's: *scale* a unit (halve or double its width, grow or shrink its kernel), *insert*
a unit after one (a 3×3 conv or a block at the same width, a pool, or a stride-2 conv that doubles
the width), *remove* a unit. Only edits that leave a valid network are offered (invalid ones are
masked: never sampled, never penalised). Every network converts to an e2sim workload with an
explicit layer list."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from e2sim.config.errors import SpecError
from e2sim.studies.rena.controller import Edit

UNIT_KINDS = ("conv", "block", "pool")
EDIT_KINDS = ("scale", "insert", "remove")
SCALE_OPTIONS = ("halve width", "double width", "grow kernel", "shrink kernel")
INSERT_OPTIONS = ("conv 3x3", "block", "pool", "conv 3x3 stride 2, width x2")
OPTIONS = max(len(SCALE_OPTIONS), len(INSERT_OPTIONS))
FEATURES = 9


@dataclass(frozen=True)
class Unit:
    kind: str
    channels: int = 0  # output channels (pool: unchanged)
    kernel: int = 3
    stride: int = 1


@dataclass(frozen=True)
class Limits:
    """What a valid network may be: widths, kernel sizes, unit count, the smallest feature map."""

    min_channels: int = 4
    max_channels: int = 256
    max_kernel: int = 7
    max_units: int = 12
    min_size: int = 2  # the last feature map, pixels per side


Network = tuple[Unit, ...]


def sizes(network: Network, input_size: int) -> list[int]:
    """Feature-map side entering each unit, then the last one's output."""
    out = [input_size]
    for u in network:
        size = out[-1]
        if u.kind == "pool":
            size //= 2
        else:
            size = (size - 1) // u.stride + 1  # padding k // 2 keeps the size at stride 1
        out.append(size)
    return out


def widths(network: Network, in_channels: int) -> list[int]:
    """Channels entering each unit, then the last one's output."""
    out = [in_channels]
    for u in network:
        out.append(out[-1] if u.kind == "pool" else u.channels)
    return out


def is_valid(network: Network, input_size: int, limits: Limits) -> bool:
    if not network or len(network) > limits.max_units:
        return False
    feature = sizes(network, input_size)
    if min(feature) < limits.min_size:
        return False
    for u, size in zip(network, feature, strict=False):
        if u.kind == "pool":
            continue
        if not limits.min_channels <= u.channels <= limits.max_channels or u.kernel % 2 == 0:
            return False
        if not 1 <= u.kernel <= min(limits.max_kernel, size):
            return False
    return any(u.kind != "pool" for u in network)


def apply_edit(network: Network, edit: Edit, in_channels: int) -> Network:
    """The network after ``edit`` (which may be invalid; see :func:`valid_edits`)."""
    units = list(network)
    t, option = edit.position, edit.option
    kind = EDIT_KINDS[edit.kind]
    if kind == "remove":
        del units[t]
        return tuple(units)
    if kind == "scale":
        u = units[t]
        if option == 0:
            units[t] = replace(u, channels=u.channels // 2)
        elif option == 1:
            units[t] = replace(u, channels=u.channels * 2)
        elif option == 2:
            units[t] = replace(u, kernel=u.kernel + 2)
        else:
            units[t] = replace(u, kernel=u.kernel - 2)
        return tuple(units)
    width = widths(network, in_channels)[t + 1]
    new = (Unit("conv", width, 3, 1), Unit("block", width, 3, 1), Unit("pool"), Unit("conv", width * 2, 3, 2))[option]
    units.insert(t + 1, new)
    return tuple(units)


def valid_edits(network: Network, input_size: int, in_channels: int, limits: Limits) -> tuple[Edit, ...]:
    """Every edit that leaves a valid network (a different one)."""
    found = []
    for kind, name in enumerate(EDIT_KINDS):
        count = {"scale": len(SCALE_OPTIONS), "insert": len(INSERT_OPTIONS), "remove": 1}[name]
        for t, u in enumerate(network):
            for option in range(count):
                if name == "scale" and (u.kind == "pool" or (u.kind == "block" and option >= 2)):
                    continue
                edit = Edit(kind, t, option)
                child = apply_edit(network, edit, in_channels)
                if child != network and is_valid(child, input_size, limits):
                    found.append(edit)
    return tuple(found)


def embed(network: Network, input_size: int, in_channels: int) -> np.ndarray:
    """One feature row per unit: kind (one-hot), log width, kernel, stride, input size, position, depth."""
    feature, width = sizes(network, input_size), widths(network, in_channels)
    rows = []
    for t, u in enumerate(network):
        rows.append([u.kind == "conv", u.kind == "block", u.kind == "pool", math.log2(max(width[t + 1], 1)) / 8,
                     u.kernel / 7, u.stride == 2, feature[t] / input_size, t / len(network),
                     len(network) / 12])  # fmt: skip
    return np.array(rows, dtype=float)


def layer_list(network: Network, in_channels: int, classes: int) -> list[dict[str, Any]]:
    """The e2sim ``model.layers`` of ``network`` with its head."""
    layers: list[dict[str, Any]] = []
    width = widths(network, in_channels)
    for t, u in enumerate(network):
        if u.kind == "conv":
            layers += [{"type": "conv", "out_channels": u.channels, "kernel": u.kernel, "stride": u.stride,
                        "padding": u.kernel // 2, "bias": False}, {"type": "batchnorm"}, {"type": "relu"}]  # fmt: skip
        elif u.kind == "block":
            change = u.stride != 1 or width[t] != u.channels
            layers.append({"type": "basic_block", "out_channels": u.channels, "stride": u.stride,
                           **({"shortcut": "projection"} if change else {})})  # fmt: skip
        else:
            layers.append({"type": "maxpool", "kernel": 2})
    return [*layers, {"type": "global_avgpool"}, {"type": "flatten"}, {"type": "linear", "out_features": classes}]


def network_key(network: Network) -> str:
    """A short hash of the architecture (children are deduplicated by it)."""
    text = json.dumps([asdict(u) for u in network], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def network_of(layers: Sequence[Mapping[str, Any]], source: str) -> Network:
    """The units of a seed workload's ``model.layers`` (conv-batchnorm-relu triples, basic blocks,
    2×2 max pools, then the head); anything else is an error naming the layer."""
    units, i = [], 0
    body = list(layers)
    head = [layer.get("type") for layer in body[-3:]]
    if head != ["global_avgpool", "flatten", "linear"]:
        raise SpecError.single(source, "model.layers", "a RENA seed ends with global_avgpool, flatten, linear")
    body = body[:-3]
    while i < len(body):
        layer = body[i]
        kind = layer.get("type")
        if kind == "conv" and [x.get("type") for x in body[i + 1 : i + 3]] == ["batchnorm", "relu"]:
            kernel = layer["kernel"]
            kernel = kernel if isinstance(kernel, int) else kernel[0]
            units.append(Unit("conv", layer["out_channels"], kernel, layer.get("stride", 1)))
            i += 3
        elif kind == "basic_block":
            units.append(Unit("block", layer["out_channels"], 3, layer.get("stride", 1)))
            i += 1
        elif kind == "maxpool" and layer.get("kernel", 2) in (2, [2, 2]):
            units.append(Unit("pool"))
            i += 1
        else:
            raise SpecError.single(source, f"model.layers[{i}]", f"{kind} is not a RENA unit (conv-batchnorm-relu, "
                                   "basic_block, maxpool 2)")  # fmt: skip
    return tuple(units)
