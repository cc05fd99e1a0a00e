"""A folder of images, searched recursively; ids are the POSIX relative paths (stable across machines).

``index_image_folder`` lists the files and their class folders without reading a pixel: what streaming training and
evaluation over a large folder hold in memory. ``load_image_folder`` decodes every image (small folders only)."""

from __future__ import annotations

from dataclasses import dataclass
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
    # Hidden files and folders are a tool's, not the user's images (.ipynb_checkpoints/ copies, macOS ._ files).
    found = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
             and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    # Sorted by the id string: Path order compares parts ("a/b" before "a-c") and ignores case on Windows.
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


@dataclass
class FolderIndex:
    """The files of a folder of images and, with class sub-folders, their labels (-1: a file at the root)."""

    root: Path
    paths: list[Path]
    labels: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def ids(self) -> list[str]:
        return [p.relative_to(self.root).as_posix() for p in self.paths]

    @property
    def labelled(self) -> bool:
        return bool(self.classes) and bool((self.labels >= 0).any())

    def subset(self, idx: np.ndarray | list[int]) -> FolderIndex:
        idx = np.asarray(idx, dtype=np.int64)
        return FolderIndex(self.root, [self.paths[i] for i in idx], self.labels[idx], self.classes)


def index_image_folder(root: Path, label_from_parent: bool = True, require_images: bool = False) -> FolderIndex:
    """Every image file below ``root``. With ``label_from_parent`` the parent folder (relative to ``root``) is the
    class. ``require_images``: a folder without one image is an error that names the accepted suffixes."""
    root = Path(root)
    paths = list_images(root)
    if require_images and not paths:
        raise ValueError(f"{root} holds no images: looked for {', '.join(sorted(IMAGE_SUFFIXES))} files "
                         "in it and its sub-folders")
    classes: list[str] = []
    labels = np.full(len(paths), -1, dtype=np.int64)
    if label_from_parent:
        parents = [p.parent.relative_to(root).as_posix() for p in paths]
        # Images directly in ``root`` have no class folder: they stay unlabelled (-1), not class ".".
        classes = sorted({parent for parent in parents if parent != "."})
        index = {name: i for i, name in enumerate(classes)}
        labels = np.array([index.get(parent, -1) for parent in parents], dtype=np.int64)
    return FolderIndex(root, paths, labels, classes)


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(to_rgb(im))


def load_image_folder(root: Path, label_from_parent: bool = True) -> ImageDataset:
    """Loads every image below ``root`` into memory (use ``index_image_folder`` and stream a large folder)."""
    index = index_image_folder(root, label_from_parent)
    return ImageDataset(f"folder:{Path(root).name}", index.ids, [read_rgb(p) for p in index.paths], index.labels,
                        index.classes)
