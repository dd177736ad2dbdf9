"""The layer IR of a CNN: frozen layers with inferred per-sample shapes, in topological order.

Shapes are per sample: ``(C, H, W)`` for feature maps, ``(F,)`` for vectors, ``()`` for the loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

Shape = tuple[int, ...]
INPUT = "input"  # the name under which the data batch enters the model


class ShapeError(ValueError):
    """A layer cannot be applied to its input shape; the text says why."""


def numel(shape: Shape) -> int:
    return math.prod(shape)


def format_shape(shape: Shape) -> str:
    return "×".join(str(d) for d in shape) if shape else "scalar"


@dataclass(frozen=True, kw_only=True)
class Layer:
    """``inputs`` names the layers that feed this one (``INPUT`` for the data)."""

    name: str
    inputs: tuple[str, ...]
    in_shapes: tuple[Shape, ...]
    out_shape: Shape
    kind: ClassVar[str] = ""
    trainable: ClassVar[bool] = False

    def params(self) -> tuple[tuple[str, Shape], ...]:
        """Trainable parameter tensors as (short name, shape)."""
        return ()


@dataclass(frozen=True, kw_only=True)
class Conv2d(Layer):
    """``groups``: input channels and filters split into that many independent convolutions (each
    filter sees C/groups channels; depthwise: groups = C); ``dilation``: the kernel's taps are that
    many rows and columns apart (it spans dilation·(R − 1) + 1 rows)."""

    out_channels: int
    kernel: tuple[int, int]
    stride: int
    padding: tuple[int, int]
    bias: bool
    groups: int = 1
    dilation: int = 1
    kind: ClassVar[str] = "conv"
    trainable: ClassVar[bool] = True

    def params(self) -> tuple[tuple[str, Shape], ...]:
        weight = ("w", (self.out_channels, self.in_shapes[0][0] // self.groups, *self.kernel))
        return (weight, ("b", (self.out_channels,))) if self.bias else (weight,)


@dataclass(frozen=True, kw_only=True)
class Linear(Layer):
    out_features: int
    bias: bool
    kind: ClassVar[str] = "linear"
    trainable: ClassVar[bool] = True

    @property
    def in_features(self) -> int:
        return numel(self.in_shapes[0])

    def params(self) -> tuple[tuple[str, Shape], ...]:
        weight = ("w", (self.out_features, self.in_features))
        return (weight, ("b", (self.out_features,))) if self.bias else (weight,)


@dataclass(frozen=True, kw_only=True)
class BatchNorm(Layer):
    eps: float
    kind: ClassVar[str] = "batchnorm"
    trainable: ClassVar[bool] = True

    @property
    def channels(self) -> int:
        return self.in_shapes[0][0]

    def params(self) -> tuple[tuple[str, Shape], ...]:
        return (("gamma", (self.channels,)), ("beta", (self.channels,)))


@dataclass(frozen=True, kw_only=True)
class ReLU(Layer):
    kind: ClassVar[str] = "relu"


@dataclass(frozen=True, kw_only=True)
class MaxPool(Layer):
    kernel: tuple[int, int]
    stride: int
    padding: tuple[int, int]
    kind: ClassVar[str] = "maxpool"


@dataclass(frozen=True, kw_only=True)
class AvgPool(Layer):
    kernel: tuple[int, int]
    stride: int
    padding: tuple[int, int]
    kind: ClassVar[str] = "avgpool"


@dataclass(frozen=True, kw_only=True)
class GlobalAvgPool(Layer):
    kind: ClassVar[str] = "global_avgpool"


@dataclass(frozen=True, kw_only=True)
class Dropout(Layer):
    """Inverted dropout while training: each element is kept with probability 1 − ``drop_probability``
    and scaled by 1 / (1 − drop_probability); the identity in evaluation."""

    drop_probability: float
    kind: ClassVar[str] = "dropout"


@dataclass(frozen=True, kw_only=True)
class Flatten(Layer):
    """A view: lowering emits no op for it (its consumers read its input tensor)."""

    kind: ClassVar[str] = "flatten"


@dataclass(frozen=True, kw_only=True)
class Add(Layer):
    """Element-wise sum of two inputs (the join of a residual block)."""

    kind: ClassVar[str] = "add"


@dataclass(frozen=True, kw_only=True)
class ZeroPadShortcut(Layer):
    """ResNet option-A shortcut: subsample by ``stride`` and zero-pad channels up to ``out_channels``."""

    stride: int
    out_channels: int
    kind: ClassVar[str] = "zero_pad_shortcut"


@dataclass(frozen=True, kw_only=True)
class SoftmaxCrossEntropy(Layer):
    """Softmax + mean cross-entropy over the batch; reads the labels as well as the logits."""

    num_classes: int
    kind: ClassVar[str] = "loss"


def window_output(size: int, kernel: int, stride: int, pad: int, what: str) -> int:
    """Output length of a sliding window (conv or pool) along one axis."""
    if size + 2 * pad < kernel:
        raise ShapeError(f"{what} {kernel} is larger than the padded input ({size} + 2×{pad})")
    return (size + 2 * pad - kernel) // stride + 1


def feature_map(shape: Shape, kind: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ShapeError(f"{kind} needs a C×H×W input, got {format_shape(shape)}")
    return shape  # type: ignore[return-value]
