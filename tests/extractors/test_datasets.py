"""The image data sets: Fashion-MNIST from Debian's IDX files, a folder of images, the bundled photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from extractors.datasets import (
    FASHION_MNIST_CLASSES,
    ImageDataset,
    load_fashion_mnist,
    load_image_folder,
    load_photos,
)

# ---------------------------------------------------------------------------------------------- Fashion-MNIST


@pytest.fixture(scope="module")
def fmnist_train() -> ImageDataset:
    return load_fashion_mnist("train")


@pytest.fixture(scope="module")
def fmnist_test() -> ImageDataset:
    return load_fashion_mnist("test")


@pytest.mark.parametrize("split, size", [("train", 60_000), ("test", 10_000)])
def test_fashion_mnist_split(split, size, fmnist_train, fmnist_test):
    ds = fmnist_train if split == "train" else fmnist_test
    assert len(ds) == len(ds.ids) == len(ds.labels) == size
    assert isinstance(ds.images, np.ndarray)
    assert ds.images.dtype == np.uint8 and ds.images.shape == (size, 28, 28)
    assert ds.labels.min() == 0 and ds.labels.max() == 9
    assert set(np.unique(ds.labels)) == set(range(10))  # every class present
    assert ds.classes == FASHION_MNIST_CLASSES and len(ds.classes) == 10
    assert ds.images.max() > 200 and ds.images.min() == 0  # real pixels, not an empty buffer
    # Stable ids: the split and the index, zero-padded, the same on every run and machine.
    assert ds.ids[0] == f"fmnist-{split}-00000" and ds.ids[-1] == f"fmnist-{split}-{size - 1:05d}"
    assert len(set(ds.ids)) == size


def test_fashion_mnist_all_is_train_then_test(fmnist_train, fmnist_test):
    ds = load_fashion_mnist("all")
    assert len(ds) == 70_000 and ds.images.shape == (70_000, 28, 28) and ds.images.dtype == np.uint8
    assert ds.ids == fmnist_train.ids + fmnist_test.ids
    assert len(set(ds.ids)) == 70_000
    np.testing.assert_array_equal(ds.labels, np.concatenate([fmnist_train.labels, fmnist_test.labels]))
    np.testing.assert_array_equal(ds.images[60_000:], fmnist_test.images)


def test_fashion_mnist_is_the_same_on_every_load(fmnist_test):
    again = load_fashion_mnist("test")
    assert again.ids == fmnist_test.ids
    np.testing.assert_array_equal(again.images, fmnist_test.images)
    np.testing.assert_array_equal(again.labels, fmnist_test.labels)


def test_fashion_mnist_pil_and_subset(fmnist_test):
    im = fmnist_test.pil(0)
    assert im.mode == "RGB" and im.size == (28, 28)
    sub = fmnist_test.subset([5, 2])
    assert sub.ids == ["fmnist-test-00005", "fmnist-test-00002"]
    np.testing.assert_array_equal(sub.images[1], fmnist_test.images[2])


def test_fashion_mnist_missing_files_say_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("VSEARCH_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        load_fashion_mnist("train")
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        load_fashion_mnist("all")


def test_fashion_mnist_unknown_split():
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("validation")


# --------------------------------------------------------------------------------------------- image folder


def _save(path: Path, size: tuple[int, int], colour: tuple[int, int, int], **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, **kwargs)


@pytest.fixture
def image_tree(tmp_path) -> Path:
    root = tmp_path / "pics"
    _save(root / "cats" / "b.jpg", (20, 10), (200, 30, 30))
    _save(root / "cats" / "A.PNG", (8, 8), (30, 200, 30))  # upper-case suffix still counts
    _save(root / "dogs" / "indoor" / "c.webp", (12, 6), (30, 30, 200))
    _save(root / "dogs" / "d.png", (5, 7), (10, 10, 10))
    _save(root / "dogs-2" / "e.png", (4, 4), (0, 0, 0))  # '-' sorts before '/': string order, not Path order
    (root / "cats" / "notes.txt").write_text("not an image")
    (root / "dogs" / "meta.json").write_text("{}")
    (root / "dogs" / "folder.jpg").mkdir()  # a folder with an image suffix is not an image
    return root


def test_image_folder_ids_labels_and_pixels(image_tree):
    ds = load_image_folder(image_tree)
    expected = ["cats/A.PNG", "cats/b.jpg", "dogs-2/e.png", "dogs/d.png", "dogs/indoor/c.webp"]
    assert ds.ids == expected == sorted(ds.ids)  # POSIX relative paths, sorted as strings
    assert ds.classes == ["cats", "dogs", "dogs-2", "dogs/indoor"]  # the parent folder, relative to root
    assert [ds.classes[label] for label in ds.labels] == ["cats", "cats", "dogs-2", "dogs", "dogs/indoor"]
    shapes = {i: np.asarray(im).shape for i, im in zip(ds.ids, ds.images, strict=True)}
    assert shapes == {"cats/A.PNG": (8, 8, 3), "cats/b.jpg": (10, 20, 3), "dogs-2/e.png": (4, 4, 3),
                      "dogs/d.png": (7, 5, 3), "dogs/indoor/c.webp": (6, 12, 3)}
    assert all(np.asarray(im).dtype == np.uint8 for im in ds.images)
    assert tuple(ds.images[0][0, 0]) == (30, 200, 30)  # PNG is lossless


def test_image_folder_without_labels(image_tree):
    ds = load_image_folder(image_tree, label_from_parent=False)
    assert ds.classes == [] and (ds.labels == -1).all() and len(ds) == 5


def test_image_folder_files_at_the_root_are_unlabelled(tmp_path):
    _save(tmp_path / "top.png", (4, 4), (1, 2, 3))
    _save(tmp_path / "shoes" / "s.png", (4, 4), (1, 2, 3))
    ds = load_image_folder(tmp_path)
    assert ds.ids == ["shoes/s.png", "top.png"]
    assert ds.classes == ["shoes"] and ds.labels.tolist() == [0, -1]


def test_image_folder_applies_exif_orientation(tmp_path):
    """Orientation 6 (phone held upright, pixels stored sideways): loaded rotated, 10 wide and 20 tall."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    _save(tmp_path / "phone" / "portrait.jpg", (20, 10), (120, 120, 120), exif=exif.tobytes())
    with Image.open(tmp_path / "phone" / "portrait.jpg") as raw:
        assert raw.size == (20, 10) and raw.getexif()[0x0112] == 6  # stored landscape, tagged 6
    ds = load_image_folder(tmp_path)
    assert np.asarray(ds.images[0]).shape == (20, 10, 3)


def test_image_folder_skips_hidden_files_and_folders(tmp_path):
    """The brain MRI set ships meningioma/.ipynb_checkpoints/ with a copy in it: not a class, not an image."""
    _save(tmp_path / "meningioma" / "a.jpg", (4, 4), (1, 2, 3))
    _save(tmp_path / "meningioma" / ".ipynb_checkpoints" / "a-checkpoint.jpg", (4, 4), (1, 2, 3))
    _save(tmp_path / "meningioma" / "._a.jpg", (4, 4), (1, 2, 3))
    ds = load_image_folder(tmp_path)
    assert ds.ids == ["meningioma/a.jpg"] and ds.classes == ["meningioma"]


def test_image_folder_missing_root(tmp_path):
    with pytest.raises(NotADirectoryError):
        load_image_folder(tmp_path / "nowhere")


def test_image_folder_empty(tmp_path):
    ds = load_image_folder(tmp_path)
    assert len(ds) == 0 and ds.classes == []


# --------------------------------------------------------------------------------------------------- photos


@pytest.fixture(scope="module")
def photos() -> ImageDataset:
    return load_photos()


def test_photos_are_real_rgb_images(photos):
    assert len(photos) >= 30
    assert len(set(photos.ids)) == len(photos)
    for photo_id, im in zip(photos.ids, photos.images, strict=True):
        arr = np.asarray(im)
        assert arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8, photo_id
        assert min(arr.shape[:2]) >= 32 and arr.std() > 0, photo_id
    assert photos.pil(0).mode == "RGB"


def test_photos_include_the_foolbox_imagenet_images(photos):
    labels = dict(zip(photos.ids, photos.labels.tolist(), strict=True))
    foolbox = {i: label for i, label in labels.items() if i.startswith("foolbox/")}
    assert len(foolbox) == 20
    for photo_id, label in foolbox.items():
        # imagenet_<index>_<class>.jpg: the class is the last number in the name.
        assert photo_id == f"foolbox/imagenet_{photo_id.split('_')[1]}_{label}.jpg"
        assert 0 <= label < 1000 and photos.classes[label] == f"imagenet-{label}"
    assert foolbox["foolbox/imagenet_00_243.jpg"] == 243
    others = [label for i, label in labels.items() if not i.startswith("foolbox/")]
    assert others and all(label == -1 for label in others)
    assert {"skimage/astronaut.png", "sklearn/china.jpg"} <= set(photos.ids)
