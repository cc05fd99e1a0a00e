"""Any decoded Pillow image to 8-bit RGB, the one form every extractor takes.

Shared by the data sets and the gateway's decoder so that an image indexed from a folder and the same
image sent over gRPC become the same pixels."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

EXIF_ORIENTATION = 0x0112


def exif_turns(im: Image.Image, header_only: bool = False) -> bool:
    """Whether the image's EXIF orientation asks for a turn or flip. ``header_only``: from the EXIF already read
    with the header, never loading the image (Pillow's ``getexif`` decodes a whole PNG to look for EXIF stored after
    its pixels): what a cost estimate made before decoding may use."""
    if not header_only:
        return im.getexif().get(EXIF_ORIENTATION, 1) != 1
    raw = im.info.get("exif")
    if not raw:
        return False
    exif = Image.Exif()
    try:
        exif.load(raw)
    except Exception:  # noqa: BLE001 - unreadable EXIF turns nothing (to_rgb will see the same)
        return False
    return exif.get(EXIF_ORIENTATION, 1) != 1


def to_rgb(im: Image.Image) -> Image.Image:
    """EXIF orientation applied, then RGB. 16/32-bit grey is rescaled (``convert`` would clip it to white),
    transparency is composited on white (a transparent background is not black to a viewer)."""
    if exif_turns(im):  # exif_transpose copies even an image it does not turn
        im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(a)
        return Image.fromarray(a.astype(np.uint8)).convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im.convert("RGBA")).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")  # no full-size copy of what is RGB already


def to_model_input(im: Image.Image, size: int) -> np.ndarray:
    """The one model-input resize: any Pillow image -> uint8 [3, size, size] RGB (EXIF orientation applied, then
    a bilinear resize of the whole image to a square). The gateway, export's parity check and the offline
    evaluation all call this, so an image embedded offline and the same image sent to the gateway match."""
    rgb = to_rgb(im)
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))


def array_to_model_input(image: np.ndarray, size: int) -> np.ndarray:
    """An HxW (grey) or HxWx3 uint8 array -> uint8 [3, size, size], through ``to_model_input``."""
    return to_model_input(Image.fromarray(np.asarray(image, dtype=np.uint8)), size)
