"""The synthetic dataset: its spec keys and their errors, reproducible data from its seed, and a
run on it saying that its accuracy is chance."""

import numpy as np
import pytest

import e2sim
from e2sim import SpecError
from e2sim.report.run import format_run
from e2sim.train.data import load_dataset

BASE = {"name": "syn", "model": {"arch": "lenet5"}, "training": {"batch_size": 16, "epochs": 1, "lr": 0.05}}


def doc(**dataset):
    return {**BASE, "dataset": {"name": "synthetic", **dataset}}


@pytest.mark.parametrize(("dataset", "message"), [
    ({"num_classes": 10}, "dataset.input_shape: missing"),
    ({"input_shape": [1, 28], "num_classes": 10}, "dataset.input_shape: must be a list of 3"),
    ({"input_shape": [1, 28, 28], "num_classes": 1}, "dataset.num_classes: must be at least 2"),
    ({"input_shape": [1, 28, 28], "num_classes": 10, "path": "x"}, "dataset.path: unknown key"),
    ({"input_shape": [1, 28, 28], "num_classes": 10, "train_samples": 0}, "dataset.train_samples"),
])  # fmt: skip
def test_bad_synthetic_specs_are_one_line(dataset, message):
    with pytest.raises(SpecError) as caught:
        e2sim.load_workload(doc(**dataset))
    assert len(caught.value.problems) == 1 and message in str(caught.value), str(caught.value)


def test_synthetic_data_follows_its_seed_and_shape():
    spec = e2sim.load_workload(doc(input_shape=[1, 28, 28], num_classes=10, train_samples=32, test_samples=8))
    first, again = load_dataset(spec.dataset), load_dataset(spec.dataset)
    assert first.train.images.shape == (32, 1, 28, 28) and first.test.labels.shape == (8,)
    assert first.train.images.dtype == np.float32 and set(np.unique(first.train.labels)) <= set(range(10))
    np.testing.assert_array_equal(first.train.images, again.train.images)
    other = e2sim.load_workload(doc(input_shape=[1, 28, 28], num_classes=10, train_samples=32, seed=1))
    assert not np.array_equal(load_dataset(other.dataset).train.images, first.train.images)


def test_a_run_on_synthetic_data_says_its_accuracy_is_chance():
    report = e2sim.run(doc(input_shape=[1, 28, 28], num_classes=10, train_samples=32, test_samples=16), "eyeriss",
                       progress=False).to_dict()  # fmt: skip
    assert report["workload_spec"]["dataset"]["synthetic"]["input_shape"] == [1, 28, 28]
    assert "on synthetic data (random labels: chance)" in format_run(report)
