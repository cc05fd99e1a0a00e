"""A heatmap laid over an image, as a PNG a page can show as it is: red where a region adds to the score, blue where
it takes away, more opaque the larger its share (scaled to the largest share of the map)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

MAX_ALPHA = 0.65
PALETTE_COLOURS = 128


def overlay_png(pixels: np.ndarray, heatmap: np.ndarray, side: int) -> bytes:
    """``pixels`` uint8 [3, H, W] and a [gh, gw] heatmap -> PNG bytes, ``side`` x ``side`` pixels."""
    image = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0))).resize((side, side),
                                                                                  Image.Resampling.BICUBIC)
    heat = np.asarray(Image.fromarray(heatmap.astype(np.float32), mode="F").resize(
        (side, side), Image.Resampling.BILINEAR), dtype=np.float32)
    scale = float(np.abs(heatmap).max())
    strength = np.abs(heat) / scale if scale > 0 else np.zeros_like(heat)
    colour = np.where((heat >= 0)[..., None], np.array([255, 40, 0], np.float32), np.array([0, 90, 255], np.float32))
    alpha = (MAX_ALPHA * np.clip(strength, 0, 1))[..., None]
    blended = np.asarray(image, dtype=np.float32) * (1 - alpha) + colour * alpha
    buf = io.BytesIO()
    # A 128-colour palette at zlib level 1: 20 overlays per search; measured on a 160 px overlay, 0.7 ms and 5 KB
    # against 5.8 ms and 16 KB for full RGB at the default level.
    Image.fromarray(blended.round().astype(np.uint8)).quantize(PALETTE_COLOURS, method=Image.Quantize.FASTOCTREE) \
        .save(buf, "PNG", compress_level=1)
    return buf.getvalue()
