"""Load tests for the gateway: a locust user (``locustfile.py``) and a ghz config (``ghz.json``); see README.md.

Query payloads are Fashion-MNIST test images encoded as PNG. ``ghz.json`` embeds one of them as base64 and is
generated, deterministically, by ``write_ghz_config()``::

    .venv/bin/python -c "from clients.loadtest import write_ghz_config; write_ghz_config()"
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

LOADTEST_DIR = Path(__file__).resolve().parent
REPO_ROOT = LOADTEST_DIR.parents[1]
GHZ_CONFIG = LOADTEST_DIR / "ghz.json"
PROTO = "proto/visualsearch/v1/search.proto"  # relative to the repository root, where ghz is run from
GHZ_CALL = "visualsearch.v1.SearchService.Search"
GHZ_MODEL = "dino_vit_femto_p7_fmnist"
GHZ_IMAGE_INDEX = 0  # Fashion-MNIST test image 0 (an ankle boot)


def png_bytes(pixels: np.ndarray) -> bytes:
    """A uint8 [H, W] (grey) or [H, W, 3] array as PNG bytes; same pixels and Pillow -> same bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def fashion_mnist_pngs(n: int, offset: int = 0, split: str = "test") -> list[bytes]:
    """Fashion-MNIST images [offset, offset + n) of ``split`` as grey PNGs (about 300 bytes each)."""
    from extractors.datasets import load_fashion_mnist

    ds = load_fashion_mnist(split)
    return [png_bytes(ds.images[i]) for i in range(offset, min(offset + n, len(ds.images)))]


def ghz_config(model: str = GHZ_MODEL, image_index: int = GHZ_IMAGE_INDEX, host: str = "127.0.0.1:50051",
               concurrency: int = 16, total: int = 5000, top_k: int = 10) -> dict:
    """A ghz run config: ``Search`` by one Fashion-MNIST test image (bytes fields are base64 in ghz JSON data)."""
    (image,) = fashion_mnist_pngs(1, offset=image_index)
    return {
        "name": f"visualsearch Search by image ({model})",
        "proto": PROTO,
        "import-paths": ["proto"],
        "call": GHZ_CALL,
        "host": host,
        "insecure": True,
        "concurrency": concurrency,
        "connections": 1,
        "total": total,
        "timeout": "10s",
        "skipFirst": concurrency,
        "data": {"model": model, "image": base64.b64encode(image).decode("ascii"), "top_k": top_k},
    }


def write_ghz_config(path: Path = GHZ_CONFIG, **kwargs) -> Path:
    path.write_text(json.dumps(ghz_config(**kwargs), indent=2) + "\n")
    return path
