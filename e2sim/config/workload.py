"""Workload specs (model, dataset, training recipe, precision, policy): YAML -> checked -> frozen objects."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from e2sim.config.errors import SpecError
from e2sim.config.frozen import FrozenDict
from e2sim.config.policy import PolicySpec, read_policy
from e2sim.config.precision import PrecisionSpec, read_precision
from e2sim.config.reader import (
    MISSING,
    Invalid,
    Pair,
    ProblemLog,
    Section,
    at_most,
    boolean,
    fraction_below_one,
    fraction_below_one_positive,
    non_negative_int,
    non_negative_number,
    one_of,
    positive_int,
    positive_number,
    string,
)


@dataclass(frozen=True)
class DatasetInfo:
    input_shape: tuple[int, int, int]  # (channels, height, width) of one sample
    num_classes: int
    embedded: bool  # ships with e2sim (no path needed)


DATASETS: Mapping[str, DatasetInfo] = FrozenDict(
    {
        "mnist5k": DatasetInfo((1, 28, 28), 10, embedded=True),
        "mnist": DatasetInfo((1, 28, 28), 10, embedded=False),
        "cifar10": DatasetInfo((3, 32, 32), 10, embedded=False),
        "cifar100": DatasetInfo((3, 32, 32), 100, embedded=False),
        "synthetic": DatasetInfo((0, 0, 0), 0, embedded=True),  # shape and classes from the spec
    }
)
MAX_SYNTHETIC_SIDE = 4096
MAX_RESNET_DEPTH = 2000  # ResNet-1202 is the deepest CIFAR ResNet published
RESNET_DEPTHS = f"6n+2 from 8 to {MAX_RESNET_DEPTH} (8, 20, 32, 44, 56, 74, 110, ...)"
VGG_DEPTHS = (11, 13, 16, 19)
SHORTCUTS = ("zero_pad", "projection")
SCHEDULES = ("constant", "step", "cosine")


@dataclass(frozen=True)
class SyntheticData:
    """Random images (standard normal, already normalised) with uniformly random labels, drawn from
    ``seed``: for the cost of models whose dataset e2sim does not read (ImageNet-sized inputs) and
    for smoke tests. Accuracy on it is chance."""

    input_shape: tuple[int, int, int]
    num_classes: int
    train_samples: int
    test_samples: int
    seed: int


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    path: str | None  # directory with the dataset files (not needed for embedded datasets)
    synthetic: SyntheticData | None = None

    @property
    def info(self) -> DatasetInfo:
        if self.synthetic is not None:
            return DatasetInfo(self.synthetic.input_shape, self.synthetic.num_classes, embedded=True)
        return DATASETS[self.name]


@dataclass(frozen=True)
class LayerSpec:
    """One entry of an explicit ``model.layers`` list; ``path`` is its key path, for error messages."""

    type: str
    path: str
    name: str | None
    attrs: Mapping[str, Any] = field(default_factory=dict)
    body: tuple[LayerSpec, ...] = ()  # residual: the main branch
    shortcut: tuple[LayerSpec, ...] = ()  # residual: the shortcut branch (empty = identity)


@dataclass(frozen=True)
class ModelSpec:
    """``arch`` is lenet5, resnet, vgg or layers (an explicit list in ``layers``)."""

    arch: str
    depth: int | None = None
    shortcut: str | None = None  # resnet: zero_pad (option A) or projection (option B)
    base_channels: int | None = None  # resnet: channels of the first stage
    batchnorm: bool | None = None  # vgg
    layers: tuple[LayerSpec, ...] = ()
    onnx_weights: str | None = None  # initial weights from this ONNX file (``weights: onnx``)
    onnx_weights_sha256: str | None = None  # its contents' digest (it keys checkpoints and caches)


@dataclass(frozen=True)
class TrainingSpec:
    batch_size: int
    epochs: int
    lr: float
    momentum: float
    weight_decay: float
    schedule: str
    lr_milestones_epochs: tuple[int, ...]
    lr_gamma: float
    seed: int


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    source: str  # the file it was read from, for error messages
    dataset: DatasetSpec
    model: ModelSpec
    training: TrainingSpec
    precision: PrecisionSpec
    policy: PolicySpec


def read_workload(data: Any, source: str, folder: Path | None = None) -> Workload:
    """Check a parsed workload document; raise SpecError listing every problem. ``folder``: where
    files it names (an ONNX model) are looked up (default: the working directory)."""
    log = ProblemLog(source)
    top = Section.of(data, "", log)
    if top is None:
        log.raise_if_any()
    name = top.read("name", string)
    description = top.read("description", string, default="")
    dataset = _read_dataset(top.section("dataset"))
    model = _read_model(top.section("model"), dataset, folder or Path.cwd())
    training = _read_training(top.section("training"))
    precision = read_precision(top.section("precision", default={}))
    policy = read_policy(top, "policy")
    top.finish()
    log.raise_if_any()
    return with_policy(Workload(name, description, source, dataset, model, training, precision, policy), policy)


def with_policy(workload: Workload, policy: PolicySpec) -> Workload:
    """``workload`` under ``policy``; a policy with its own precision (``eif+emp+q8``) sets the formats."""
    return replace(workload, policy=policy, precision=policy.precision or workload.precision)


def _read_dataset(s: Section | None) -> DatasetSpec | None:
    if s is None:
        return None
    name = s.read("name", one_of(*DATASETS))
    if name == "synthetic":
        shape = s.read_list("input_shape", at_most(positive_int, MAX_SYNTHETIC_SIDE), length=3)
        classes = s.read("num_classes", at_most(positive_int, 1_000_000))
        train = s.read("train_samples", at_most(positive_int, 1 << 24), default=256)
        test = s.read("test_samples", at_most(positive_int, 1 << 24), default=64)
        seed = s.read("seed", at_most(non_negative_int, 2**63 - 1), default=0)
        s.finish(" for name synthetic")
        if classes is not None and classes < 2:
            s.log.add(s.key_path("num_classes"), "must be at least 2")
        if shape is None or classes is None or classes < 2:
            return None
        return DatasetSpec(name, None, SyntheticData(shape, classes, train, test, seed))
    path = s.read("path", string, default=None)
    s.finish()
    return DatasetSpec(name, path)


def _read_model(s: Section | None, dataset: DatasetSpec | None, folder: Path) -> ModelSpec | None:
    if s is None:
        return None
    if s.has("onnx") and not s.has("arch"):
        path = s.read("onnx", string)
        weights = s.read("weights", one_of("init", "onnx"), default="init")
        s.finish(" with onnx")
        if path is None or dataset is None:
            return None
        from e2sim.config.onnx_model import read_onnx_layers

        try:
            docs = read_onnx_layers(folder / path, s.log.source, dataset.info.input_shape)
        except SpecError as exc:
            s.log.problems.extend(exc.problems)
            return None
        layers = _read_layer_list(Section({"layers": docs}, s.path, s.log), "layers")
        if weights != "onnx":
            return ModelSpec("layers", layers=layers or ())
        full = (folder / path).resolve()
        digest = hashlib.sha256(full.read_bytes()).hexdigest()
        return ModelSpec("layers", layers=layers or (), onnx_weights=str(full), onnx_weights_sha256=digest)
    if s.has("layers") and not s.has("arch"):
        layers = _read_layer_list(s, "layers")
        s.finish(" with layers")
        return ModelSpec("layers", layers=layers or ())
    arch = s.read("arch", one_of("lenet5", "resnet", "vgg"))
    if arch is None:
        return None  # already reported; its other keys cannot be judged without it
    if arch == "resnet":
        depth = s.read("depth", _resnet_depth)
        shortcut = s.read("shortcut", one_of(*SHORTCUTS), default="zero_pad")
        base = s.read("base_channels", at_most(positive_int, 4096), default=16)
        s.finish(" for arch resnet")
        return ModelSpec("resnet", depth=depth, shortcut=shortcut, base_channels=base)
    if arch == "vgg":
        depth = s.read("depth", one_of(*VGG_DEPTHS), default=16)
        batchnorm = s.read("batchnorm", boolean, default=True)
        s.finish(" for arch vgg")
        return ModelSpec("vgg", depth=depth, batchnorm=batchnorm)
    s.finish(f" for arch {arch}")
    return ModelSpec(arch)


def _resnet_depth(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 8 <= value <= MAX_RESNET_DEPTH or (value - 2) % 6:
        raise Invalid(f"must be {RESNET_DEPTHS}")
    return value


_POOL_KEYS: dict[str, tuple[Callable | Pair, Any]] = {
    "kernel": (Pair(1), MISSING),
    "stride": (at_most(positive_int, 64), None),
    "padding": (Pair(0), (0, 0)),
}
LAYER_KEYS: Mapping[str, Mapping[str, tuple[Callable | Pair, Any]]] = FrozenDict(
    {
        "conv": {
            "out_channels": (at_most(positive_int, 65_536), MISSING),
            "kernel": (Pair(1), MISSING),
            "stride": (at_most(positive_int, 64), 1),
            "padding": (Pair(0), (0, 0)),
            "bias": (boolean, True),
            "groups": (at_most(positive_int, 65_536), 1),
            "dilation": (at_most(positive_int, 64), 1),
        },
        "linear": {"out_features": (at_most(positive_int, 1 << 20), MISSING), "bias": (boolean, True)},
        "batchnorm": {"eps": (at_most(positive_number, 1), 1e-5)},
        "relu": {},
        "maxpool": _POOL_KEYS,
        "avgpool": _POOL_KEYS,
        "global_avgpool": {},
        "flatten": {},
        "dropout": {"drop_probability": (fraction_below_one, MISSING)},
        "basic_block": {
            "out_channels": (at_most(positive_int, 65_536), MISSING),
            "stride": (at_most(positive_int, 64), 1),
            "shortcut": (one_of(*SHORTCUTS), "zero_pad"),
        },
        "residual": {},  # body / shortcut are layer lists, read below
    }
)


def _read_layer_list(s: Section, key: str, default: Any = MISSING) -> tuple[LayerSpec, ...] | None:
    items = s.items(key, default)
    if items is None:
        return None
    layers = [_read_layer(path, item, s.log) for path, item in items]
    return tuple(layer for layer in layers if layer is not None)


def _read_layer(path: str, item: Any, log: ProblemLog) -> LayerSpec | None:
    s = Section.of(item, path, log)
    if s is None:
        return None
    kind = s.read("type", one_of(*LAYER_KEYS))
    name = s.read("name", _layer_name, default=None)
    if kind is None:
        return None
    attrs = {
        key: s.read_pair(key, check.minimum, default) if isinstance(check, Pair) else s.read(key, check, default)
        for key, (check, default) in LAYER_KEYS[kind].items()
    }
    body: tuple[LayerSpec, ...] = ()
    shortcut: tuple[LayerSpec, ...] = ()
    if kind == "residual":
        body = _read_layer_list(s, "body") or ()
        shortcut = _read_layer_list(s, "shortcut", default=None) or ()
    s.finish(f" for type {kind}")
    return LayerSpec(kind, path, name, FrozenDict(attrs), body, shortcut)


def _layer_name(value: Any) -> str:
    if not isinstance(value, str) or not value or not all(c.isalnum() or c in "_-" for c in value):
        raise Invalid("must be a name of letters, digits, '_' or '-'")
    return value


def _read_training(s: Section | None) -> TrainingSpec | None:
    if s is None:
        return None
    batch_size = s.read("batch_size", at_most(positive_int, 65_536))
    epochs = s.read("epochs", at_most(positive_int, 100_000))
    lr = s.read("lr", at_most(positive_number, 1000))
    momentum = s.read("momentum", fraction_below_one, default=0.0)
    weight_decay = s.read("weight_decay", at_most(non_negative_number, 1), default=0.0)
    schedule = s.read("schedule", one_of(*SCHEDULES), default="constant")
    milestones: tuple[int, ...] = ()
    gamma = 0.1
    if schedule == "step":
        milestones = s.read_list("lr_milestones_epochs", at_most(positive_int, 100_000), check_all=_increasing) or ()
        gamma = s.read("lr_gamma", fraction_below_one_positive, default=0.1)
        if epochs and milestones and milestones[-1] >= epochs:
            s.log.add(s.key_path("lr_milestones_epochs"), f"milestones must be below epochs ({epochs})")
    seed = s.read("seed", at_most(non_negative_int, 2**63 - 1), default=0)
    s.finish(f" for schedule {schedule}" if schedule else "")
    return TrainingSpec(batch_size, epochs, lr, momentum, weight_decay, schedule, milestones, gamma, seed)


def _increasing(values: tuple[int, ...]) -> tuple[int, ...]:
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise Invalid("must be increasing")
    return values


def resolved_dict(value: Any) -> Any:
    """A checked spec (workload, its parts, a policy) as JSON-ready data: every default filled in,
    number formats by name, layer lists with their nested branches; no file names or key paths."""
    from e2sim.config.formats import NumberFormat

    if isinstance(value, NumberFormat):
        return value.name
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        skip = ("source", "path") if isinstance(value, LayerSpec) else ("source",)  # key paths, file names
        return {f.name: resolved_dict(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name not in skip}
    if isinstance(value, Mapping):
        return {str(k): resolved_dict(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [resolved_dict(v) for v in value]
    return value
