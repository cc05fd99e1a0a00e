"""The dedup gate on Upsert: is an upserted item a near-duplicate (or better) of an item with another id?

An item is compared with three sets, and its match is the best-scoring item at or above the bound among them:
the store (a range search at Bounded consistency, done by the caller), this gateway's recent writes
(``server.recent_writes``: what the store may not show yet) and the earlier items of the same chunk that are
written. An item is never a duplicate of itself: candidates with its own id are skipped, so re-upserting an id
(idempotency by id) passes. What happens to a match is the item's policy (``server.convert.POLICIES``):
allow (not checked at all), flag (written and reported), skip (reported, not written), reject (reported and an
ItemError ALREADY_EXISTS)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from server.vector_store import Hit

WRITES = frozenset({"allow", "flag"})  # policies under which a matched item is still written


@dataclass(frozen=True)
class Match:
    duplicate_of: str
    score: float


def gate(ids: list[str], vectors: np.ndarray, policies: list[str], stored: list[list[Hit]], recent_ids: list[str],
         recent_vectors: np.ndarray | None, bound: float) -> list[Match | None]:
    """Per item, its best match scoring >= ``bound`` (None: no match, or policy allow). ``stored[i]``: the store's
    hits for item ``i`` (empty when it was not searched)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    recent = vectors @ recent_vectors.T if recent_vectors is not None and len(recent_ids) else None
    chunk = vectors @ vectors.T
    written: list[int] = []  # earlier items of the chunk that are written
    out: list[Match | None] = []
    for i, (item_id, policy) in enumerate(zip(ids, policies, strict=True)):
        best: Match | None = None
        if policy != "allow":
            candidates = [(h.id, h.score) for h in stored[i]]
            if recent is not None:
                candidates += [(recent_ids[k], float(recent[i, k])) for k in np.flatnonzero(recent[i] >= bound)]
            candidates += [(ids[j], float(chunk[i, j])) for j in written if chunk[i, j] >= bound]
            for other, score in candidates:
                if other != item_id and score >= bound and (best is None or score > best.score):
                    best = Match(other, score)
        out.append(best)
        if best is None or policy in WRITES:
            written.append(i)
    return out
