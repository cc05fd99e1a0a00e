"""The one shape every data set takes: ids, uint8 images and (optional) labels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image


@dataclass
class ImageDataset:
    """``images`` is either one uint8 array [N, H, W] / [N, H, W, 3] or a list of HxWx3 uint8 arrays
    (photos of different sizes). ``labels`` index ``classes``; -1 means unlabelled."""

    name: str
    ids: list[str]
    images: np.ndarray | list[np.ndarray]
    labels: np.ndarray
    classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not (len(self.ids) == len(self.images) == len(self.labels)):
            raise ValueError(f"{self.name}: ids, images and labels differ in length")

    def __len__(self) -> int:
        return len(self.ids)

    def pil(self, i: int) -> Image.Image:
        """Image ``i`` as an RGB PIL image."""
        return Image.fromarray(np.asarray(self.images[i])).convert("RGB")

    def subset(self, idx: np.ndarray | list[int]) -> ImageDataset:
        idx = np.asarray(idx, dtype=np.int64)
        images = self.images[idx] if isinstance(self.images, np.ndarray) else [self.images[i] for i in idx]
        return ImageDataset(self.name, [self.ids[i] for i in idx], images, self.labels[idx], self.classes)
