"""Seeded near-duplicate ("copy") generator for copy-detection tests.

A copy is what an image looks like after it has been re-posted: cropped, slightly rotated, maybe mirrored,
colour-edited, blurred, stamped with a caption or a sticker, and re-compressed as a low-quality JPEG.
``make_copy`` applies a random subset of those edits, drawn from a ``numpy.random.Generator``, so the same
seed always gives the same bytes (on the same Pillow / libjpeg build).

The copy keeps its own size after crop and rotation instead of being resized back to the original: a real
copy found in the wild has a different size, and the gateway resizes every query to the model's input,
so forcing the original size would hide exactly the rescaling a detector has to cope with.

Pillow + numpy only, so the generator runs anywhere the data sets load.
"""

from __future__ import annotations

import io
import math
import string
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

# Every transform kind ``make_copy`` can report, in the order it applies them. The JPEG round trip always
# happens last because a re-post is compressed after whatever editing was done to it.
TRANSFORM_KINDS = ("crop", "rotate", "hflip", "color_jitter", "blur", "text", "patch", "jpeg")

# Blur radii are given for an image whose short side is this many pixels and scaled with the image: a fixed
# pixel radius would wipe out a 28x28 thumbnail and be invisible on a 4000-pixel photo.
BLUR_REFERENCE_SIDE = 256

_TEXT_ALPHABET = string.ascii_uppercase + string.digits
_MIN_TEXT_HEIGHT = 6  # pixels; below this the default font is no longer drawn as glyphs


Range = tuple[float, float]


@dataclass(frozen=True)
class CopyConfig:
    """Strengths of the copy edits. ``*_p`` are probabilities; ranges are sampled uniformly.

    The defaults are the strong preset (``CopyConfig.strong()``); ``CopyConfig.mild()`` gives copies that a
    simple perceptual hash should still catch."""

    crop_scale: Range = (0.5, 0.9)  # fraction of the image area kept by the crop
    crop_ratio: Range = (3 / 4, 4 / 3)  # aspect ratio range of the crop (sampled in log space)
    rotate_p: float = 0.5
    max_rotation: float = 15.0  # degrees either way
    flip_p: float = 0.5  # horizontal mirror
    jitter_p: float = 0.8
    brightness: Range = (0.6, 1.4)  # ImageEnhance factors: 1.0 leaves the image as it is
    contrast: Range = (0.6, 1.4)
    saturation: Range = (0.3, 1.7)
    blur_p: float = 0.5
    blur_radius: Range = (0.5, 2.5)  # Gaussian radius in pixels at a BLUR_REFERENCE_SIDE short side
    text_p: float = 0.4
    text_height: Range = (0.08, 0.2)  # caption font size as a fraction of the short side
    patch_p: float = 0.3
    patch_area: Range = (0.02, 0.1)  # sticker area as a fraction of the image area
    jpeg_quality: tuple[int, int] = (15, 40)

    def __post_init__(self) -> None:
        for name in ("rotate_p", "flip_p", "jitter_p", "blur_p", "text_p", "patch_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"CopyConfig.{name} must be a probability in [0, 1]")
        ranges = ("crop_scale", "crop_ratio", "brightness", "contrast", "saturation", "blur_radius",
                  "text_height", "patch_area", "jpeg_quality")
        for name in ranges:
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"CopyConfig.{name} must be a range (low, high) with 0 <= low <= high")
        if self.crop_scale[0] <= 0 or self.crop_scale[1] > 1:
            raise ValueError("CopyConfig.crop_scale must lie in (0, 1]")
        if self.crop_ratio[0] <= 0:
            raise ValueError("CopyConfig.crop_ratio must be positive")
        if self.jpeg_quality[0] < 1 or self.jpeg_quality[1] > 95:
            raise ValueError("CopyConfig.jpeg_quality must lie in [1, 95] (Pillow's useful range)")

    @classmethod
    def strong(cls) -> CopyConfig:
        """Heavy edits, low JPEG quality: hard copies that a pixel hash misses."""
        return cls()

    @classmethod
    def mild(cls) -> CopyConfig:
        """Light edits and no mirroring: easy copies, close to the original pixel for pixel."""
        return cls(crop_scale=(0.8, 0.97), rotate_p=0.3, max_rotation=5.0, flip_p=0.0, jitter_p=0.5,
                   brightness=(0.85, 1.15), contrast=(0.85, 1.15), saturation=(0.8, 1.2), blur_p=0.3,
                   blur_radius=(0.3, 1.0), text_p=0.2, text_height=(0.05, 0.1), patch_p=0.1,
                   patch_area=(0.01, 0.04), jpeg_quality=(50, 85))

    def with_all(self) -> CopyConfig:
        """The same strengths with every optional edit switched on (for tests and demos)."""
        return replace(self, rotate_p=1.0, flip_p=1.0, jitter_p=1.0, blur_p=1.0, text_p=1.0, patch_p=1.0)


def make_copy(image: Image.Image, rng: np.random.Generator, cfg: CopyConfig) -> tuple[Image.Image, list[str]]:
    """A near-duplicate of ``image`` and the kinds of edit applied to it, in order (see TRANSFORM_KINDS).

    The input is never modified. Any mode is accepted (grayscale Fashion-MNIST included); the copy is RGB,
    JPEG-encoded and decoded again, and keeps the size it has after crop and rotation."""
    img = image.convert("RGB")  # convert always returns a new image, so the caller's one stays untouched
    applied: list[str] = []

    if cfg.crop_scale != (1.0, 1.0):
        img = _random_crop(img, rng, cfg)
        applied.append("crop")
    if rng.random() < cfg.rotate_p and cfg.max_rotation > 0:
        img = _rotate_and_trim(img, rng.uniform(-cfg.max_rotation, cfg.max_rotation))
        applied.append("rotate")
    if rng.random() < cfg.flip_p:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        applied.append("hflip")
    if rng.random() < cfg.jitter_p:
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(*cfg.brightness))
        img = ImageEnhance.Contrast(img).enhance(rng.uniform(*cfg.contrast))
        img = ImageEnhance.Color(img).enhance(rng.uniform(*cfg.saturation))
        applied.append("color_jitter")
    if rng.random() < cfg.blur_p:
        radius = rng.uniform(*cfg.blur_radius) * min(img.size) / BLUR_REFERENCE_SIDE
        img = img.filter(ImageFilter.GaussianBlur(radius))
        applied.append("blur")
    if rng.random() < cfg.text_p:
        _draw_text(img, rng, cfg)
        applied.append("text")
    if rng.random() < cfg.patch_p:
        _draw_patch(img, rng, cfg)
        applied.append("patch")

    quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    img = _jpeg_round_trip(img, quality)
    applied.append("jpeg")
    return img, applied


def copy_seed(base_seed: int, item_index: int, copy_index: int) -> int:
    """One seed per (item, copy) of a data set of copies, so any single copy can be regenerated alone.

    SeedSequence mixes the three numbers (its output is fixed across numpy versions), which keeps nearby
    items and copies from getting correlated streams, as ``base_seed + item_index`` would."""
    state = np.random.SeedSequence([base_seed, item_index, copy_index]).generate_state(1, dtype=np.uint64)
    return int(state[0])


def make_copies(image: Image.Image, n: int, seed: int, cfg: CopyConfig | None = None, *,
                item_index: int = 0) -> list[Image.Image]:
    """``n`` copies of ``image``; the same ``seed`` (and ``item_index``) gives byte-identical copies.

    Copy ``k`` is ``make_copy(image, np.random.default_rng(copy_seed(seed, item_index, k)), cfg)``: each copy
    has its own generator, so copy ``k`` does not depend on ``n``. When building a data set, pass the item's
    index as ``item_index`` so different items do not receive the same edits."""
    if n < 0:
        raise ValueError("n must be >= 0")
    cfg = cfg if cfg is not None else CopyConfig()
    return [make_copy(image, np.random.default_rng(copy_seed(seed, item_index, k)), cfg)[0] for k in range(n)]


def _random_crop(img: Image.Image, rng: np.random.Generator, cfg: CopyConfig) -> Image.Image:
    """A crop of a random area fraction and aspect ratio at a random place (at least 1x1 pixel)."""
    width, height = img.size
    area = rng.uniform(*cfg.crop_scale) * width * height
    ratio = math.exp(rng.uniform(math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])))
    w = min(width, max(1, round(math.sqrt(area * ratio))))
    h = min(height, max(1, round(math.sqrt(area / ratio))))
    x = int(rng.integers(0, width - w + 1))
    y = int(rng.integers(0, height - h + 1))
    return img.crop((x, y, x + w, y + h))


def _rotate_and_trim(img: Image.Image, degrees: float) -> Image.Image:
    """Rotates, then keeps the largest upright rectangle free of the fill corners.

    Black corners would be an easy tell that no real re-post has, and would let a detector match on the
    corners rather than on the content."""
    width, height = img.size
    rotated = img.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True)
    w, h = _largest_inner_rectangle(width, height, math.radians(degrees))
    w, h = max(1, min(rotated.width, math.floor(w))), max(1, min(rotated.height, math.floor(h)))
    left, top = (rotated.width - w) // 2, (rotated.height - h) // 2
    return rotated.crop((left, top, left + w, top + h))


def _largest_inner_rectangle(width: int, height: int, angle: float) -> tuple[float, float]:
    """Width and height of the largest axis-aligned rectangle inside a ``width`` x ``height`` rectangle
    rotated by ``angle`` radians (the classic closed form: half-constrained when the rectangle is thin)."""
    long_side, short_side = max(width, height), min(width, height)
    sin_a, cos_a = abs(math.sin(angle)), abs(math.cos(angle))
    if short_side <= 2.0 * sin_a * cos_a * long_side or abs(sin_a - cos_a) < 1e-10:
        # Two corners of the inner rectangle touch the long side: the short side is the constraint.
        half = 0.5 * short_side
        w, h = (half / sin_a, half / cos_a) if width >= height else (half / cos_a, half / sin_a)
    else:
        cos_2a = cos_a * cos_a - sin_a * sin_a
        w, h = (width * cos_a - height * sin_a) / cos_2a, (height * cos_a - width * sin_a) / cos_2a
    return w, h


def _draw_text(img: Image.Image, rng: np.random.Generator, cfg: CopyConfig) -> None:
    """Stamps a random caption, its height a fraction of the short side, in place."""
    text = "".join(rng.choice(list(_TEXT_ALPHABET), size=int(rng.integers(3, 11))))
    height = max(_MIN_TEXT_HEIGHT, round(rng.uniform(*cfg.text_height) * min(img.size)))
    colour = (*(int(c) for c in rng.integers(0, 256, size=3)), int(rng.integers(160, 256)))
    tile = _text_tile(text, height, colour)
    # The caption may run off the right or bottom edge, as captions on small re-posts often do.
    x = int(rng.integers(0, max(1, img.width - tile.width // 2)))
    y = int(rng.integers(0, max(1, img.height - tile.height + 1)))
    img.paste(tile, (x, y), tile)


def _text_tile(text: str, height: int, colour: tuple[int, int, int, int]) -> Image.Image:
    """``text`` drawn in PIL's default font on a transparent tile about ``height`` pixels tall."""
    try:
        font = ImageFont.load_default(size=height)  # Pillow >= 10.1: a scalable FreeType font
    except TypeError:
        font = ImageFont.load_default()  # Pillow 10.0: one fixed-size bitmap font, scaled below
    left, top, right, bottom = font.getbbox(text)
    tile = Image.new("RGBA", (max(1, int(right - left)), max(1, int(bottom - top))), (0, 0, 0, 0))
    ImageDraw.Draw(tile).text((-left, -top), text, font=font, fill=colour)
    if not isinstance(font, ImageFont.FreeTypeFont) and tile.height != height:
        # The bitmap font (old Pillow, or Pillow without FreeType) has one size: scale the drawn tile.
        tile = tile.resize((max(1, round(tile.width * height / tile.height)), height),
                           Image.Resampling.BILINEAR)
    return tile


def _draw_patch(img: Image.Image, rng: np.random.Generator, cfg: CopyConfig) -> None:
    """Pastes an opaque rectangle of a random colour (a sticker, logo or emoji), in place."""
    area = rng.uniform(*cfg.patch_area) * img.width * img.height
    ratio = math.exp(rng.uniform(math.log(1 / 2), math.log(2)))
    w = min(img.width, max(1, round(math.sqrt(area * ratio))))
    h = min(img.height, max(1, round(math.sqrt(area / ratio))))
    x = int(rng.integers(0, img.width - w + 1))
    y = int(rng.integers(0, img.height - h + 1))
    colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
    ImageDraw.Draw(img).rectangle((x, y, x + w - 1, y + h - 1), fill=colour)


def _jpeg_round_trip(img: Image.Image, quality: int) -> Image.Image:
    """Encodes as JPEG and decodes again, so the copy carries real compression artefacts."""
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")
