"""The copy generator: reproducible, every edit reachable, safe on thumbnails and photos, still a copy."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from extractors.copies import TRANSFORM_KINDS, CopyConfig, copy_seed, make_copies, make_copy
from extractors.datasets import load_fashion_mnist
from extractors.datasets.image_folder import read_rgb
from extractors.datasets.photos import photo_paths


@pytest.fixture(scope="module")
def fmnist_image() -> Image.Image:
    """A 28x28 Fashion-MNIST test image (an ankle boot), converted to RGB as the gateway does."""
    return load_fashion_mnist("test").pil(0)


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    wanted = {"sklearn/china.jpg", "skimage/astronaut.png", "skimage/coffee.png",
              "foolbox/imagenet_00_243.jpg"}
    found = {photo_id: Image.fromarray(read_rgb(path))
             for photo_id, path in photo_paths() if photo_id in wanted}
    assert len(found) == len(wanted), f"bundled photos missing: {wanted - set(found)}"
    return found


@pytest.fixture(scope="module")
def photo(photos) -> Image.Image:
    """A large real photo (640x427)."""
    return photos["sklearn/china.jpg"]


@pytest.fixture(params=["fmnist", "photo"])
def image(request, fmnist_image, photo) -> Image.Image:
    return fmnist_image if request.param == "fmnist" else photo


def _bytes(images: list[Image.Image]) -> list[tuple[tuple[int, int], bytes]]:
    return [(im.size, im.tobytes()) for im in images]


def _signature(im: Image.Image, side: int = 16) -> np.ndarray:
    """A tiny grayscale thumbnail: what survives a mild copy, as in a perceptual hash."""
    return np.asarray(im.convert("L").resize((side, side), Image.Resampling.BOX), dtype=np.float64)


def _mad(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(_signature(a) - _signature(b)).mean())


@pytest.mark.parametrize("cfg", [CopyConfig.strong(), CopyConfig.mild()], ids=["strong", "mild"])
def test_same_seed_gives_identical_bytes(image, cfg):
    assert _bytes(make_copies(image, 4, seed=7, cfg=cfg)) == _bytes(make_copies(image, 4, seed=7, cfg=cfg))


def test_different_seed_gives_different_copies(image):
    first, second = make_copies(image, 3, seed=1), make_copies(image, 3, seed=2)
    for a, b in zip(first, second, strict=True):
        assert (a.size, a.tobytes()) != (b.size, b.tobytes())


def test_copies_of_one_call_differ_from_each_other(image):
    copies = _bytes(make_copies(image, 5, seed=0))
    assert len(set(copies)) == len(copies)


def test_item_index_changes_the_edits(photo):
    first_item = make_copies(photo, 2, seed=0, item_index=0)
    assert _bytes(first_item) != _bytes(make_copies(photo, 2, seed=0, item_index=1))


def test_make_copies_is_make_copy_with_copy_seed(photo):
    """Any single copy of a data set can be regenerated on its own, and copy k does not depend on n."""
    cfg = CopyConfig.strong()
    copies = make_copies(photo, 3, seed=11, cfg=cfg, item_index=5)
    alone, _ = make_copy(photo, np.random.default_rng(copy_seed(11, 5, 2)), cfg)
    assert (alone.size, alone.tobytes()) == (copies[2].size, copies[2].tobytes())
    assert _bytes(make_copies(photo, 2, seed=11, cfg=cfg, item_index=5)) == _bytes(copies[:2])


def test_copy_seed_is_stable_and_distinct():
    # Pinned values: SeedSequence's output is part of numpy's stability promise, so a copy data set built on
    # another machine or numpy version gets the same seeds.
    assert copy_seed(0, 0, 0) == 15793235383387715774
    assert copy_seed(1, 2, 3) == 12997252459554536576
    assert isinstance(copy_seed(0, 0, 0), int) and 0 <= copy_seed(0, 0, 0) < 2**64
    seeds = {copy_seed(base, item, k) for base in range(3) for item in range(10) for k in range(10)}
    assert len(seeds) == 300
    assert make_copies(Image.new("RGB", (8, 8)), 0, seed=0) == []


def test_every_transform_kind_is_exercised_across_seeds(image):
    seen: set[str] = set()
    for seed in range(12):
        _, applied = make_copy(image, np.random.default_rng(seed), CopyConfig.strong())
        seen.update(applied)
    assert seen == set(TRANSFORM_KINDS)


@pytest.mark.parametrize("cfg", [CopyConfig.strong(), CopyConfig.mild()], ids=["strong", "mild"])
def test_transforms_are_reported_in_the_order_applied(photo, cfg):
    for seed in range(10):
        _, applied = make_copy(photo, np.random.default_rng(seed), cfg)
        assert applied == [kind for kind in TRANSFORM_KINDS if kind in applied]
        assert applied[-1] == "jpeg"
        assert "hflip" not in applied or cfg.flip_p > 0


@pytest.mark.parametrize("size", [(28, 28), (1, 1), (3, 2), (5, 200), (2000, 1500)])
def test_all_edits_at_once_work_on_any_size(size):
    image = Image.new("L", size, 90)  # grayscale in, as Fashion-MNIST arrives
    copy, applied = make_copy(image, np.random.default_rng(0), CopyConfig.strong().with_all())
    assert applied == list(TRANSFORM_KINDS)
    assert copy.mode == "RGB" and copy.width >= 1 and copy.height >= 1
    assert copy.width <= size[0] and copy.height <= size[1]


def test_fashion_mnist_copies_are_small_rgb_images(fmnist_image):
    assert fmnist_image.size == (28, 28)
    for seed in range(20):
        copy, _ = make_copy(fmnist_image, np.random.default_rng(seed), CopyConfig.strong().with_all())
        assert copy.mode == "RGB"
        assert 1 <= copy.width <= 28 and 1 <= copy.height <= 28
        assert np.asarray(copy).std() > 0  # not a blank image


def test_photo_copies_are_rgb_nonempty_and_keep_their_own_size(photo):
    sizes = set()
    for copy in make_copies(photo, 6, seed=3):
        assert copy.mode == "RGB"
        assert np.asarray(copy).shape == (copy.height, copy.width, 3)
        assert np.asarray(copy).std() > 0
        # Cropped to at most 90 % of the area, and never resized back to the original size.
        assert copy.width * copy.height < photo.width * photo.height
        sizes.add(copy.size)
    assert len(sizes) > 1


def test_input_image_is_not_modified(photo):
    before = photo.tobytes()
    make_copy(photo, np.random.default_rng(0), CopyConfig.strong().with_all())
    assert photo.tobytes() == before


def test_mild_copy_differs_from_the_original_but_stays_similar(photos):
    """Downscaled to 16x16 grayscale, a mild copy stays close to its own photo and far from the others."""
    for photo_id, original in photos.items():
        others = [im for other_id, im in photos.items() if other_id != photo_id]
        for seed in range(5):
            copy, applied = make_copy(original, np.random.default_rng(seed), CopyConfig.mild())
            assert "hflip" not in applied  # the mild preset never mirrors, so pixels line up
            assert copy.tobytes() != original.convert("RGB").tobytes()
            distance = _mad(copy, original)
            # Loose: a crop of 80 % of the area shifts a detailed photo's thumbnail by up to ~35 grey levels.
            assert 0 < distance < 45, (photo_id, seed, applied, distance)
            assert distance < min(_mad(copy, other) for other in others), (photo_id, seed, applied)


def test_text_scales_with_the_image():
    """Captions are a fraction of the short side: few pixels change on a thumbnail, many on a photo."""
    only_text = CopyConfig(crop_scale=(1.0, 1.0), rotate_p=0.0, flip_p=0.0, jitter_p=0.0, blur_p=0.0,
                           text_p=1.0, patch_p=0.0, jpeg_quality=(95, 95))
    for side in (28, 1024):
        blank = Image.new("RGB", (side, side), (255, 255, 255))
        fractions = []
        for seed in range(5):
            copy, applied = make_copy(blank, np.random.default_rng(seed), only_text)
            assert applied == ["text", "jpeg"]
            assert copy.size == blank.size
            changed = np.abs(np.asarray(copy, dtype=np.int16) - 255).max(axis=2) > 64
            rows = np.flatnonzero(changed.any(axis=1))
            fractions.append((rows.max() - rows.min() + 1) / side if rows.size else 0.0)
        # Text height is 8-20 % of the side (at least 6 pixels): the inked rows cover a comparable share.
        assert 0.03 < float(np.median(fractions)) < 0.4, (side, fractions)


@pytest.mark.parametrize("bad", [dict(flip_p=1.5), dict(crop_scale=(0.9, 0.5)), dict(crop_scale=(0.0, 0.5)),
                                 dict(crop_scale=(0.5, 1.2)), dict(jpeg_quality=(0, 40)),
                                 dict(crop_ratio=(0, 1))])
def test_config_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        CopyConfig(**bad)


def test_presets_differ_in_strength():
    strong, mild = CopyConfig.strong(), CopyConfig.mild()
    assert strong == CopyConfig()
    assert mild.crop_scale[0] > strong.crop_scale[0]
    assert mild.max_rotation < strong.max_rotation
    assert mild.jpeg_quality[0] > strong.jpeg_quality[1]
