"""Model zoo: forward MACs per image against the usual published figures."""

import pytest
import yaml
from conftest import ROOT

import e2sim
from e2sim.config.workload import LAYER_KEYS
from e2sim.graph import build_model

BASE = {
    "name": "t",
    "dataset": {"name": "cifar10"},
    "training": {"batch_size": 1, "epochs": 1, "lr": 0.1},
}


def fwd_macs_by_layer(model_spec, dataset="cifar10"):
    graph = e2sim.lower({**BASE, "dataset": {"name": dataset}, "model": model_spec}, batch_size=1)
    return graph, {op.layer: op.macs for op in graph.ops if op.phase == "fwd" and op.macs}


def test_lenet5_matches_the_classic_counts():
    graph, by_layer = fwd_macs_by_layer({"arch": "lenet5"}, "mnist5k")
    assert by_layer == {"conv1": 117_600, "conv2": 240_000, "fc1": 48_000, "fc2": 10_080, "fc3": 840}
    assert graph.macs("fwd") == 416_520
    assert graph.model.parameters == 61_706


def test_resnet20_option_a_is_the_usual_40_55m():
    graph, _ = fwd_macs_by_layer({"arch": "resnet", "depth": 20})
    assert graph.macs("fwd") == 40_551_040  # 3×3 convs and the fc; zero-pad shortcuts have no MACs
    assert abs(graph.macs("fwd") / 40.6e6 - 1) < 0.02
    assert graph.model.parameters == 269_722  # the usual 0.27 M: convs, BN γ and β, and the fc


def test_resnet20_projection_adds_two_1x1_convs_and_their_bn():
    graph, _ = fwd_macs_by_layer({"arch": "resnet", "depth": 20, "shortcut": "projection"})
    assert graph.macs("fwd") == 40_551_040 + 2 * 131_072
    assert graph.model.parameters == 269_722 + (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_resnet110_within_two_percent_of_253m():
    zero_pad, _ = fwd_macs_by_layer({"arch": "resnet", "depth": 110})
    projection, by_layer = fwd_macs_by_layer({"arch": "resnet", "depth": 110, "shortcut": "projection"})
    assert zero_pad.macs("fwd") == 252_887_680
    # two 1×1 projections: 16->32 at 16×16 and 32->64 at 8×8, 131,072 MACs each
    assert projection.macs("fwd") - zero_pad.macs("fwd") == 2 * 131_072
    assert by_layer["layer2.0.shortcut_conv"] == by_layer["layer3.0.shortcut_conv"] == 131_072
    assert (zero_pad.model.parameters, projection.model.parameters) == (1_727_962, 1_730_714)
    for graph in (zero_pad, projection):
        assert abs(graph.macs("fwd") / 253e6 - 1) < 0.02


@pytest.mark.parametrize(("depth", "convs"), [(8, 7), (20, 19), (32, 31), (56, 55), (74, 73), (110, 109)])
def test_resnet_depths_have_6n_plus_1_convs(depth, convs):
    _, by_layer = fwd_macs_by_layer({"arch": "resnet", "depth": depth})
    assert sum(1 for layer in by_layer if "conv" in layer) == convs


def test_vgg16_cifar_counts():
    graph, by_layer = fwd_macs_by_layer({"arch": "vgg", "depth": 16})
    assert by_layer["conv1"] == 3 * 64 * 9 * 32 * 32
    assert by_layer["fc"] == 512 * 10
    assert graph.macs("fwd") == 313_201_664  # the usual 0.31 GMACs of CIFAR VGG-16
    # 14,728,266 in the common PyTorch CIFAR VGG-16, which also gives its convs biases (4,224)
    assert graph.model.parameters == 14_724_042


def test_explicit_layer_list_equals_the_zoo_model(tmp_path):
    lenet_as_list = {
        "layers": [
            {"type": "conv", "out_channels": 6, "kernel": 5, "padding": 2},
            {"type": "relu"},
            {"type": "maxpool", "kernel": 2},
            {"type": "conv", "out_channels": 16, "kernel": 5},
            {"type": "relu"},
            {"type": "maxpool", "kernel": 2},
            {"type": "flatten"},
            {"type": "linear", "out_features": 120},
            {"type": "relu"},
            {"type": "linear", "out_features": 84},
            {"type": "relu"},
            {"type": "linear", "out_features": 10},
        ]
    }
    listed, _ = fwd_macs_by_layer(lenet_as_list, "mnist5k")
    zoo, _ = fwd_macs_by_layer({"arch": "lenet5"}, "mnist5k")
    for phase in ("fwd", "bwd_data", "bwd_weight"):
        assert listed.macs(phase) == zoo.macs(phase)
    assert [op.kind for op in listed.ops] == [op.kind for op in zoo.ops]


def test_basic_block_in_a_list_equals_resnet_blocks():
    stem = [
        {"type": "conv", "out_channels": 16, "kernel": 3, "padding": 1, "bias": False},
        {"type": "batchnorm"},
        {"type": "relu"},
    ]
    blocks = [
        {"type": "basic_block", "out_channels": c, "stride": s, "shortcut": "projection"}
        for c, s in [(16, 1), (16, 1), (16, 1), (32, 2), (32, 1), (32, 1), (64, 2), (64, 1), (64, 1)]
    ]
    head = [{"type": "global_avgpool"}, {"type": "linear", "out_features": 10}]
    listed, _ = fwd_macs_by_layer({"layers": stem + blocks + head})
    zoo, _ = fwd_macs_by_layer({"arch": "resnet", "depth": 20, "shortcut": "projection"})
    assert listed.macs() == zoo.macs()
    assert listed.model.parameters == zoo.model.parameters


def test_generic_residual_and_shortcut_lists():
    spec = {
        "layers": [
            {"type": "conv", "out_channels": 8, "kernel": 3, "padding": 1},
            {
                "type": "residual",
                "name": "res",
                "body": [{"type": "conv", "out_channels": 16, "kernel": 3, "stride": 2, "padding": 1}],
                "shortcut": [{"type": "avgpool", "kernel": 2}, {"type": "conv", "out_channels": 16, "kernel": 1}],
            },
            {"type": "global_avgpool"},
            {"type": "linear", "out_features": 10},
        ]
    }
    graph, by_layer = fwd_macs_by_layer(spec, "mnist5k")
    assert by_layer["res.conv1"] == 16 * 8 * 9 * 14 * 14
    assert by_layer["res.shortcut.conv1"] == 16 * 8 * 14 * 14
    assert graph.model.layer("res.add").inputs == ("res.conv1", "res.shortcut.conv1")


def test_models_scale_to_the_dataset():
    mnist = build_model(
        e2sim.load_workload({**BASE, "dataset": {"name": "mnist"}, "model": {"arch": "resnet", "depth": 8}})
    )
    cifar100 = build_model(e2sim.load_workload({**BASE, "model": {"arch": "lenet5"}, "dataset": {"name": "cifar100"}}))
    assert mnist.input_shape == (1, 28, 28) and mnist.layer("layer3.0.conv1").out_shape == (64, 7, 7)
    assert cifar100.num_classes == 100 and cifar100.layer("fc1").in_shapes == ((576,),)


def test_shipped_custom_workload_uses_every_layer_type():
    doc = yaml.safe_load((ROOT / "workloads" / "small-resnet-mnist.yaml").read_text())
    types = {layer["type"] for layer in doc["model"]["layers"]}
    assert types == set(LAYER_KEYS)
