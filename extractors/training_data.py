"""What a training loop iterates: batches of uint8 images [B, 3, S, S] with their labels, epoch by epoch.

Two sources behind one interface: Fashion-MNIST held in memory (60k x 28 x 28 is 47 MB), and a folder of images
streamed from disk, decoded and resized in DataLoader workers so that memory holds the file list and a few batches,
whatever the folder's size. An epoch's order is a function of (seed, epoch) alone, so a run resumed in the middle
of an epoch sees exactly the batches it had not seen yet. A file that cannot be decoded is skipped and named in the
run's log, never the end of the run."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from extractors.datasets import FolderIndex
from extractors.imaging import to_model_input


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of epoch ``epoch``: the one rule both sources and every rank of a distributed run follow."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def batch_indices(n: int, batch_size: int, seed: int, epoch: int, start_batch: int = 0, rank: int = 0,
                  world: int = 1) -> Iterator[torch.Tensor]:
    """Indices of each full batch of the epoch from ``start_batch`` on; a distributed rank takes every ``world``-th
    index of each global batch, so the ranks together see the batch one process would."""
    perm = epoch_permutation(n, seed, epoch)
    for b in range(start_batch, n // batch_size):
        yield perm[b * batch_size:(b + 1) * batch_size][rank::world]


def decode_for_training(path: Path, size: int) -> np.ndarray:
    """uint8 [3, size, size] through the model-input resize the gateway uses (EXIF turn, RGB, squash to a square).
    A JPEG is decoded at a reduced scale first (``draft``): a 4000 px photo costs what a ~size px one does."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # a bomb is a bad file here, not a warning
        with Image.open(path) as im:
            im.draft("RGB", (size, size))
            return to_model_input(im, size)


class DecodedFolder(Dataset):
    """Item i of a folder index: (uint8 [3, S, S] or None when the file is unreadable, label, i)."""

    def __init__(self, index: FolderIndex, size: int) -> None:
        self.index, self.size = index, size

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        try:
            pixels = torch.from_numpy(decode_for_training(self.index.paths[i], self.size))
        except Exception:  # noqa: BLE001 - any undecodable file (truncated, corrupt, a bomb) is skipped and counted
            pixels = None
        return pixels, int(self.index.labels[i]), i


def collate_decoded(items) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The decoded images of a batch, their labels and the indices of the files that could not be decoded."""
    good = [(x, y) for x, y, _ in items if x is not None]
    bad = [i for x, _, i in items if x is None]
    if not good:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.long), bad
    return torch.stack([x for x, _ in good]), torch.tensor([y for _, y in good]), bad


class _Batches(Sampler):
    def __init__(self, batches: list[torch.Tensor]) -> None:
        self.batches = batches

    def __iter__(self):
        return (b.tolist() for b in self.batches)

    def __len__(self) -> int:
        return len(self.batches)


@dataclass
class TrainingImages:
    """A training set as a loop sees it. ``images`` (in memory) or ``index`` (a folder streamed from disk)."""

    name: str
    size: int
    batch_size: int
    seed: int = 0
    images: torch.Tensor | None = None  # uint8 [N, 3, S, S]
    labels: torch.Tensor | None = None
    index: FolderIndex | None = None
    workers: int = 1
    rank: int = 0
    world: int = 1
    skipped: set[str] = field(default_factory=set)  # files that could not be decoded, by id

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.index)  # type: ignore[arg-type]

    @property
    def batches_per_epoch(self) -> int:
        return max(len(self) // self.batch_size, 1)

    @property
    def classes(self) -> list[str]:
        return self.index.classes if self.index is not None else []

    def label_array(self) -> np.ndarray:
        return self.index.labels if self.index is not None else np.asarray(self.labels)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 images, labels) of every batch of ``epoch`` from ``start_batch`` on."""
        batch_size = min(self.batch_size, len(self))
        batches = list(batch_indices(len(self), batch_size, self.seed, epoch, start_batch, self.rank, self.world))
        if self.images is not None:
            for idx in batches:
                yield self.images[idx], self.labels[idx]  # type: ignore[index]
            return
        loader = DataLoader(DecodedFolder(self.index, self.size), batch_sampler=_Batches(batches),  # type: ignore[arg-type]
                            num_workers=self.workers, collate_fn=collate_decoded,
                            prefetch_factor=2 if self.workers else None)
        for images, labels, bad in loader:
            self.skipped.update(_ids(self.index, bad))  # type: ignore[arg-type]
            if len(images):
                yield images, labels


def _ids(index: FolderIndex, positions: list[int]) -> list[str]:
    return [index.paths[i].relative_to(index.root).as_posix() for i in positions]


def load_folder_pixels(index: FolderIndex, size: int, workers: int = 1, batch_size: int = 256) -> tuple[
        torch.Tensor, np.ndarray, list[str]]:
    """Every decodable image of ``index`` as uint8 [N, 3, S, S] (for evaluation subsets that fit in memory), their
    labels, and the ids of the files skipped as undecodable."""
    loader = DataLoader(DecodedFolder(index, size), batch_size=batch_size, num_workers=workers,
                        collate_fn=collate_decoded)
    images, labels, skipped = [], [], []
    for x, y, bad in loader:
        if len(x):
            images.append(x)
            labels.append(y)
        skipped += _ids(index, bad)
    if not images:
        raise ValueError(f"none of the {len(index)} images under {index.root} could be decoded")
    return torch.cat(images), torch.cat(labels).numpy(), skipped
