"""The page's example images: a few Fashion-MNIST test images (for the ViT, PNG) and photos (for the CNN, JPEG)."""

from __future__ import annotations

import io
import logging
from functools import lru_cache

from PIL import Image

from extractors.datasets import load_fashion_mnist
from extractors.datasets.photos import photo_paths

log = logging.getLogger("vsearch.web")
FMNIST_EXAMPLES = (0, 1, 2, 3, 4, 5)
PHOTO_EXAMPLES = ("skimage/astronaut.png", "skimage/chelsea.png", "skimage/coffee.png")


@lru_cache(maxsize=1)
def examples() -> dict[str, bytes]:
    """Example name -> encoded image bytes (loaded once). A data set that is not installed (the production image
    ships neither) just gives no examples: the page works without them."""
    out = {}
    try:
        fmnist = load_fashion_mnist("test")
        for i in FMNIST_EXAMPLES:
            out[fmnist.ids[i].replace("/", "-")] = _encode(fmnist.pil(i), "PNG")
    except (OSError, ImportError) as e:
        log.info("no Fashion-MNIST examples: %s", e)
    try:
        paths = dict(photo_paths())  # only the chosen photos are decoded
    except (OSError, ImportError) as e:
        log.info("no photo examples: %s", e)
        return out
    for pid in PHOTO_EXAMPLES:
        if pid in paths:
            name = "photo-" + pid.replace("/", "-").removesuffix(".png")
            with Image.open(paths[pid]) as im:
                out[name] = _encode(im.convert("RGB"), "JPEG")
    return out


def _encode(image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()
