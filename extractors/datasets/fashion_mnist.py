"""Fashion-MNIST (Xiao et al. 2017) read from Debian's ``dataset-fashion-mnist`` IDX files."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from extractors.datasets.base import ImageDataset

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
# Per-channel statistics of the Fashion-MNIST training set (grey replicated to RGB): the ViTs' input normalisation.
FMNIST_MEAN = (0.2860, 0.2860, 0.2860)
FMNIST_STD = (0.3530, 0.3530, 0.3530)
# Coarse groups of the ten classes (the "semantic bias" experiment, ../shared/RESEARCH.md section 3): a model
# supervised on these is never told a shirt from a coat or a sandal from a sneaker.
COARSE_GROUPS = {"tops": [0, 2, 4, 6], "trouser": [1], "dress": [3], "footwear": [5, 7, 9], "bag": [8]}
COARSE_OF_CLASS = np.array([next(g for g, (_, members) in enumerate(COARSE_GROUPS.items()) if c in members)
                            for c in range(len(FASHION_MNIST_CLASSES))])
DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
_FILES = {"train": "train", "test": "t10k"}


def fashion_mnist_root() -> Path:
    return Path(os.environ.get("VSEARCH_FASHION_MNIST_DIR", DEFAULT_ROOT))


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte payload
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {magic:#x})")
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(split: str = "train", root: Path | None = None) -> ImageDataset:
    """``split`` is ``train`` (60,000), ``test`` (10,000) or ``all`` (train then test, 70,000).

    Ids are ``fmnist-train-00000`` / ``fmnist-test-00000``: stable across runs and machines."""
    if split == "all":
        train, test = load_fashion_mnist("train", root), load_fashion_mnist("test", root)
        return ImageDataset("fashion-mnist", train.ids + test.ids, np.concatenate([train.images, test.images]),
                            np.concatenate([train.labels, test.labels]), FASHION_MNIST_CLASSES)
    if split not in _FILES:
        raise ValueError(f"unknown Fashion-MNIST split {split!r}: use train, test or all")
    root = Path(root) if root else fashion_mnist_root()
    images_path = root / f"{_FILES[split]}-images-idx3-ubyte.gz"
    labels_path = root / f"{_FILES[split]}-labels-idx1-ubyte.gz"
    if not images_path.exists() or not labels_path.exists():
        raise FileNotFoundError(
            f"Fashion-MNIST IDX files not found in {root}. Install Debian's package "
            "(`sudo apt-get install dataset-fashion-mnist`) or set VSEARCH_FASHION_MNIST_DIR to a folder "
            "holding train-images-idx3-ubyte.gz and friends."
        )
    images = _read_idx(images_path)
    labels = _read_idx(labels_path).astype(np.int64)
    ids = [f"fmnist-{split}-{i:05d}" for i in range(len(images))]
    return ImageDataset("fashion-mnist", ids, images, labels, FASHION_MNIST_CLASSES)
