"""Bulk indexing through the gateway (``vsearch index``): progress, concurrency, resumable by id.

Resuming skips ids already stored, which is only right while the served model is the one that stored them. When
the weights behind a model name change (a retrained checkpoint is promoted), the stored vectors are another
model's and a search would compare across the two. So before the first skip, a sample of the stored items is
re-embedded and compared with what is stored; if any differs, nothing is skipped: every item is upserted again
(upserts are idempotent by id) and the summary says how many stale vectors were replaced."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from clients.sdk import Item, SearchClient

STALE_CHECK_ITEMS = 8  # stored items re-embedded before the first skip
# The same model re-embeds a stored image at cosine ~1.0 (float noise); other weights land far below.
STALE_MIN_COSINE = 0.99


def stored_vectors_match(client: SearchClient, model: str, stored: list[Item], images: dict[str, object]) -> bool:
    """Whether the served model still makes the ``stored`` items' vectors (read with them) from their images."""
    if not stored:
        return True
    now = client.embed(model, [images[it.id] for it in stored])
    return all(float(np.dot(np.asarray(it.vector), v)) >= STALE_MIN_COSINE for it, v in zip(stored, now, strict=True))


def _dataset_items(dataset: str, limit: int) -> tuple[int, Iterator[Item]]:
    from extractors.datasets import load_fashion_mnist, load_photos

    if dataset == "fashion-mnist":
        ds = load_fashion_mnist("all")
    elif dataset == "photos":
        ds = load_photos()
    else:
        raise ValueError(f"unknown dataset {dataset!r}: use fashion-mnist or photos")
    n = min(limit, len(ds)) if limit else len(ds)

    def items():
        for i in range(n):
            meta: dict[str, str | int] = {"source": ds.name}
            if ds.labels[i] >= 0:
                meta["label"] = int(ds.labels[i])
                meta["class_name"] = ds.classes[ds.labels[i]]
            if ds.ids[i].startswith("fmnist-"):
                meta["split"] = ds.ids[i].split("-")[1]
            yield Item(ds.ids[i], image=ds.pil(i), metadata=meta)

    return n, items()


def _folder_items(folder: Path, limit: int) -> tuple[int, Iterator[Item]]:
    from extractors.datasets.image_folder import list_images

    paths = list_images(folder)[: limit or None]
    return len(paths), (Item(p.relative_to(folder).as_posix(), image=p, metadata={"source": folder.name})
                        for p in paths)


def index_images(client: SearchClient, folder: Path | None, dataset: str | None, model: str | None, limit: int = 0,
                 batch_size: int = 64, concurrency: int = 4, resume: bool = True,
                 duplicate_policy: str = "allow") -> dict:
    if (folder is None) == (dataset is None):
        raise ValueError("give a folder or --dataset (not both)")
    model = model or client.list_models()[0].name
    total, items = _folder_items(Path(folder), limit) if folder is not None else _dataset_items(str(dataset), limit)
    start = time.perf_counter()
    skipped = stale = 0
    current: bool | None = None  # whether the stored vectors are the served model's (None: not checked yet)

    def fresh(stream: Iterator[Item]) -> Iterator[Item]:
        """Drops ids already stored (one Get per chunk), so an interrupted run picks up where it stopped."""
        nonlocal skipped
        chunk: list[Item] = []

        def flush():
            nonlocal skipped, stale, current
            # The first chunk that holds stored items is read with their vectors, for the check below.
            found = client.get(model, [c.id for c in chunk], include_vectors=current is None) if resume else []
            stored = {i.id for i in found}
            if found and current is None:
                current = stored_vectors_match(client, model, found[:STALE_CHECK_ITEMS], {c.id: c.image for c in chunk})
                if not current:
                    progress.console.print(f"[yellow]the stored vectors of {model} were made by other weights: "
                                           "indexing everything again[/]")
            if current is False:
                stale += len(stored)
                stored = set()
            skipped += len(stored)
            progress.update(task, advance=len(stored))
            yield from (c for c in chunk if c.id not in stored)

        for it in stream:
            chunk.append(it)
            if len(chunk) == 256:
                yield from flush()
                chunk = []
        if chunk:
            yield from flush()

    with Progress(TextColumn(f"[bold]indexing with {model}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]}"), TimeRemainingColumn()) as progress:
        task = progress.add_task("index", total=total, rate="")

        def on_batch(reply):
            elapsed = time.perf_counter() - start
            progress.update(task, advance=reply.received,
                            rate=f"{(progress.tasks[0].completed - skipped) / max(elapsed, 1e-9):.0f} img/s")

        result = client.upsert(fresh(items), model, batch_size=batch_size, concurrency=concurrency,
                               on_batch=on_batch, duplicate_policy=duplicate_policy)
    seconds = time.perf_counter() - start
    return {"model": model, "total": total, "indexed": result.upserted, "skipped_existing": skipped,
            "stale_vectors_replaced": stale,
            "errors": len(result.errors), "first_errors": result.errors[:5], "seconds": round(seconds, 1),
            "duplicates": len(result.duplicates), "skipped_duplicates": result.skipped,
            "images_per_s": round(result.upserted / max(seconds, 1e-9), 1)}
