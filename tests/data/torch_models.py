"""Export the torch models the ONNX tests import: ``python torch_models.py OUT_DIR`` writes, per
model, NAME.onnx (torch.onnx.export, eval mode) and NAME.npz with a fixed input batch ``x`` and
torch's logits ``y`` for it. Run with torch (and its onnx exporter) installed; tests/test_onnx.py
reads the files recorded here in tests/data and, when E2SIM_TORCH_PYTHON names a Python with
torch, exports them afresh and checks those too."""

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn


def lenet5() -> nn.Module:
    """LeNet-5 as e2sim's zoo builds it (same layer list)."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )  # fmt: skip


def separable(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(),
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]  # fmt: skip


def mobilenet_tiny() -> nn.Module:
    """A MobileNet-style CIFAR network: a 3×3 stem, depthwise-separable blocks, a dilated grouped
    conv, global pooling, dropout and the classifier."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        *separable(16, 32, 1), *separable(32, 64, 2), *separable(64, 64, 2),
        nn.Conv2d(64, 64, 3, 1, 2, dilation=2, groups=4, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, 10),
    )  # fmt: skip


MODELS = {"torch_lenet5": (lenet5, (1, 28, 28)), "torch_mobilenet_tiny": (mobilenet_tiny, (3, 32, 32))}


def export(out: Path) -> None:
    for name, (build, shape) in MODELS.items():
        torch.manual_seed(0)
        model = build()
        for module in model.modules():  # running statistics that are not the identity
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                nn.init.uniform_(module.weight, 0.5, 1.5)
                nn.init.uniform_(module.bias, -0.2, 0.2)
        model.eval()
        x = torch.from_numpy(np.random.default_rng(1).standard_normal((4, *shape)).astype(np.float32))
        with torch.no_grad():
            y = model(x)
        torch.onnx.export(model, x[:1], str(out / f"{name}.onnx"), dynamo=False, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}})  # fmt: skip
        np.savez(out / f"{name}.npz", x=x.numpy(), y=y.numpy())


if __name__ == "__main__":
    export(Path(sys.argv[1]))
