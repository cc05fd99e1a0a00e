"""The copy generator: reproducible, every edit reachable, safe on thumbnails and photos, still a copy."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from extractors.copies import (
    ALL_LEVELS,
    GEOMETRIC_KINDS,
    GRADED_LEVELS,
    LEVELS_BY_NAME,
    QUICK_LEVEL_NAMES,
    TRANSFORM_KINDS,
    CopyConfig,
    EditLevel,
    apply_edit,
    copy_seed,
    geometric_level_names,
    get_level,
    level_rng,
    level_seed,
    make_copies,
    make_copy,
    translation_offset,
)
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


# --- graded single edits (apply_edit) ---------------------------------------------------------------------------

def _noise_image(size=(28, 28), mode="L", seed=0) -> Image.Image:
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    return Image.fromarray(np.random.default_rng(seed).integers(1, 256, size=shape, dtype=np.uint8))


def test_levels_have_stable_unique_names():
    names = [lvl.name for lvl in ALL_LEVELS]
    assert len(names) == len(set(names)) == len(LEVELS_BY_NAME)
    for expected in ("identity", "crop_0.85", "translate_0.5", "translate_2", "flip", "rotate_10", "jpeg_10", "blur_1",
                     "noise_32", "patch_0.2", "text_0.2", "strong"):
        assert expected in LEVELS_BY_NAME
    assert LEVELS_BY_NAME["crop_0.85"] == EditLevel("crop", 0.85, "crop_0.85")
    assert all(lvl.kind == kind for kind, levels in GRADED_LEVELS.items() for lvl in levels)
    assert set(QUICK_LEVEL_NAMES) <= set(names)
    geometric = geometric_level_names()
    assert "flip" in geometric and "rotate_10" in geometric and "jpeg_10" not in geometric
    assert {LEVELS_BY_NAME[n].kind for n in geometric} == set(GEOMETRIC_KINDS)
    assert get_level("flip") is LEVELS_BY_NAME["flip"]
    with pytest.raises(KeyError):
        get_level("crop_0.123")


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_identity_returns_the_same_pixels_in_a_new_image(mode):
    image = _noise_image(mode=mode)
    out = apply_edit(image, "identity", level_rng(0, 0, "identity"))
    assert out is not image and out.mode == mode
    assert np.array_equal(np.asarray(out), np.asarray(image))


def test_identity_of_fashion_mnist_is_exact(fmnist_image):
    assert np.array_equal(np.asarray(apply_edit(fmnist_image, "identity", np.random.default_rng(0))),
                          np.asarray(fmnist_image))


def test_flip_is_exactly_a_mirror():
    image = _noise_image(size=(28, 20))
    out = np.asarray(apply_edit(image, "flip", np.random.default_rng(0)))
    assert np.array_equal(out, np.asarray(image)[:, ::-1])


@pytest.mark.parametrize("k", [1, 2, 3])
def test_translation_by_k_moves_pixels_by_k_and_fills_black(k):
    image = _noise_image()
    a = np.asarray(image)
    for item in range(8):
        level = get_level(f"translate_{k}")
        dx, dy = translation_offset(image.size, k, level_rng(3, item, level))
        assert sorted((abs(dx), abs(dy))) == [0, k]  # k pixels along one axis at 28 px
        dx, dy = int(dx), int(dy)
        out = np.asarray(apply_edit(image, level, level_rng(3, item, level)))
        expected = np.zeros_like(a)
        h, w = a.shape
        expected[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            a[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
        assert np.array_equal(out, expected), (k, dx, dy)
        assert int((out == 0).sum()) == k * 28  # the uncovered band is black (the input has no zeros)


def test_half_pixel_translation_averages_neighbours():
    image = _noise_image()
    a = np.asarray(image, dtype=np.float64)
    for item in range(8):
        dx, dy = translation_offset(image.size, 0.5, level_rng(0, item, "translate_0.5"))
        assert sorted((abs(dx), abs(dy))) == [0, 0.5]
        out = np.asarray(apply_edit(image, "translate_0.5", level_rng(0, item, "translate_0.5")), dtype=np.float64)
        b = a if dx else a.T  # work along the shifted axis as columns
        o = out if dx else out.T
        sign = np.sign(dx or dy)
        inner = (b[:, :-1] + b[:, 1:]) / 2  # halfway between neighbours
        got = o[:, 1:] if sign > 0 else o[:, :-1]
        assert np.abs(got - inner).max() <= 1.0, (item, dx, dy)


def test_translation_scales_with_the_image():
    dx, dy = translation_offset((560, 280), 2, np.random.default_rng(0))
    assert (abs(dx), abs(dy)) in {(40, 0), (0, 20)}  # 2/28 of each side


@pytest.mark.parametrize("area", [0.9, 0.85, 0.8, 0.5])
def test_crop_keeps_the_area_fraction_and_is_a_window_of_the_original(area):
    image = _noise_image()
    level = EditLevel("crop", area, f"crop_{area:g}")
    out = np.asarray(apply_edit(image, level, level_rng(0, 5, level)))
    side = round(28 * area ** 0.5)
    assert out.shape == (side, side)
    a = np.asarray(image)
    windows = [(y, x) for y in range(29 - side) for x in range(29 - side)
               if np.array_equal(a[y:y + side, x:x + side], out)]
    assert len(windows) == 1


def test_rotation_keeps_the_size_and_is_a_signed_rotation():
    image = _noise_image()
    for item in range(4):
        out = apply_edit(image, "rotate_10", level_rng(0, item, "rotate_10"))
        assert out.size == image.size and out.mode == "L"
        candidates = [image.rotate(d, resample=Image.Resampling.BICUBIC, fillcolor=0).tobytes() for d in (10, -10)]
        assert out.tobytes() in candidates


def test_brightness_scales_pixels():
    image = _noise_image()
    out = np.asarray(apply_edit(image, "brightness_0.6", np.random.default_rng(0)), dtype=np.float64)
    assert np.abs(out - 0.6 * np.asarray(image, dtype=np.float64)).max() <= 1.0


def test_noise_sigma_is_the_requested_one():
    image = Image.new("L", (200, 200), 128)  # mid-grey: no clipping at 0 or 255
    diff = np.asarray(apply_edit(image, "noise_16", level_rng(0, 0, "noise_16")), dtype=np.float64) - 128
    assert abs(diff.mean()) < 0.5 and abs(diff.std() - 16) < 0.5


@pytest.mark.parametrize("area", [0.05, 0.1, 0.2, 0.3])
def test_patch_covers_the_requested_area(area):
    image = _noise_image(size=(200, 200))
    for item in range(3):
        out = np.asarray(apply_edit(image, f"patch_{area:g}", level_rng(0, item, f"patch_{area:g}")))
        changed = out != np.asarray(image)
        rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) / changed.size
        assert abs(box - area) < 0.01, (area, box)
        assert changed.mean() <= box + 1e-9


def test_stronger_levels_change_more_pixels(fmnist_image):
    """Within a kind, a stronger level moves the image further from the original (RMS, over a few items)."""
    a = np.asarray(fmnist_image, dtype=np.float64)
    for kind in ("jpeg", "blur", "noise", "brightness", "contrast"):
        errors = []
        for lvl in GRADED_LEVELS[kind]:
            errors.append(np.mean([np.sqrt(((np.asarray(apply_edit(fmnist_image, lvl, level_rng(0, i, lvl)),
                                                        dtype=np.float64) - a) ** 2).mean()) for i in range(4)]))
        assert errors == sorted(errors) and errors[0] > 0, (kind, errors)


def test_strong_is_make_copy_with_the_strong_preset(fmnist_image):
    out = apply_edit(fmnist_image, "strong", level_rng(0, 3, "strong"))
    copy, _ = make_copy(fmnist_image, level_rng(0, 3, "strong"), CopyConfig.strong())
    assert (out.size, out.tobytes()) == (copy.size, copy.tobytes())


def test_seeded_levels_are_reproducible_and_depend_on_item_and_level(fmnist_image, photo):
    for image in (fmnist_image.convert("L"), photo):
        for lvl in ALL_LEVELS:
            first = apply_edit(image, lvl, level_rng(7, 11, lvl))
            again = apply_edit(image, lvl, level_rng(7, 11, lvl))
            assert (first.size, first.mode, first.tobytes()) == (again.size, again.mode, again.tobytes()), lvl
            assert first.mode == ("RGB" if lvl.kind == "strong" else image.mode)
    noisy = [apply_edit(fmnist_image, "noise_32", level_rng(0, item, "noise_32")).tobytes() for item in range(3)]
    assert len(set(noisy)) == 3
    assert len({level_seed(0, 0, lvl) for lvl in ALL_LEVELS}) == len(ALL_LEVELS)
    assert level_seed(0, 0, "flip") == level_seed(0, 0, LEVELS_BY_NAME["flip"])


def test_every_level_works_on_tiny_and_odd_images():
    for size in ((1, 1), (3, 2), (5, 40)):
        for mode in ("L", "RGB", "RGBA"):
            image = Image.new(mode, size, 90 if mode == "L" else (90, 90, 90, 255)[:len(mode)])
            for lvl in ALL_LEVELS:
                out = apply_edit(image, lvl, level_rng(0, 0, lvl))
                assert out.width >= 1 and out.height >= 1 and out.mode in ("L", "RGB")


def test_apply_edit_does_not_modify_its_input(photo):
    before = photo.tobytes()
    for lvl in ALL_LEVELS:
        apply_edit(photo, lvl, level_rng(0, 0, lvl))
    assert photo.tobytes() == before
