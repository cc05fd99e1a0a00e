"""The small image stored with each upserted item, so any client can show it (and the explainer can embed it):
the whole image, its longer side shrunk to ``thumbnail_px`` (never enlarged: a 28 px image is kept as it is),
PNG when it is grey (lossless and small for line art), JPEG otherwise."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

JPEG_QUALITY = 85


def make_thumbnail(rgb: Image.Image, px: int) -> bytes:
    """An RGB image -> encoded thumbnail bytes; b"" when ``px`` is 0 (thumbnails off)."""
    if px <= 0:
        return b""
    # resize allocates only the small result (Image.thumbnail works in place, so it would need a full-size copy
    # first: the decode budget charges the decoded image, not a second one).
    scale = min(1.0, px / max(rgb.size))
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    im = rgb if size == rgb.size else rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    a = np.asarray(im)
    buf = io.BytesIO()
    if a.ndim == 2 or (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2])):
        im.convert("L").save(buf, "PNG", optimize=True)
    else:
        im.save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()
