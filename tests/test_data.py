"""Dataset loaders on tiny files written in the real formats; bad files are clean errors."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from e2sim.config.workload import DatasetSpec
from e2sim.train.data import NORMALIZATION, DataError, augment_batch, load_dataset

rng = np.random.default_rng(0)


def write_idx(path, array, compress=False):
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def make_mnist(folder, compress=False, n_train=10, n_test=5):
    suffix = ".gz" if compress else ""
    images = {"train": rng.integers(0, 256, (n_train, 28, 28)), "t10k": rng.integers(0, 256, (n_test, 28, 28))}
    labels = {"train": rng.integers(0, 10, n_train), "t10k": rng.integers(0, 10, n_test)}
    for prefix in ("train", "t10k"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images[prefix], compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels[prefix], compress)
    return images, labels


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_files(tmp_path, compress):
    images, labels = make_mnist(tmp_path, compress)
    data = load_dataset(DatasetSpec("mnist", str(tmp_path)))
    assert data.train.images.shape == (10, 1, 28, 28) and data.test.images.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(data.train.labels, labels["train"])
    mean, std = NORMALIZATION["mnist"][0][0], NORMALIZATION["mnist"][1][0]
    np.testing.assert_allclose(data.train.images[:, 0], (images["train"] / 255 - mean) / std, rtol=1e-5, atol=1e-5)
    assert data.train.images.dtype == np.float32 and not data.augment


def test_mnist_bad_files_name_the_path(tmp_path):
    make_mnist(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(DataError, match=f"{tmp_path}: missing t10k-labels-idx1-ubyte"):
        load_dataset(DatasetSpec("mnist", str(tmp_path)))
    make_mnist(tmp_path)
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:-7])
    with pytest.raises(DataError, match=f"{bad}: holds .* bytes of data, the header says"):
        load_dataset(DatasetSpec("mnist", str(tmp_path)))
    bad.write_bytes(b"\x00\x00\x09\x03junk")
    with pytest.raises(DataError, match=f"{bad}: not an IDX file"):
        load_dataset(DatasetSpec("mnist", str(tmp_path)))
    bad.write_bytes(b"\x1f\x8b broken gzip")
    with pytest.raises(DataError, match=f"{bad}: cannot be read"):
        load_dataset(DatasetSpec("mnist", str(tmp_path)))
    with pytest.raises(DataError, match="no such directory"):
        load_dataset(DatasetSpec("mnist", str(tmp_path / "absent")))
    with pytest.raises(DataError, match=r"set dataset\.path"):
        load_dataset(DatasetSpec("cifar10", None))


def write_cifar_batch(path, n, label_key, classes):
    batch = {b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
             label_key.encode(): list(rng.integers(0, classes, n)), b"batch_label": b"tiny"}  # fmt: skip
    path.write_bytes(pickle.dumps(batch, protocol=2))  # the protocol of the published files
    return batch


def test_cifar10_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = [write_cifar_batch(folder / f"data_batch_{i}", 4, "labels", 10) for i in range(1, 6)]
    write_cifar_batch(folder / "test_batch", 3, "labels", 10)
    data = load_dataset(DatasetSpec("cifar10", str(tmp_path)))  # the parent folder works too
    assert data.train.images.shape == (20, 3, 32, 32) and data.test.images.shape == (3, 3, 32, 32)
    assert data.augment
    first = batches[0][b"data"][0].reshape(3, 32, 32)
    mean, std = (np.array(v).reshape(3, 1, 1) for v in NORMALIZATION["cifar10"])
    np.testing.assert_allclose(data.train.images[0], (first / 255 - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(data.train.labels[:4], batches[0][b"labels"])


def test_cifar100_and_bad_batches(tmp_path):
    write_cifar_batch(tmp_path / "train", 6, "fine_labels", 100)
    write_cifar_batch(tmp_path / "test", 2, "fine_labels", 100)
    data = load_dataset(DatasetSpec("cifar100", str(tmp_path)))
    assert data.train.images.shape == (6, 3, 32, 32) and data.train.labels.max() < 100
    (tmp_path / "test").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"fine_labels": [0, 1]}))
    with pytest.raises(DataError, match=r"test: 'data' must be N×3072 bytes"):
        load_dataset(DatasetSpec("cifar100", str(tmp_path)))
    (tmp_path / "test").write_bytes(b"garbage")
    with pytest.raises(DataError, match="test: not a CIFAR python batch"):
        load_dataset(DatasetSpec("cifar100", str(tmp_path)))


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickles_may_not_run_code(tmp_path):
    write_cifar_batch(tmp_path / "train", 2, "fine_labels", 100)
    (tmp_path / "test").write_bytes(pickle.dumps({b"data": _Exploit(), b"fine_labels": [0]}))
    with pytest.raises(DataError, match="refusing to load"):
        load_dataset(DatasetSpec("cifar100", str(tmp_path)))


def test_mnist5k_split():
    data = load_dataset(DatasetSpec("mnist5k", None))
    assert len(data.train.labels) == 4000 and len(data.test.labels) == 1000
    assert np.bincount(data.test.labels).tolist() == [100] * 10
    assert abs(float(data.train.images.mean())) < 0.2 and data.train.images.shape[1:] == (1, 28, 28)


def test_augmentation_crops_and_flips():
    images = rng.standard_normal((64, 3, 32, 32)).astype(np.float32)
    a = augment_batch(images, np.random.default_rng(1))
    b = augment_batch(images, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert a.shape == images.shape and not np.array_equal(a, images)
    # every output is a shifted (and maybe flipped) window of the zero-padded input
    padded = np.pad(images, ((0, 0), (0, 0), (4, 4), (4, 4)))
    for i in range(8):
        found = any(
            np.array_equal(a[i], crop) or np.array_equal(a[i], crop[:, :, ::-1])
            for dy in range(9) for dx in range(9) for crop in [padded[i, :, dy : dy + 32, dx : dx + 32]]
        )  # fmt: skip
        assert found
