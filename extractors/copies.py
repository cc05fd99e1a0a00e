"""Seeded near-duplicate ("copy") generator for copy-detection tests.

A copy is what an image looks like after it has been re-posted: cropped, slightly rotated, maybe mirrored,
colour-edited, blurred, stamped with a caption or a sticker, and re-compressed as a low-quality JPEG.
``make_copy`` applies a random subset of those edits, drawn from a ``numpy.random.Generator``, so the same
seed always gives the same bytes (on the same Pillow / libjpeg build).

The copy keeps its own size after crop and rotation instead of being resized back to the original: a real
copy found in the wild has a different size, and the gateway resizes every query to the model's input,
so forcing the original size would hide exactly the rescaling a detector has to cope with.

``apply_edit`` is the graded counterpart: ONE edit of one kind at one strength (``GRADED_LEVELS``: crop/zoom,
translation, flip, rotation, JPEG, blur, brightness, contrast, noise, sticker, caption, plus ``identity`` and the
combined ``strong`` copy), seeded per (seed, item, level) by ``level_rng``, for the graded near-duplicate
protocol of ``evaluation.near_duplicates``.

Pillow + numpy only, so the generator runs anywhere the data sets load.
"""

from __future__ import annotations

import io
import math
import string
import zlib
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
    _draw_graded_patch(img, rng, rng.uniform(*cfg.patch_area))


def _jpeg_round_trip(img: Image.Image, quality: int) -> Image.Image:
    """Encodes as JPEG and decodes again, so the copy carries real compression artefacts."""
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


# --- Graded single edits ---------------------------------------------------------------------------------------
#
# ``make_copy`` draws a random mix of strong edits: good for a realistic "strong" copy set, useless for telling
# extractors apart on 28x28 Fashion-MNIST (every one of them sits at the floor). A graded protocol applies ONE edit
# at a time, at strengths from barely visible to severe, so each level separates the extractors somewhere
# between "everyone finds it" and "nobody does" (Copydays grades JPEG quality and crop the same way).
#
# Strengths are given for a 28 px image and scale with the image where that makes sense, so the same level is
# the same visual edit on a 640 px photo: a translation of k (pixels at 28 px) moves a W x H image by k W / 28
# (or k H / 28) pixels, to the nearest half pixel; blur radii are in pixels at a 28 px short side; caption
# heights and patch areas are fractions of the image. Noise sigma, JPEG quality and enhance factors need no scaling.

GRADED_REFERENCE_SIDE = 28


@dataclass(frozen=True)
class EditLevel:
    """One edit at one strength. ``name`` is stable (results, reports and headline.json are keyed by it)."""

    kind: str
    strength: float
    name: str


def _level(kind: str, strength: float) -> EditLevel:
    return EditLevel(kind, float(strength), f"{kind}_{strength:g}")


# Every graded kind with its strengths, weakest first. The strengths were picked on Fashion-MNIST (28 px, 70k
# database, pixels and the femto ViTs) so that no level is at R@1 0 or 1 for every extractor at once (see
# evaluation/near_duplicates.py); the comments say which stronger grades were dropped for sitting at the floor.
GRADED_LEVELS: dict[str, list[EditLevel]] = {
    "identity": [EditLevel("identity", 0.0, "identity")],  # no edit: the sanity check (R@1 must be 1.0)
    # area kept; the gateway resizes the crop back (a zoom). At 28 px these are crops of 27, 26 and 25 px: one of
    # 23 px (area 0.65) is already at R@1 <= 0.01 for every extractor.
    "crop": [_level("crop", a) for a in (0.9, 0.85, 0.8)],
    # k px at 28 px along one random axis, black fill; 0.5 is a sub-pixel (bilinear) shift. 4 px is at the floor.
    "translate": [_level("translate", k) for k in (0.5, 1, 2, 3)],
    "flip": [EditLevel("flip", 1.0, "flip")],  # horizontal mirror
    # degrees, random sign, same size, black corners. 20 degrees is at the floor at 28 px.
    "rotate": [_level("rotate", d) for d in (2.5, 5, 7.5, 10)],
    "jpeg": [_level("jpeg", q) for q in (20, 10, 5, 2)],  # quality (50 is at the ceiling; below 2 nothing changes)
    "blur": [_level("blur", r) for r in (0.5, 0.75, 1, 1.5)],  # Gaussian radius in px at a 28 px short side
    "brightness": [_level("brightness", f) for f in (0.8, 0.6, 0.4)],  # ImageEnhance factor (darker)
    "contrast": [_level("contrast", f) for f in (0.8, 0.6, 0.4)],  # ImageEnhance factor (flatter)
    "noise": [_level("noise", s) for s in (16, 32, 64, 128)],  # Gaussian sigma in grey levels (0..255)
    "patch": [_level("patch", a) for a in (0.05, 0.1, 0.2, 0.3)],  # opaque sticker, fraction of the image area
    "text": [_level("text", h) for h in (0.2, 0.3, 0.4)],  # caption height, fraction of the short side
    # make_copy with CopyConfig.strong(): several heavy edits at once, the old copy-detection task. At 28 px it is
    # at the floor for every extractor: kept as the reference point it was, not as a grade.
    "strong": [EditLevel("strong", 1.0, "strong")],
}
# The kinds that move pixels around (what a descriptor must be geometrically robust to).
GEOMETRIC_KINDS = ("crop", "translate", "flip", "rotate")
ALL_LEVELS: list[EditLevel] = [lvl for levels in GRADED_LEVELS.values() for lvl in levels]
LEVELS_BY_NAME: dict[str, EditLevel] = {lvl.name: lvl for lvl in ALL_LEVELS}
# A few levels of different kinds, for tests and smoke runs.
QUICK_LEVEL_NAMES = ("identity", "crop_0.85", "translate_1", "flip", "rotate_5", "jpeg_10", "noise_32", "strong")


def get_level(level: EditLevel | str) -> EditLevel:
    if isinstance(level, EditLevel):
        return level
    if level not in LEVELS_BY_NAME:
        raise KeyError(f"unknown edit level {level!r}; known: {', '.join(LEVELS_BY_NAME)}")
    return LEVELS_BY_NAME[level]


def geometric_level_names(levels: list[EditLevel] | None = None) -> list[str]:
    """The names of the crop/zoom, translation, flip and rotation levels among ``levels`` (default: all)."""
    return [lvl.name for lvl in (levels if levels is not None else ALL_LEVELS) if lvl.kind in GEOMETRIC_KINDS]


def level_seed(base_seed: int, item_index: int, level: EditLevel | str) -> int:
    """One seed per (seed, item, level): any single edited query can be regenerated on its own.

    The level enters through the CRC-32 of its name (stable across runs and Python versions, unlike ``hash``)."""
    name = get_level(level).name
    return copy_seed(base_seed, item_index, zlib.crc32(name.encode()))


def level_rng(base_seed: int, item_index: int, level: EditLevel | str) -> np.random.Generator:
    return np.random.default_rng(level_seed(base_seed, item_index, level))


def apply_edit(image: Image.Image, level: EditLevel | str, rng: np.random.Generator) -> Image.Image:
    """``image`` after the one edit ``level`` (``strong``: ``make_copy`` with the strong preset).

    The input is never modified. Grey (mode L) images stay grey, anything else becomes RGB (``strong`` always
    returns RGB, as ``make_copy`` does). The output keeps the input's size except for ``crop`` (the cropped
    region, which the gateway resizes back to the model input: a zoom) and ``strong``. Random choices (crop
    position, rotation sign, shift direction, noise, patch and caption) come from ``rng``; pass
    ``level_rng(seed, item_index, level)`` for a reproducible data set."""
    level = get_level(level)
    img = image.copy() if image.mode in ("L", "RGB") else image.convert("RGB")
    kind, s = level.kind, level.strength
    width, height = img.size
    if kind == "identity":
        return img
    if kind == "crop":
        return _graded_crop(img, s, rng)
    if kind == "translate":
        return _translate(img, s, rng)
    if kind == "flip":
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if kind == "rotate":
        degrees = s if rng.random() < 0.5 else -s
        return img.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=_black(img))
    if kind == "jpeg":
        return _jpeg_keep_mode(img, int(s))
    if kind == "blur":
        return img.filter(ImageFilter.GaussianBlur(s * min(width, height) / GRADED_REFERENCE_SIDE))
    if kind == "brightness":
        return ImageEnhance.Brightness(img).enhance(s)
    if kind == "contrast":
        return ImageEnhance.Contrast(img).enhance(s)
    if kind == "noise":
        noisy = np.asarray(img, dtype=np.float64) + rng.normal(0.0, s, size=np.asarray(img).shape)
        return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))
    if kind == "patch":
        _draw_graded_patch(img, rng, s)
        return img
    if kind == "text":
        _draw_caption(img, rng, s)
        return img
    if kind == "strong":
        return make_copy(img, rng, CopyConfig.strong())[0]
    raise ValueError(f"unknown edit kind {kind!r}")


def _black(img: Image.Image) -> int | tuple[int, int, int]:
    return 0 if img.mode == "L" else (0, 0, 0)


def _graded_crop(img: Image.Image, area: float, rng: np.random.Generator) -> Image.Image:
    """A crop keeping ``area`` of the image with the image's own aspect ratio, at a random place."""
    if not 0 < area <= 1:
        raise ValueError("crop area must lie in (0, 1]")
    width, height = img.size
    side = math.sqrt(area)
    w, h = max(1, min(width, round(width * side))), max(1, min(height, round(height * side)))
    x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    return img.crop((x, y, x + w, y + h))


def translation_offset(size: tuple[int, int], k: float, rng: np.random.Generator) -> tuple[float, float]:
    """The (dx, dy) of a ``translate_k`` edit: k px at 28 px, scaled with the image and rounded to half a pixel,
    along one random axis and direction (right, left, down or up)."""
    width, height = size
    direction = int(rng.integers(0, 4))
    side, sign = (width, 1 if direction == 0 else -1) if direction < 2 else (height, 1 if direction == 2 else -1)
    shift = sign * round(2 * k * side / GRADED_REFERENCE_SIDE) / 2
    return (shift, 0.0) if direction < 2 else (0.0, shift)


def _translate(img: Image.Image, k: float, rng: np.random.Generator) -> Image.Image:
    """Shifts the content, keeping the size; what is uncovered becomes black (Fashion-MNIST's background). A
    whole-pixel shift moves the pixels exactly; a half-pixel one resamples bilinearly."""
    dx, dy = translation_offset(img.size, k, rng)
    if dx == int(dx) and dy == int(dy):
        out = Image.new(img.mode, img.size, _black(img))
        out.paste(img, (int(dx), int(dy)))
        return out
    return img.transform(img.size, Image.Transform.AFFINE, (1, 0, -dx, 0, 1, -dy),
                         resample=Image.Resampling.BILINEAR, fillcolor=_black(img))


def _jpeg_keep_mode(img: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert(img.mode)


def _draw_graded_patch(img: Image.Image, rng: np.random.Generator, area_fraction: float) -> None:
    """An opaque rectangle of ``area_fraction`` of the image (aspect 1:2 to 2:1), random place and colour
    (a random grey on a grey image), in place."""
    area = area_fraction * img.width * img.height
    ratio = math.exp(rng.uniform(math.log(1 / 2), math.log(2)))
    w = min(img.width, max(1, round(math.sqrt(area * ratio))))
    h = min(img.height, max(1, round(math.sqrt(area / ratio))))
    x = int(rng.integers(0, img.width - w + 1))
    y = int(rng.integers(0, img.height - h + 1))
    colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
    ImageDraw.Draw(img).rectangle((x, y, x + w - 1, y + h - 1), fill=colour[0] if img.mode == "L" else colour)


def _draw_caption(img: Image.Image, rng: np.random.Generator, height_fraction: float) -> None:
    """A random caption of a given height (fraction of the short side, at least 6 px), in place."""
    text = "".join(rng.choice(list(_TEXT_ALPHABET), size=int(rng.integers(3, 8))))
    height = max(_MIN_TEXT_HEIGHT, round(height_fraction * min(img.size)))
    colour = (*(int(c) for c in rng.integers(0, 256, size=3)), int(rng.integers(200, 256)))
    tile = _text_tile(text, height, colour)
    x = int(rng.integers(0, max(1, img.width - tile.width // 2)))
    y = int(rng.integers(0, max(1, img.height - tile.height + 1)))
    if img.mode == "L":
        img.paste(tile.convert("L"), (x, y), tile.getchannel("A"))
    else:
        img.paste(tile, (x, y), tile)
