"""A folder of images, searched recursively; ids are the POSIX relative paths (stable across machines)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from extractors.datasets.base import ImageDataset
from extractors.imaging import to_rgb

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def list_images(root: Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder of images")
    found = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    # Sorted by the id string: Path order compares parts ("a/b" before "a-c") and ignores case on Windows.
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(to_rgb(im))


def load_image_folder(root: Path, label_from_parent: bool = True) -> ImageDataset:
    """Loads every image below ``root``. With ``label_from_parent`` the parent folder name is the class."""
    root = Path(root)
    paths = list_images(root)
    ids = [p.relative_to(root).as_posix() for p in paths]
    classes: list[str] = []
    labels = np.full(len(paths), -1, dtype=np.int64)
    if label_from_parent:
        parents = [p.parent.relative_to(root).as_posix() for p in paths]
        # Images directly in ``root`` have no class folder: they stay unlabelled (-1), not class ".".
        classes = sorted({parent for parent in parents if parent != "."})
        index = {name: i for i, name in enumerate(classes)}
        labels = np.array([index.get(parent, -1) for parent in parents], dtype=np.int64)
    return ImageDataset(f"folder:{root.name}", ids, [read_rgb(p) for p in paths], labels, classes)
