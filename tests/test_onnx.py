"""ONNX models as workloads (``model: {onnx: PATH}``), built here with onnx.helper: the same MACs
and parameters as e2sim's own models, training from them, and one-line errors for bad files."""

import numpy as np
import pytest
import yaml

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import e2sim  # noqa: E402
from e2sim.config.errors import SpecError  # noqa: E402


class Builder:
    """A sequential ONNX graph with residual adds; weights are random initializers."""

    def __init__(self, channels: int, size: int):
        self.nodes, self.inits, self.count = [], [], 0
        self.current, self.channels = "input", channels
        self.input = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", channels, size, size])

    def name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}{self.count}"

    def weight(self, shape) -> str:
        name = self.name("w")
        self.inits.append(numpy_helper.from_array(np.zeros(shape, np.float32), name))
        return name

    def node(self, op: str, inputs, **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, pad: int = 0, bias: bool = False,
             group: int = 1) -> str:  # fmt: skip
        inputs = [x, self.weight((cout, cin // group, k, k))] + ([self.weight((cout,))] if bias else [])
        return self.node("Conv", inputs, kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, group=group)

    def bn(self, x: str, c: int) -> str:
        return self.node("BatchNormalization", [x, *(self.weight((c,)) for _ in range(4))], epsilon=1e-5)

    def model(self, output: str, classes: int, path):
        out = helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", classes])
        graph = helper.make_graph(self.nodes, "net", [self.input], [out], self.inits)
        onnx.save(helper.make_model(graph), str(path))
        return path


def lenet5(path):
    b = Builder(1, 28)
    x = b.node("Relu", [b.conv("input", 1, 6, 5, pad=2, bias=True)])
    x = b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = b.node("Relu", [b.conv(x, 6, 16, 5, bias=True)])
    x = b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = b.node("Flatten", [x], axis=1)
    x = b.node("Relu", [b.node("Gemm", [x, b.weight((120, 400)), b.weight((120,))], transB=1)])
    x = b.node("Relu", [b.node("Add", [b.node("MatMul", [x, b.weight((120, 84))]), b.weight((84,))])])
    x = b.node("Gemm", [x, b.weight((10, 84)), b.weight((10,))], transB=1)
    return b.model(b.node("Softmax", [x], axis=1), 10, path)


def cifar_resnet(path, n: int = 3):
    """ResNet-(6n+2) for CIFAR with projection shortcuts (option B), as e2sim's zoo builds it."""
    b = Builder(3, 32)
    x = b.node("Relu", [b.bn(b.conv("input", 3, 16, 3, pad=1), 16)])
    cin = 16
    for stage, width in enumerate((16, 32, 64)):
        for block in range(n):
            stride = 2 if stage > 0 and block == 0 else 1
            y = b.node("Relu", [b.bn(b.conv(x, cin, width, 3, stride, 1), width)])
            y = b.bn(b.conv(y, width, width, 3, 1, 1), width)
            shortcut = x if stride == 1 and cin == width else b.bn(b.conv(x, cin, width, 1, stride), width)
            x = b.node("Relu", [b.node("Add", [y, shortcut])])
            cin = width
    x = b.node("Flatten", [b.node("GlobalAveragePool", [x])], axis=1)
    return b.model(b.node("Gemm", [x, b.weight((10, 64)), b.weight((10,))], transB=1), 10, path)


def workload(tmp_path, onnx_file, dataset="mnist5k", **training):
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump({"name": "from-onnx", "dataset": {"name": dataset},
                                    "model": {"onnx": onnx_file.name},
                                    "training": {"batch_size": 16, "epochs": 1, "lr": 0.05, **training}}))  # fmt: skip
    return path


def parameters(graph) -> int:
    names = {t for op in graph.model_ops for t in op.reads if graph.tensors[t].role in ("weight", "bias")}
    return sum(graph.tensors[t].numel for t in names)


def test_lenet5_from_onnx_equals_the_zoo_and_trains(tmp_path):
    path = workload(tmp_path, lenet5(tmp_path / "lenet5.onnx"))
    imported = e2sim.lower(path, batch_size=64)
    zoo = e2sim.lower({"name": "zoo", "dataset": {"name": "mnist5k"}, "model": {"arch": "lenet5"},
                       "training": {"batch_size": 64, "epochs": 1, "lr": 0.05}})  # fmt: skip
    for phase in ("fwd", "bwd_data", "bwd_weight"):
        assert imported.macs(phase) == zoo.macs(phase)
    assert parameters(imported) == parameters(zoo) == 61_706
    result = e2sim.train_workload(path, epochs=1, progress=False)
    assert result.iterations > 0 and result.final_test_accuracy is not None


def test_a_cifar_resnet_from_onnx_has_the_zoo_resnets_macs(tmp_path):
    onnx_file = cifar_resnet(tmp_path / "resnet20.onnx")
    imported = e2sim.lower(workload(tmp_path, onnx_file, "cifar10"), batch_size=8)
    zoo = e2sim.lower({"name": "zoo", "dataset": {"name": "cifar10"},
                       "model": {"arch": "resnet", "depth": 20, "shortcut": "projection"},
                       "training": {"batch_size": 8, "epochs": 1, "lr": 0.05}})  # fmt: skip
    assert imported.macs("fwd") == zoo.macs("fwd") and parameters(imported) == parameters(zoo)
    # ResNet-20 forward MACs per 32×32 image: 40,551,040 with zero-padded shortcuts (the lowering
    # notebook's count) plus two 1×1 projections of 131,072 MACs each
    assert imported.macs("fwd") // 8 == 40_551_040 + 2 * 131_072


def test_bad_onnx_files_are_one_line(tmp_path):
    good = lenet5(tmp_path / "good.onnx")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 3])
    b = Builder(2, 28)  # two input channels: MNIST has one
    g = b.conv("input", 2, 4, 3)
    two_channels = b.model(b.node("Gemm", [b.node("Flatten", [g], axis=1), b.weight((10, 2704))], transB=1), 10,
                           tmp_path / "two-channels.onnx")  # fmt: skip
    b = Builder(1, 28)
    odd = b.model(b.node("Gemm", [b.node("Flatten", [b.node("Sigmoid", ["input"])], axis=1), b.weight((10, 784))],
                                 transB=1), 10, tmp_path / "sigmoid.onnx")  # fmt: skip
    cases = {truncated: "cannot be read as an ONNX model",
             two_channels: "dimension 1 is 2, the dataset's inputs have 1",
             odd: "Sigmoid (inputs input): op not supported"}  # fmt: skip
    for onnx_file, message in cases.items():
        with pytest.raises(SpecError) as caught:
            e2sim.lower(workload(tmp_path, onnx_file))
        assert len(caught.value.problems) == 1 and message in str(caught.value), str(caught.value)
    cifar_grouped = tmp_path / "grouped3.onnx"
    b = Builder(3, 32)
    g = b.conv("input", 3, 6, 3, group=3)
    b.model(b.node("Gemm", [b.node("Flatten", [g], axis=1), b.weight((10, 5400))], transB=1), 10, cifar_grouped)
    with pytest.raises(SpecError, match=r"grouped convolution \(group=3\) is not supported"):
        e2sim.lower(workload(tmp_path, cifar_grouped, "cifar10"))


def test_an_onnx_file_given_on_its_own_picks_its_dataset(tmp_path):
    lenet = lenet5(tmp_path / "lenet5.onnx")
    graph = e2sim.lower(lenet)
    assert graph.batch_size == 64 and parameters(graph) == 61_706
    b = Builder(1, 28)
    b.input = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, "H", "W"])  # a dynamic input size
    dynamic = b.model(b.node("Gemm", [b.node("Flatten", ["input"], axis=1), b.weight((10, 784))], transB=1), 10,
                      tmp_path / "dynamic.onnx")  # fmt: skip
    with pytest.raises(SpecError, match="needs a fixed N x C x H x W input size"):
        e2sim.lower(dynamic)
    graph = e2sim.lower(workload(tmp_path, dynamic))  # a workload gives the size: its dataset's
    assert graph.macs("fwd") == 16 * 784 * 10
