"""The input statistics a network is trained and served with (0..1 scale), and the rule that picks them."""

from __future__ import annotations

from extractors.datasets import FMNIST_MEAN, FMNIST_STD

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the usual statistics for photographs: a folder's default
IMAGENET_STD = (0.229, 0.224, 0.225)


def training_normalization(images: str, mean=None, std=None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Given statistics if both are set; else ImageNet's for a folder of images, Fashion-MNIST's for it."""
    if mean is not None and std is not None:
        return tuple(mean), tuple(std)
    return (IMAGENET_MEAN, IMAGENET_STD) if images else (FMNIST_MEAN, FMNIST_STD)
