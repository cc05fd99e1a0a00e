"""Image data sets: Fashion-MNIST (Debian IDX files), a folder of images, and the bundled real photos."""

from extractors.datasets.base import ImageDataset
from extractors.datasets.fashion_mnist import (
    COARSE_GROUPS,
    COARSE_OF_CLASS,
    FASHION_MNIST_CLASSES,
    FMNIST_MEAN,
    FMNIST_STD,
    load_fashion_mnist,
)
from extractors.datasets.image_folder import FolderIndex, index_image_folder, load_image_folder
from extractors.datasets.photos import load_photos

__all__ = ["ImageDataset", "COARSE_GROUPS", "COARSE_OF_CLASS", "FASHION_MNIST_CLASSES", "FMNIST_MEAN", "FMNIST_STD",
           "load_fashion_mnist",
           "FolderIndex", "index_image_folder", "load_image_folder", "load_photos"]
