"""The page's example images: a few Fashion-MNIST test images (for the ViT, PNG) and photos (for the CNN, JPEG)."""

from __future__ import annotations

import io
from functools import lru_cache

from extractors.datasets import load_fashion_mnist, load_photos

FMNIST_EXAMPLES = (0, 1, 2, 3, 4, 5)
PHOTO_EXAMPLES = ("skimage/astronaut.png", "skimage/chelsea.png", "skimage/coffee.png")


@lru_cache(maxsize=1)
def examples() -> dict[str, bytes]:
    """Example name -> encoded image bytes (loaded once)."""
    out = {}
    fmnist = load_fashion_mnist("test")
    for i in FMNIST_EXAMPLES:
        out[fmnist.ids[i].replace("/", "-")] = _encode(fmnist.pil(i), "PNG")
    photos = load_photos()
    for pid in PHOTO_EXAMPLES:
        if pid in photos.ids:
            name = "photo-" + pid.replace("/", "-").removesuffix(".png")
            out[name] = _encode(photos.pil(photos.ids.index(pid)).convert("RGB"), "JPEG")
    return out


def _encode(image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()
