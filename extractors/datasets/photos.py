"""The real photographs bundled with scikit-image, scikit-learn and foolbox, as one small "photos" set.

foolbox is installed with ``--no-deps`` (it would pull a second deep-learning stack), so its data folder is
located with importlib without importing the package. Its ImageNet validation images carry their class
index in the file name (``imagenet_07_609.jpg`` -> class 609)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from extractors.datasets.base import ImageDataset
from extractors.datasets.image_folder import read_rgb

# Natural photographs only: skimage's synthetic patterns, binary masks and text scans are left out.
SKIMAGE_PHOTOS = [
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "coffee.png", "coins.png",
    "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "microaneurysms.png", "moon.png",
    "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg",
]
SKLEARN_PHOTOS = ["china.jpg", "flower.jpg"]


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def photo_paths() -> list[tuple[str, Path]]:
    """(stable id, path) of every bundled photo that is installed."""
    found: list[tuple[str, Path]] = []
    skimage_dir = _package_dir("skimage")
    if skimage_dir:
        found += [(f"skimage/{n}", skimage_dir / "data" / n) for n in SKIMAGE_PHOTOS
                  if (skimage_dir / "data" / n).exists()]
    sklearn_dir = _package_dir("sklearn")
    if sklearn_dir:
        found += [(f"sklearn/{n}", sklearn_dir / "datasets" / "images" / n) for n in SKLEARN_PHOTOS
                  if (sklearn_dir / "datasets" / "images" / n).exists()]
    foolbox_dir = _package_dir("foolbox")
    if foolbox_dir:
        found += [(f"foolbox/{p.name}", p) for p in sorted((foolbox_dir / "data").glob("imagenet_*.jpg"))]
    return found


def imagenet_class(photo_id: str) -> int:
    """The ImageNet class index of a foolbox validation image, -1 for the other photos."""
    name = photo_id.rsplit("/", 1)[-1]
    if not name.startswith("imagenet_"):
        return -1
    return int(Path(name).stem.split("_")[2])


def load_photos() -> ImageDataset:
    pairs = photo_paths()
    if not pairs:
        raise FileNotFoundError("no bundled photos found: install scikit-image, scikit-learn and "
                                "`pip install --no-deps foolbox`")
    ids = [i for i, _ in pairs]
    labels = np.array([imagenet_class(i) for i in ids], dtype=np.int64)
    classes = [f"imagenet-{c}" for c in range(1000)]
    return ImageDataset("photos", ids, [read_rgb(p) for _, p in pairs], labels, classes)
