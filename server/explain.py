"""Why a hit matched, from the served graph's ``patch_contributions`` (``extractors.contributions``): numpy only.

A query's contributions ``C`` [regions, D] split its unit embedding over its regions (plus a non-spatial rest), so
with a hit's stored unit vector ``h`` the cosine score splits as ``score = sum(C @ h) + non_spatial``: the query
heatmap is ``C @ h``. The hit side is the same with the roles swapped: the hit's contributions (from its stored
thumbnail, embedded by the same graph) times the query's vector."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from server.overlay import overlay_png
from visualsearch.v1 import search_pb2 as pb


@dataclass(frozen=True)
class Side:
    """One side of a match: its unit vector, and where the graph saw its pixels, their contributions."""

    vector: np.ndarray  # [D]
    contributions: np.ndarray | None = None  # [regions, D]
    embedding: np.ndarray | None = None  # [D]: what the graph made of these pixels
    pixels: np.ndarray | None = None  # uint8 [3, S, S]: what the overlay is drawn on


def grid_side(regions: int) -> int:
    side = math.isqrt(regions)
    if side * side != regions:
        raise ValueError(f"{regions} regions are not a square grid")
    return side


def explanation(query: Side, hit: Side, overlay_px: int = 0) -> pb.Explanation:
    """The per-region shares of the score of ``query`` with ``hit`` (see the module doc); PNG overlays when
    ``overlay_px`` > 0 and the side's pixels are known."""
    regions = next((s.contributions.shape[0] for s in (query, hit) if s.contributions is not None), 0)
    side = grid_side(regions) if regions else 0
    out = pb.Explanation(grid_h=side, grid_w=side)
    if query.contributions is not None:
        heat = query.contributions @ hit.vector
        out.query_heatmap.extend(heat.tolist())
        seen = query.embedding if query.embedding is not None else query.vector
        out.non_spatial = float(seen @ hit.vector - heat.sum())
        if overlay_px and query.pixels is not None:
            out.query_overlay_png = overlay_png(query.pixels, heat.reshape(side, side), overlay_px)
    if hit.contributions is not None:
        heat = hit.contributions @ query.vector
        out.hit_heatmap.extend(heat.tolist())
        if overlay_px and hit.pixels is not None:
            out.hit_overlay_png = overlay_png(hit.pixels, heat.reshape(side, side), overlay_px)
    return out
