"""What a search adds to its hits on request: their stored thumbnails (``include_thumbnails``) and why they matched
(``explain``, ``explain_png``; see ``server.explain``).

One store read per search fetches the hits' vectors and thumbnails (and, for a search by id, the query item's),
and one Triton call embeds every image the explanations need: the query's pixels (its thumbnail for a search by id)
and each hit's thumbnail. A hit with no thumbnail gets a query-side heatmap only; a search by vector a hit side
only. A 28 px item's thumbnail is the image itself, so its heatmap is exact; a photo's 64 px thumbnail is an
approximation of what was indexed."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable

import numpy as np
from PIL import Image

from server.explain import Side, explanation
from server.imaging import to_model_input
from server.vector_store import Record
from visualsearch.v1 import search_pb2 as pb

GetRecords = Callable[[str, list[str]], Awaitable[list[Record]]]
Embed = Callable[[str, np.ndarray], Awaitable[tuple[np.ndarray, np.ndarray]]]


def thumbnail_pixels(data: bytes, size: int) -> np.ndarray | None:
    """A stored thumbnail -> the model's input (None when there is none or it does not decode)."""
    if not data:
        return None
    try:
        return to_model_input(Image.open(io.BytesIO(data)), size)
    except Exception:  # noqa: BLE001 - a damaged thumbnail loses its heatmap, never the search
        return None


async def add_details(response: pb.SearchResponse, request: pb.SearchRequest, input_size: int,
                      query_pixels: np.ndarray | None, query_vector: np.ndarray | None,
                      get_records: GetRecords, embed: Embed, overlay_px: int) -> None:
    """Fills, in place, the thumbnails and explanations ``request`` asked for into ``response``'s hits."""
    model = response.model
    by_id = request.id if request.WhichOneof("query") == "id" else None
    wanted = [h.id for h in response.hits] + ([by_id] if by_id and request.explain else [])
    if not wanted:
        return
    records = {r.id: r for r in await get_records(model, wanted)}
    if request.include_thumbnails:
        for hit in response.hits:
            if hit.id in records:
                hit.thumbnail = records[hit.id].thumbnail
    if not request.explain:
        return
    if query_pixels is None and by_id in records:
        query_pixels = await asyncio.to_thread(thumbnail_pixels, records[by_id].thumbnail, input_size)
    hits = [h for h in response.hits if h.id in records]
    hit_pixels = await asyncio.to_thread(lambda: [thumbnail_pixels(records[h.id].thumbnail, input_size) for h in hits])
    batch = ([query_pixels] if query_pixels is not None else []) + [p for p in hit_pixels if p is not None]
    embeddings, contributions = (await embed(model, np.stack(batch))) if batch else (None, None)
    k = 0
    query = Side(vector=query_vector if query_vector is not None else np.zeros(0, np.float32))
    if query_pixels is not None:
        assert embeddings is not None and contributions is not None
        # An image query's vector is the one the graph makes of its pixels; a search by id keeps the stored one.
        vector = embeddings[0] if query_vector is None else query_vector
        query = Side(vector, contributions[0], embeddings[0], query_pixels)
        k = 1
    sides = []
    for hit, pixels in zip(hits, hit_pixels, strict=True):
        side = Side(records[hit.id].vector)
        if pixels is not None:
            assert embeddings is not None and contributions is not None
            side = Side(side.vector, contributions[k], embeddings[k], pixels)
            k += 1
        sides.append(side)

    def explain_all() -> list[pb.Explanation]:
        return [explanation(query, side, overlay_px) for side in sides]

    # Heatmaps alone are a few dot products; drawing PNG overlays is worth a thread.
    for hit, out in zip(hits, await asyncio.to_thread(explain_all) if overlay_px else explain_all(), strict=True):
        hit.explanation.CopyFrom(out)
