"""ONNX models as workloads (``model: {onnx: PATH}``), built here with onnx.helper: the same MACs
and parameters as e2sim's own models, training from them, and one-line errors for bad files."""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import e2sim  # noqa: E402
from e2sim.config.errors import SpecError  # noqa: E402

DATA = Path(__file__).parent / "data"


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
             group: int = 1, dilation: int = 1) -> str:  # fmt: skip
        inputs = [x, self.weight((cout, cin // group, k, k))] + ([self.weight((cout,))] if bias else [])
        return self.node("Conv", inputs, kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, group=group,
                         dilations=[dilation, dilation])  # fmt: skip

    def bn(self, x: str, c: int) -> str:
        return self.node("BatchNormalization", [x, *(self.weight((c,)) for _ in range(4))], epsilon=1e-5)

    def stages(self, x: str, cin: int, widths, blocks: int) -> str:
        """Stages of basic blocks (the first of each later stage strided), projection shortcuts
        where the shape changes; then global pooling and flatten."""
        for stage, width in enumerate(widths):
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                y = self.node("Relu", [self.bn(self.conv(x, cin, width, 3, stride, 1), width)])
                y = self.bn(self.conv(y, width, width, 3, 1, 1), width)
                shortcut = x if stride == 1 and cin == width else self.bn(self.conv(x, cin, width, 1, stride), width)
                x = self.node("Relu", [self.node("Add", [y, shortcut])])
                cin = width
        return self.node("Flatten", [self.node("GlobalAveragePool", [x])], axis=1)

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
    x = b.stages(x, 16, (16, 32, 64), n)
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
    uneven = tmp_path / "uneven.onnx"
    b = Builder(3, 32)
    g = b.node("Conv", ["input", b.weight((6, 3, 3, 3))], kernel_shape=[3, 3], dilations=[1, 2])
    b.model(b.node("Gemm", [b.node("Flatten", [g], axis=1), b.weight((10, 5040))], transB=1), 10, uneven)
    with pytest.raises(SpecError, match=r"dilations \[1, 2\]: only equal dilations are supported"):
        e2sim.lower(workload(tmp_path, uneven, "cifar10"))


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


def resnet18(path):
    """ResNet-18 for ImageNet: 7×7/2 stem and 3×3/2 max pool, four stages of two basic blocks
    (64, 128, 256, 512 channels), projection shortcuts where the shape changes, 1000 classes."""
    b = Builder(3, 224)
    x = b.node("Relu", [b.bn(b.conv("input", 3, 64, 7, 2, 3), 64)])
    x = b.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    x = b.stages(x, 64, (64, 128, 256, 512), 2)
    return b.model(b.node("Gemm", [x, b.weight((1000, 512)), b.weight((1000,))], transB=1), 1000, path)


def synthetic_workload(tmp_path, onnx_file, shape, classes, batch=2, **model):
    path = tmp_path / f"{onnx_file.stem}.yaml"
    data = {"name": "synthetic", "input_shape": list(shape), "num_classes": classes, "train_samples": batch,
            "test_samples": batch}
    path.write_text(yaml.safe_dump({"name": onnx_file.stem, "dataset": data,
                                    "model": {"onnx": onnx_file.name, **model},
                                    "training": {"batch_size": batch, "epochs": 1, "lr": 0.01}}))  # fmt: skip
    return path


def test_resnet18_from_onnx_has_the_usual_macs_and_trains_one_iteration(tmp_path):
    path = synthetic_workload(tmp_path, resnet18(tmp_path / "resnet18.onnx"), (3, 224, 224), 1000)
    graph = e2sim.lower(path, batch_size=1)
    assert abs(graph.macs("fwd") / 1.81e9 - 1) < 0.01, graph.macs("fwd")  # the usual 1.8 G multiply-adds
    assert parameters(graph) == 11_689_512  # torchvision's resnet18 (BN running statistics not counted)
    result = e2sim.train_workload(path, epochs=1, progress=False)
    assert result.iterations == 1 and np.isfinite(result.epochs[0].train_loss)


def mobilenet(path, dropout=0.2):
    """MobileNet-style CIFAR network: 3×3 stem, five depthwise-separable blocks, dropout, classifier."""
    b = Builder(3, 32)
    x = b.node("Relu", [b.bn(b.conv("input", 3, 32, 3, 1, 1), 32)])
    cin = 32
    for cout, stride in ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1)):
        x = b.node("Relu", [b.bn(b.conv(x, cin, cin, 3, stride, 1, group=cin), cin)])  # depthwise
        x = b.node("Relu", [b.bn(b.conv(x, cin, cout, 1), cout)])  # pointwise
        cin = cout
    x = b.node("Flatten", [b.node("GlobalAveragePool", [x])], axis=1)
    ratio = numpy_helper.from_array(np.array(dropout, np.float32), "ratio")
    b.inits.append(ratio)
    x = b.node("Dropout", [x, "ratio"])
    return b.model(b.node("Gemm", [x, b.weight((10, 256)), b.weight((10,))], transB=1), 10, path)


def test_a_mobilenet_style_network_imports_with_its_hand_counted_macs_and_trains(tmp_path):
    path = synthetic_workload(tmp_path, mobilenet(tmp_path / "mobilenet.onnx"), (3, 32, 32), 10, batch=4)
    graph = e2sim.lower(path, batch_size=1)
    # by hand, per image: stem 32·32·32·3·9; each block: depthwise C·P²·9, pointwise C·C'·P²
    stem = 32 * 32 * 32 * 3 * 9
    blocks = [(32, 64, 32), (64, 128, 16), (128, 128, 16), (128, 256, 8), (256, 256, 8)]  # C, C', P
    separable = sum(c * p * p * 9 + c * cout * p * p for c, cout, p in blocks)
    assert graph.macs("fwd") == stem + separable + 256 * 10
    assert graph.macs("bwd_weight") == graph.macs("fwd")
    depthwise = [op for op in graph.model_ops if op.kind == "conv" and op.conv.groups > 1]
    assert len(depthwise) == 15 and all(op.conv.groups == op.conv.c == op.conv.k for op in depthwise)
    assert [layer.kind for layer in graph.model.layers].count("dropout") == 1
    result = e2sim.train_workload(path, epochs=1, progress=False)
    assert result.iterations == 1 and np.isfinite(result.epochs[0].train_loss)
    counts = result.counts.ops
    assert counts["conv2.fwd"].total_macs == 32 * 32 * 32 * 9 * 4  # the first depthwise conv, batch 4, as it ran
    estimate = e2sim.estimate(path, "eyeriss")  # and it prices on a row-stationary array
    assert estimate.energy_j > 0


@pytest.mark.parametrize("name", ["torch_lenet5", "torch_mobilenet_tiny"])
def test_models_exported_by_torch_import_with_their_weights_and_give_torchs_logits(tmp_path, name):
    from e2sim.graph import lower
    from e2sim.train.engine import GraphExecutor, init_state
    from e2sim.train.loop import load_onnx_weights

    folder = Path(os.environ["E2SIM_TORCH_EXPORTS"]) if os.environ.get("E2SIM_TORCH_EXPORTS") else DATA
    onnx_file, recorded = folder / f"{name}.onnx", np.load(folder / f"{name}.npz")
    shape = recorded["x"].shape[1:]
    target = tmp_path / onnx_file.name
    target.write_bytes(onnx_file.read_bytes())
    path = synthetic_workload(tmp_path, target, shape, 10, weights="onnx")
    work = e2sim.load_workload(path)
    graph = lower(work, batch_size=4)
    state = init_state(graph, 0)
    load_onnx_weights(state, graph, work)
    logits = GraphExecutor(graph, None, 0.0, 0.0).predict(state, recorded["x"])
    np.testing.assert_allclose(logits, recorded["y"], rtol=1e-4, atol=1e-4)
    if name == "torch_lenet5":  # the zoo's LeNet-5: same MACs and parameters
        zoo = e2sim.lower({"name": "zoo", "dataset": {"name": "mnist5k"}, "model": {"arch": "lenet5"},
                           "training": {"batch_size": 4, "epochs": 1, "lr": 0.05}})  # fmt: skip
        assert graph.macs("fwd") == zoo.macs("fwd") and parameters(graph) == parameters(zoo) == 61_706
    result = e2sim.train_workload(path, epochs=1, progress=False)  # training starts from torch's weights
    assert result.iterations == 1


def test_models_exported_by_torch_in_this_run_match_the_recorded_ones(tmp_path):
    """Live: export afresh with the torch of E2SIM_TORCH_PYTHON (CI installs one when it can) and
    check the imports against torch's logits of that export."""
    python = os.environ.get("E2SIM_TORCH_PYTHON")
    if not python:
        pytest.skip("E2SIM_TORCH_PYTHON is not set (the recorded exports in tests/data are checked above)")
    subprocess.run([python, str(DATA / "torch_models.py"), str(tmp_path)], check=True, capture_output=True,
                   timeout=600)  # fmt: skip
    for name in ("torch_lenet5", "torch_mobilenet_tiny"):
        os.environ["E2SIM_TORCH_EXPORTS"] = str(tmp_path)
        (tmp_path / name).mkdir()
        try:
            test_models_exported_by_torch_import_with_their_weights_and_give_torchs_logits(tmp_path / name, name)
        finally:
            del os.environ["E2SIM_TORCH_EXPORTS"]


def test_weights_onnx_loads_every_initializer_and_refuses_a_changed_file(tmp_path):
    from e2sim.graph import lower
    from e2sim.train.engine import init_state
    from e2sim.train.loop import load_onnx_weights

    onnx_file = cifar_resnet(tmp_path / "resnet8.onnx", n=1)
    model = onnx.load(str(onnx_file))
    for init in model.graph.initializer:  # distinct values, so a misplaced array shows
        values = np.random.default_rng(len(init.name)).standard_normal(tuple(init.dims)).astype(np.float32)
        init.CopyFrom(numpy_helper.from_array(np.abs(values) + 0.1 if "w" in init.name else values, init.name))
    onnx.save(model, str(onnx_file))
    path = synthetic_workload(tmp_path, onnx_file, (3, 32, 32), 10, weights="onnx")
    work = e2sim.load_workload(path)
    graph = lower(work, batch_size=2)
    state = init_state(graph, 0)
    load_onnx_weights(state, graph, work)
    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    conv_weights = [a for name, a in arrays.items() if a.ndim == 4]
    model_convs = [state.arrays[f"{layer.name}.w"] for layer in graph.model.layers if layer.kind == "conv"]
    assert len(conv_weights) == len(model_convs) == 9
    for got in model_convs:
        assert any(got.shape == a.shape and np.array_equal(got, a) for a in conv_weights)
    fc = next(layer.name for layer in graph.model.layers if layer.kind == "linear")
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    np.testing.assert_array_equal(state.arrays[f"{fc}.w"], arrays[gemm.input[1]])
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    first_bn = next(layer.name for layer in graph.model.layers if layer.kind == "batchnorm")
    np.testing.assert_array_equal(state.arrays[f"{first_bn}.running_stats"],
                                  np.stack([arrays[bn.input[3]], arrays[bn.input[4]]]))  # fmt: skip
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\0")
    with pytest.raises(SpecError, match="changed since the workload was read"):
        load_onnx_weights(init_state(graph, 0), graph, work)


def test_bad_onnx_files_on_the_command_line_are_one_line_and_exit_2(tmp_path, capsys):
    from e2sim.cli.main import main

    good = lenet5(tmp_path / "good.onnx")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[:500])
    b = Builder(1, 28)
    b.input = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, "H", "W"])
    dynamic = b.model(b.node("Gemm", [b.node("Flatten", ["input"], axis=1), b.weight((10, 784))], transB=1), 10,
                      tmp_path / "dynamic.onnx")  # fmt: skip
    b = Builder(1, 28)
    sigmoid = b.model(b.node("Gemm", [b.node("Flatten", [b.node("Sigmoid", ["input"])], axis=1), b.weight((10, 784))],
                                     transB=1), 10, tmp_path / "sigmoid.onnx")  # fmt: skip
    cases = {truncated: "cannot be read as an ONNX model", dynamic: "needs a fixed N x C x H x W input size",
             sigmoid: "Sigmoid (inputs input): op not supported"}  # fmt: skip
    for path, message in cases.items():
        for command in (["lower", str(path)], ["estimate", str(path), "--hw", "eyeriss"]):
            code = main(command)
            out, err = capsys.readouterr()
            assert code == 2 and out == "" and err.count("\n") == 1 and message in err, (command, err)


def test_onnx_pools_and_reshapes_e2sim_cannot_match_are_refused(tmp_path):
    def net(name, node):
        b = Builder(1, 28)
        x = node(b)
        return b.model(b.node("Gemm", [b.node("Flatten", [x], axis=1), b.weight((10, 196))], transB=1), 10,
                       tmp_path / f"{name}.onnx")  # fmt: skip

    cases = {
        net("ceil", lambda b: b.node("MaxPool", ["input"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)):
            "ceil_mode=1 is not supported",
        net("avg", lambda b: b.node("AveragePool", ["input"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)):
            "count_include_pad=0 with padding is not supported",
        net("flat", lambda b: b.node("Flatten", [b.node("Relu", ["input"])], axis=2)):
            r"axis 2: only Flatten\(axis=1\)",
    }  # fmt: skip
    for path, message in cases.items():
        with pytest.raises(SpecError, match=message):
            e2sim.lower(workload(tmp_path, path))
    b = Builder(1, 28)  # a Reshape to (batch, features) by a constant imports as flatten
    shape = numpy_helper.from_array(np.array([-1, 784], np.int64), "shape")
    b.inits.append(shape)
    reshaped = b.model(b.node("Gemm", [b.node("Reshape", ["input", "shape"]), b.weight((10, 784))], transB=1), 10,
                       tmp_path / "reshape.onnx")  # fmt: skip
    assert e2sim.lower(workload(tmp_path, reshaped), batch_size=1).macs("fwd") == 7840
