"""A collection with known duplicates: originals plus edited copies of some of them, one graded level each."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from extractors.copies import ALL_LEVELS, apply_edit, level_rng

# Every graded edit but the no-op and the combined strong copy (the old task, at the floor for everyone).
INJECTED_LEVELS = [lv.name for lv in ALL_LEVELS if lv.name not in ("identity", "strong")]


@dataclass
class Collection:
    name: str
    ids: list[str]
    images: list[Image.Image]
    family: np.ndarray  # int per item: its original's index (an original: its own index)
    level: list[str]  # per item: the edit that made it ("" for an original)

    @property
    def is_copy(self) -> np.ndarray:
        return np.array([lv != "" for lv in self.level])


def inject(name: str, ids: list[str], images: list[Image.Image], n_copies: int, seed: int = 0,
           copies_per_original: int = 1) -> Collection:
    """``images`` plus ``n_copies`` edited copies: distinct originals drawn with ``seed`` (``copies_per_original``
    copies each), the levels taken in turn so every level gets its share."""
    rng = np.random.default_rng(seed)
    n_sources = -(-n_copies // copies_per_original)
    sources = np.sort(rng.choice(len(images), size=min(n_sources, len(images)), replace=False))
    out_ids, out_images = list(ids), list(images)
    family, level = list(range(len(images))), [""] * len(images)
    k = 0
    for src in sources:
        for _ in range(copies_per_original):
            if k == n_copies:
                break
            lv = INJECTED_LEVELS[k % len(INJECTED_LEVELS)]
            out_images.append(apply_edit(images[src], lv, level_rng(seed, k, lv)))
            out_ids.append(f"copy{k:05d}-{lv}-of-{ids[src]}")
            family.append(int(src))
            level.append(lv)
            k += 1
    return Collection(name, out_ids, out_images, np.array(family), level)
