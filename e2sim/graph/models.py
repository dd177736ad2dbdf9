"""Model zoo and explicit layer lists -> :class:`Model` (layer IR with shapes)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cached_property

from e2sim.config.errors import SpecError
from e2sim.config.workload import LayerSpec, ModelSpec, Workload
from e2sim.graph.layers import (
    INPUT,
    Add,
    AvgPool,
    BatchNorm,
    Conv2d,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Layer,
    Linear,
    MaxPool,
    ReLU,
    Shape,
    ShapeError,
    SoftmaxCrossEntropy,
    ZeroPadShortcut,
    feature_map,
    format_shape,
    numel,
    window_output,
)

VGG_CONFIGS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


@dataclass(frozen=True)
class Model:
    """A CNN as layers in topological order; the last layer is the loss."""

    name: str
    input_shape: Shape
    num_classes: int
    layers: tuple[Layer, ...]

    @property
    def parameters(self) -> int:
        return sum(numel(shape) for layer in self.layers for _, shape in layer.params())

    @cached_property
    def _by_name(self) -> dict[str, Layer]:
        return {layer.name: layer for layer in self.layers}

    def layer(self, name: str) -> Layer:
        return self._by_name[name]


class ModelBuilder:
    """Appends layers with shape inference; a shape problem is a SpecError at the spec path given."""

    def __init__(self, input_shape: Shape, source: str):
        self.source = source
        self.layers: list[Layer] = []
        self.shapes: dict[str, Shape] = {INPUT: input_shape}
        self.names: set[str] = {INPUT}
        self.auto_names: Counter[str] = Counter()

    def fail(self, path: str, message: str) -> SpecError:
        return SpecError.single(self.source, path, message)

    def name_for(self, kind: str, name: str | None, prefix: str, path: str) -> str:
        if name is None:
            self.auto_names[prefix + kind] += 1
            name = f"{kind}{self.auto_names[prefix + kind]}"
        full = prefix + name
        if full in self.names:
            raise self.fail(path, f"layer name '{full}' is used twice")
        self.names.add(full)
        return full

    def append(self, cls: type[Layer], name: str, inputs: tuple[str, ...], path: str, **attrs) -> str:
        in_shapes = tuple(self.shapes[i] for i in inputs)
        try:
            out_shape = _infer_shape(cls, in_shapes, attrs)
        except ShapeError as exc:
            raise self.fail(path, f"layer '{name}': {exc}") from None
        self.layers.append(cls(name=name, inputs=inputs, in_shapes=in_shapes, out_shape=out_shape, **attrs))
        self.shapes[name] = out_shape
        return name

    # -- composite blocks ------------------------------------------------------------------------
    def basic_block(self, x: str, name: str, out_channels: int, stride: int, shortcut: str, path: str) -> str:
        """ResNet basic block: 3×3 conv-BN-ReLU, 3×3 conv-BN, + shortcut, ReLU."""
        in_channels = self.shapes[x][0] if len(self.shapes[x]) == 3 else None
        y = self.append(Conv2d, f"{name}.conv1", (x,), path, **conv3x3(out_channels, stride))
        y = self.append(BatchNorm, f"{name}.bn1", (y,), path, eps=1e-5)
        y = self.append(ReLU, f"{name}.relu1", (y,), path)
        y = self.append(Conv2d, f"{name}.conv2", (y,), path, **conv3x3(out_channels, 1))
        y = self.append(BatchNorm, f"{name}.bn2", (y,), path, eps=1e-5)
        if stride == 1 and in_channels == out_channels:
            short = x
        elif shortcut == "zero_pad":
            if in_channels is not None and out_channels < in_channels:
                raise self.fail(path, f"zero_pad shortcut cannot reduce {in_channels} to {out_channels} channels")
            short = self.append(
                ZeroPadShortcut, f"{name}.shortcut", (x,), path, stride=stride, out_channels=out_channels
            )
        else:
            conv = dict(out_channels=out_channels, kernel=(1, 1), stride=stride, padding=(0, 0), bias=False)
            short = self.append(Conv2d, f"{name}.shortcut_conv", (x,), path, **conv)
            short = self.append(BatchNorm, f"{name}.shortcut_bn", (short,), path, eps=1e-5)
        y = self.append(Add, f"{name}.add", (y, short), path)
        return self.append(ReLU, f"{name}.relu2", (y,), path)

    def layer_list(self, x: str, specs: tuple[LayerSpec, ...], prefix: str) -> str:
        for spec in specs:
            x = self.layer_from_spec(x, spec, prefix)
        return x

    def layer_from_spec(self, x: str, spec: LayerSpec, prefix: str) -> str:
        name = self.name_for(_AUTO_NAMES.get(spec.type, spec.type), spec.name, prefix, spec.path)
        a = dict(spec.attrs)
        if spec.type == "basic_block":
            return self.basic_block(x, name, a["out_channels"], a["stride"], a["shortcut"], spec.path)
        if spec.type == "residual":
            body = self.layer_list(x, spec.body, name + ".")
            short = self.layer_list(x, spec.shortcut, name + ".shortcut.") if spec.shortcut else x
            if self.shapes[body] != self.shapes[short]:
                raise self.fail(
                    spec.path,
                    f"residual body gives {format_shape(self.shapes[body])} but the shortcut gives "
                    f"{format_shape(self.shapes[short])}; give a shortcut list that matches",
                )
            return self.append(Add, f"{name}.add", (body, short), spec.path)
        if spec.type in ("maxpool", "avgpool") and a["stride"] is None:
            a["stride"] = a["kernel"][0]
        return self.append(_SPEC_LAYERS[spec.type], name, (x,), spec.path, **a)

    def finish(self, x: str, name: str, num_classes: int, path: str, loss: str = "loss") -> Model:
        if self.shapes[x] != (num_classes,):
            raise self.fail(
                path,
                f"the model's output is {format_shape(self.shapes[x])} but the dataset has "
                f"{num_classes} classes (the last layer must give {num_classes} features)",
            )
        self.append(SoftmaxCrossEntropy, loss, (x,), path, num_classes=num_classes)
        return Model(name, self.shapes[INPUT], num_classes, tuple(self.layers))


_SPEC_LAYERS: dict[str, type[Layer]] = {
    "conv": Conv2d,
    "linear": Linear,
    "batchnorm": BatchNorm,
    "relu": ReLU,
    "maxpool": MaxPool,
    "avgpool": AvgPool,
    "global_avgpool": GlobalAvgPool,
    "flatten": Flatten,
    "dropout": Dropout,
}
_AUTO_NAMES = {"batchnorm": "bn", "global_avgpool": "gap", "basic_block": "block", "linear": "fc"}


def conv3x3(out_channels: int, stride: int) -> dict:
    return dict(out_channels=out_channels, kernel=(3, 3), stride=stride, padding=(1, 1), bias=False)


def _infer_shape(cls: type[Layer], in_shapes: tuple[Shape, ...], a: dict) -> Shape:
    """Per-sample output shape of layer ``cls`` with attributes ``a``; ShapeError if it does not apply."""
    x = in_shapes[0]
    if cls in (Conv2d, MaxPool, AvgPool):
        c, h, w = feature_map(x, cls.kind)
        what = "kernel" if cls is Conv2d else "window"
        groups, dilation = a.get("groups", 1), a.get("dilation", 1)
        if cls is Conv2d and (c % groups or a["out_channels"] % groups):
            raise ShapeError(f"groups {groups} must divide the input channels ({c}) and out_channels "
                             f"({a['out_channels']})")  # fmt: skip
        span_h, span_w = (dilation * (k - 1) + 1 for k in a["kernel"])
        what = f"kernel {a['kernel'][0]}×{a['kernel'][1]} dilated by {dilation} spans" if dilation > 1 else what
        p = window_output(h, span_h, a["stride"], a["padding"][0], what)
        q = window_output(w, span_w, a["stride"], a["padding"][1], what)
        if cls is not Conv2d and max(a["padding"]) * 2 > min(a["kernel"]):
            raise ShapeError("padding must be at most half the window")
        return (a["out_channels"] if cls is Conv2d else c, p, q)
    if cls is Linear:
        if len(x) != 1:
            raise ShapeError(f"linear needs a flat input, got {format_shape(x)}; add a flatten layer first")
        return (a["out_features"],)
    if cls is BatchNorm:
        if len(x) not in (1, 3):
            raise ShapeError(f"batchnorm needs a C×H×W or flat input, got {format_shape(x)}")
        return x
    if cls is GlobalAvgPool:
        return (feature_map(x, "global_avgpool")[0],)
    if cls is Flatten:
        return (numel(x),)
    if cls is Dropout:
        return x
    if cls is ZeroPadShortcut:
        c, h, w = feature_map(x, "zero_pad shortcut")
        return (a["out_channels"], -(-h // a["stride"]), -(-w // a["stride"]))
    if cls is Add:
        if len(set(in_shapes)) != 1:
            raise ShapeError(f"cannot add {' and '.join(format_shape(s) for s in in_shapes)}")
        return x
    if cls is SoftmaxCrossEntropy:
        return ()
    if cls is ReLU:
        return x
    raise AssertionError(f"no shape rule for {cls.__name__}")


def build_model(workload: Workload) -> Model:
    """The layer IR of the workload's model for its dataset's input shape and classes."""
    info = workload.dataset.info
    spec: ModelSpec = workload.model
    b = ModelBuilder(info.input_shape, workload.source)
    if spec.arch == "lenet5":
        return _lenet5(b, info.num_classes)
    if spec.arch == "resnet":
        return _resnet(b, spec, info.num_classes)
    if spec.arch == "vgg":
        return _vgg(b, spec, info.num_classes)
    last = spec.layers[-1].path if spec.layers else "model.layers"
    x = b.layer_list(INPUT, spec.layers, "")
    return b.finish(x, "layer list", info.num_classes, last)


def _lenet5(b: ModelBuilder, num_classes: int) -> Model:
    """LeNet-5 with ReLU and max pooling: conv5×5(6, pad 2), pool, conv5×5(16), pool, fc120, fc84, fc."""
    path = "model"
    x = b.append(Conv2d, "conv1", (INPUT,), path, out_channels=6, kernel=(5, 5), stride=1, padding=(2, 2), bias=True)
    x = b.append(ReLU, "relu1", (x,), path)
    x = b.append(MaxPool, "pool1", (x,), path, kernel=(2, 2), stride=2, padding=(0, 0))
    x = b.append(Conv2d, "conv2", (x,), path, out_channels=16, kernel=(5, 5), stride=1, padding=(0, 0), bias=True)
    x = b.append(ReLU, "relu2", (x,), path)
    x = b.append(MaxPool, "pool2", (x,), path, kernel=(2, 2), stride=2, padding=(0, 0))
    x = b.append(Flatten, "flatten", (x,), path)
    for i, width in enumerate((120, 84), start=1):
        x = b.append(Linear, f"fc{i}", (x,), path, out_features=width, bias=True)
        x = b.append(ReLU, f"relu{i + 2}", (x,), path)
    x = b.append(Linear, "fc3", (x,), path, out_features=num_classes, bias=True)
    return b.finish(x, "LeNet-5", num_classes, path)


def _resnet(b: ModelBuilder, spec: ModelSpec, num_classes: int) -> Model:
    """CIFAR ResNet-(6n+2) (He et al. 2016, §4.2): three stages of n basic blocks, widths w, 2w, 4w."""
    path = "model"
    n = (spec.depth - 2) // 6
    width = spec.base_channels
    x = b.append(Conv2d, "conv1", (INPUT,), path, **conv3x3(width, 1))
    x = b.append(BatchNorm, "bn1", (x,), path, eps=1e-5)
    x = b.append(ReLU, "relu1", (x,), path)
    for stage in range(3):
        for block in range(n):
            stride = 2 if stage > 0 and block == 0 else 1
            x = b.basic_block(x, f"layer{stage + 1}.{block}", width << stage, stride, spec.shortcut, path)
    x = b.append(GlobalAvgPool, "pool", (x,), path)
    x = b.append(Linear, "fc", (x,), path, out_features=num_classes, bias=True)
    suffix = " (projection shortcuts)" if spec.shortcut == "projection" else ""
    return b.finish(x, f"ResNet-{spec.depth}{suffix}", num_classes, path)


def _vgg(b: ModelBuilder, spec: ModelSpec, num_classes: int) -> Model:
    """CIFAR VGG: 3×3 convs (+BN) and ReLU, 2×2 max pools, then one linear classifier."""
    path = "model"
    x = INPUT
    conv_index = pool_index = 0
    for item in VGG_CONFIGS[spec.depth]:
        if item == "M":
            pool_index += 1
            x = b.append(MaxPool, f"pool{pool_index}", (x,), path, kernel=(2, 2), stride=2, padding=(0, 0))
            continue
        conv_index += 1
        conv = dict(out_channels=item, kernel=(3, 3), stride=1, padding=(1, 1), bias=not spec.batchnorm)
        x = b.append(Conv2d, f"conv{conv_index}", (x,), path, **conv)
        if spec.batchnorm:
            x = b.append(BatchNorm, f"bn{conv_index}", (x,), path, eps=1e-5)
        x = b.append(ReLU, f"relu{conv_index}", (x,), path)
    x = b.append(Flatten, "flatten", (x,), path)
    x = b.append(Linear, "fc", (x,), path, out_features=num_classes, bias=True)
    return b.finish(x, f"VGG-{spec.depth}", num_classes, path)
