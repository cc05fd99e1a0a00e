"""Results people would rather see than read: rich tables, PNG grids and an HTML page of result grids."""

from __future__ import annotations

import functools
import html
from pathlib import Path

import numpy as np
from PIL import Image
from rich.table import Table

from clients.sdk import SearchResult
from evaluation.figures import save_figure


@functools.lru_cache(maxsize=1)
def _fmnist():
    from extractors.datasets import load_fashion_mnist

    ds = load_fashion_mnist("all")
    return ds, {i: n for n, i in enumerate(ds.ids)}


@functools.lru_cache(maxsize=1)
def _photos():
    from extractors.datasets import load_photos

    ds = load_photos()
    return ds, {i: n for n, i in enumerate(ds.ids)}


def resolve_image(item_id: str, image_root: Path | None = None) -> Image.Image | None:
    """The picture behind an indexed id: a data-set id, or a path relative to ``image_root``."""
    if item_id.startswith("fmnist-"):
        ds, index = _fmnist()
        return ds.pil(index[item_id]) if item_id in index else None
    if item_id.split("/", 1)[0] in ("skimage", "sklearn", "foolbox"):
        ds, index = _photos()
        return ds.pil(index[item_id]) if item_id in index else None
    if image_root and (Path(image_root) / item_id).exists():
        return Image.open(Path(image_root) / item_id).convert("RGB")
    return None


def hits_table(result: SearchResult, title: str = "") -> Table:
    table = Table(title=title or f"hits ({result.model})")
    for col in ("rank", "id", "score", "verdict", "metadata"):
        table.add_column(col)
    for rank, h in enumerate(result.hits, 1):
        table.add_row(str(rank), h.id, f"{h.score:.4f}", h.verdict or "-",
                      ", ".join(f"{k}={v}" for k, v in h.metadata.items()))
    t = result.timings
    table.caption = (f"decode {t['decode_ms']:.1f} ms, embed {t['embed_ms']:.1f} ms, search {t['search_ms']:.1f} ms,"
                     f" total {t['total_ms']:.1f} ms (gateway)")
    return table


def save_grid(query, result: SearchResult, path: Path, image_root: Path | None = None, title: str = "") -> Path:
    """Query on the left, hits to the right with their scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q = query if isinstance(query, Image.Image) else Image.open(query).convert("RGB")
    n = len(result.hits) + 1
    fig, axes = plt.subplots(1, n, figsize=(1.6 * n, 2.0))
    axes = np.atleast_1d(axes)
    axes[0].imshow(q)
    axes[0].set_title("query", fontsize=8)
    for ax, hit in zip(axes[1:], result.hits, strict=True):
        im = resolve_image(hit.id, image_root)
        if im is not None:
            ax.imshow(im)
        ax.set_title(f"{hit.id[-18:]}\n{hit.score:.3f}", fontsize=6)
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def write_html(sections: list[tuple[str, list[tuple[str, Path]]]], path: Path, intro: str = "") -> Path:
    """An HTML page: one section per heading, each a list of (caption, PNG) result grids."""
    path = Path(path)
    parts = ["<!doctype html><meta charset='utf-8'><title>visual-search results</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}img{max-width:100%}</style>",
             "<h1>visual-search results</h1>", f"<p>{html.escape(intro)}</p>"]
    for heading, grids in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        for caption, png in grids:
            rel = Path(png).resolve().relative_to(path.parent.resolve())
            parts.append(f"<figure><img src='{html.escape(str(rel))}'><figcaption>{html.escape(caption)}"
                         "</figcaption></figure>")
    path.write_text("\n".join(parts))
    return path
