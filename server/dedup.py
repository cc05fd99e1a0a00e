"""Duplicate groups of a collection: every pair scoring at or above a bound, joined into groups (union-find).

``FindDuplicates`` scans the collection by key pages (``VectorStore.scan``), range-searches each page against the
collection (``min_score`` = the bound, ``neighbours`` + 1 hits: an item finds itself), and adds every pair to a
``DuplicatePairs``. Memory is bounded by ``max_pairs``: past it the call fails with RESOURCE_EXHAUSTED (a bound
that low pairs up a large part of the collection; raise it). Time is one search per ``scan_batch`` items."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
import numpy as np

from server.errors import RpcError
from server.vector_store import Hit, Record
from visualsearch.v1 import search_pb2 as pb


@dataclass(frozen=True)
class Group:
    ids: list[str]  # the most connected item first, then by id
    max_score: float


class DuplicatePairs:
    def __init__(self, max_pairs: int) -> None:
        self.max_pairs = max_pairs
        self._pairs: dict[tuple[str, str], float] = {}
        self._parent: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._pairs)

    def add(self, a: str, b: str, score: float) -> None:
        if a == b:
            return
        key = (a, b) if a < b else (b, a)
        if key in self._pairs:
            self._pairs[key] = max(self._pairs[key], score)
            return
        if len(self._pairs) >= self.max_pairs:
            raise RpcError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"more than {self.max_pairs} duplicate pairs (dedup_max_pairs): raise min_score or ask "
                           "for a stricter min_verdict")
        self._pairs[key] = score
        self._parent[self._find(a)] = self._find(b)

    def _find(self, x: str) -> str:
        parent = self._parent.setdefault(x, x)
        while parent != x:  # path halving
            self._parent[x] = self._parent[parent]
            x, parent = parent, self._parent[parent]
        return x

    def groups(self) -> list[Group]:
        """Largest groups first (then by best score)."""
        members: dict[str, list[str]] = {}
        for x in self._parent:
            members.setdefault(self._find(x), []).append(x)
        degree: dict[str, int] = {}
        best: dict[str, float] = {}
        for (a, b), score in self._pairs.items():
            degree[a] = degree.get(a, 0) + 1
            degree[b] = degree.get(b, 0) + 1
            root = self._find(a)
            best[root] = max(best.get(root, -2.0), score)
        out = [Group(sorted(ids, key=lambda i: (-degree[i], i)), best[root]) for root, ids in members.items()]
        out.sort(key=lambda g: (-len(g.ids), -g.max_score, g.ids[0]))
        return out


async def find_duplicates(scan: Callable[[str | None, int], Awaitable[list[Record]]],
                          search: Callable[..., Awaitable[list[list[Hit]]]], total: int, bound: float,
                          neighbours: int, scan_batch: int, max_pairs: int,
                          start: float) -> AsyncIterator[pb.FindDuplicatesResponse]:
    """The FindDuplicates stream: progress after each page, then the groups, then the summary. ``scan(after, n)``
    reads a key page, ``search(vectors, top_k, filters, output_fields, min_score)`` range-searches it."""
    pairs = DuplicatePairs(max_pairs)
    scanned, after = 0, None
    while page := await scan(after, scan_batch):
        after = page[-1].id
        hits = await search(np.stack([r.vector for r in page]), neighbours + 1, (), [], min_score=bound)
        for record, row in zip(page, hits, strict=True):
            for h in row:
                pairs.add(record.id, h.id, h.score)
        scanned += len(page)
        yield pb.FindDuplicatesResponse(progress=pb.DuplicatesProgress(scanned=scanned, total=max(total, scanned)))
    groups = pairs.groups()
    for g in groups:
        yield pb.FindDuplicatesResponse(group=pb.DuplicateGroup(ids=g.ids, max_score=g.max_score))
    yield pb.FindDuplicatesResponse(summary=pb.DuplicatesSummary(
        items=scanned, pairs=len(pairs), groups=len(groups), elapsed_s=time.perf_counter() - start, min_score=bound))
