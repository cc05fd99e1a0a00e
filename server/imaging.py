"""Encoded image bytes -> the model's uint8 [3, S, S] input, with limits that keep the gateway alive.

Limits are checked before pixels are decoded: the header tells the size, so a decompression bomb
(a small PNG that decodes to 30000x30000) is refused without allocating it. JPEG "draft" mode lets
libjpeg decode at 1/2, 1/4 or 1/8 scale directly when the model needs far fewer pixels."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from extractors.imaging import to_model_input as model_input
from extractors.imaging import to_rgb
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
            if im.format == "JPEG" and region is None:
                im.draft("RGB", (max(size, thumbnail_px), max(size, thumbnail_px)))  # the smallest 1/2^k scale >= size
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

