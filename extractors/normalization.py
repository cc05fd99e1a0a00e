"""The input statistics a network is trained and served with (0..1 scale), and the rule that picks them."""

from __future__ import annotations

from extractors.datasets import FMNIST_MEAN, FMNIST_STD
from extractors.efficientnet_lite import EFFICIENTNET_LITE0_MEAN, EFFICIENTNET_LITE0_STD

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the usual statistics for photographs: a folder's default
IMAGENET_STD = (0.229, 0.224, 0.225)


# EfficientNet-Lite0's own scaling, (pixel - 127) / 128: what its ImageNet weights were trained with.
EFFICIENTNET_MEAN = tuple(m / 255 for m in EFFICIENTNET_LITE0_MEAN)
EFFICIENTNET_STD = tuple(s / 255 for s in EFFICIENTNET_LITE0_STD)


def training_normalization(images: str, mean=None, std=None, arch: str = "") -> tuple[tuple[float, ...],
                                                                                       tuple[float, ...]]:
    """Given statistics if both are set; else EfficientNet-Lite0's own for that network (continued training must
    feed its pre-trained weights what they were trained on), ImageNet's for a folder of images, Fashion-MNIST's
    for it."""
    if mean is not None and std is not None:
        return tuple(mean), tuple(std)
    if arch == "efficientnet_lite0":
        return EFFICIENTNET_MEAN, EFFICIENTNET_STD
    return (IMAGENET_MEAN, IMAGENET_STD) if images else (FMNIST_MEAN, FMNIST_STD)
