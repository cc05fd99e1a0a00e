"""Encoded image bytes -> the model's uint8 [3, S, S] input, with limits that keep the gateway alive.

Limits are checked before pixels are decoded: the header tells the size, so a decompression bomb
(a small PNG that decodes to 30000x30000) is refused without allocating it. JPEG "draft" mode lets
libjpeg decode at 1/2, 1/4 or 1/8 scale directly when the model needs far fewer pixels."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from extractors.imaging import exif_turns, to_rgb
from extractors.imaging import to_model_input as model_input
from server.thumbnails import make_thumbnail

Box = tuple[float, float, float, float]  # normalised x0, y0, x1, y1 (server.validation.check_region)

ALLOWED_FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"}


class ImageRejected(ValueError):
    """The image can't be used; ``too_large`` distinguishes RESOURCE_EXHAUSTED from INVALID_ARGUMENT."""

    def __init__(self, message: str, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


_CORRUPT = (OSError, ValueError, SyntaxError, EOFError, MemoryError, IndexError, TypeError, ZeroDivisionError)


def open_image(data: bytes, max_bytes: int, max_pixels: int) -> Image.Image:
    """Reads only the header and applies the limits: cheap whatever the image, so it runs on the event loop."""
    if not data:
        raise ImageRejected("image is empty: send the encoded bytes of a JPEG, PNG, WebP, GIF, BMP or TIFF file")
    if len(data) > max_bytes:
        raise ImageRejected(f"image is {len(data)} bytes; the limit is {max_bytes} bytes", too_large=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageRejected(f"image is too large to decode: {e}", too_large=True) from None
    except UnidentifiedImageError:
        raise ImageRejected("bytes are not an image in a known format (JPEG, PNG, WebP, GIF, BMP, TIFF)") from None
    except _CORRUPT as e:
        raise ImageRejected(f"image is corrupt or truncated: {type(e).__name__}: {e}") from None
    if im.format not in ALLOWED_FORMATS:
        raise ImageRejected(f"unsupported image format {im.format}; use JPEG, PNG, WebP, GIF, BMP or TIFF")
    w, h = im.size
    if w < 1 or h < 1:
        raise ImageRejected(f"image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageRejected(f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}", too_large=True)
    return im


def _pixel_bytes(mode: str) -> int:
    """Bytes per pixel of a Pillow image in memory: 1 for 1/L/P, 2 for 16-bit grey, else 4 (RGB is stored as 32 bit)."""
    return 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4


def _conversion_bytes(im: Image.Image) -> int:
    """Bytes per pixel that extractors.imaging.to_rgb holds besides the decoded image: none for RGB, an RGB copy
    for most modes, a white background, an RGBA copy and the composite for transparency, the float64 and 8-bit
    arrays for 16/32-bit grey."""
    if im.mode == "RGB":
        return 0
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        return 4 * 4
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        return 8 + 1 + 1 + 4
    return 4


def decode_cost(im: Image.Image, size: int, region: Box | None = None, thumbnail_px: int = 0) -> int:
    """Peak bytes that decoding this opened image into model input holds, from its header alone (a JPEG is first
    set to decode at the smallest 1/2^k scale still >= size, so its cost is that of the reduced image). An EXIF
    rotation copies the image once more, and so does a region's crop (the box's size)."""
    _draft(im, size, region, thumbnail_px)  # idempotent: decode's own call then changes nothing
    w, h = im.size
    # to_rgb copies only an image it turns; the header's EXIF only: nothing may be decoded before admission
    cost = w * h * (_pixel_bytes(im.mode) * (2 if exif_turns(im, header_only=True) else 1) + _conversion_bytes(im))
    if region is not None:  # the crop is one more RGB copy, of the box
        x0, y0, x1, y1 = region
        cost += int(w * h * (x1 - x0) * (y1 - y0)) * 4
    return cost


def to_model_input(im: Image.Image, size: int, region: Box | None = None) -> np.ndarray:
    """An opened (header-checked) image -> uint8 [3, size, size] RGB: EXIF orientation applied, cropped to
    ``region`` (normalised x0, y0, x1, y1 of the upright image) when given, then resized."""
    return decode(im, size, region)[0]


def decode(im: Image.Image, size: int, region: Box | None = None, thumbnail_px: int = 0) -> tuple[np.ndarray, bytes]:
    """``to_model_input``, and the image's thumbnail (``server.thumbnails``; b"" when ``thumbnail_px`` is 0) from
    the same decoded pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            _draft(im, size, region, thumbnail_px)
            im.load()
            if region is None and not thumbnail_px:
                return model_input(im, size), b""
            rgb = to_rgb(im)
            thumbnail = make_thumbnail(rgb, thumbnail_px)
            if region is not None:
                w, h = rgb.size
                x0, y0, x1, y1 = region
                # At least one pixel: a box thinner than a pixel still crops the pixel it lies in.
                left, top = min(int(x0 * w), w - 1), min(int(y0 * h), h - 1)
                rgb = rgb.crop((left, top, max(left + 1, round(x1 * w)), max(top + 1, round(y1 * h))))
            return model_input(rgb, size), thumbnail
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageRejected(f"image is too large to decode: {e}", too_large=True) from None
    except _CORRUPT as e:
        # Truncated and corrupt files surface as any of these from Pillow's plugins.
        raise ImageRejected(f"image is corrupt or truncated: {type(e).__name__}: {e}") from None


def _draft(im: Image.Image, size: int, region: Box | None, thumbnail_px: int) -> None:
    """A JPEG decodes at the smallest 1/2^k scale still >= what is made of it (model input, thumbnail); a region
    is cropped from the full image (a small box of a reduced image would have too few pixels)."""
    if im.format == "JPEG" and region is None:
        side = max(size, thumbnail_px)
        im.draft("RGB", (side, side))
