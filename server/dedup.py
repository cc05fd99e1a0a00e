"""Duplicate groups of a collection: every pair scoring at or above a bound, joined into groups (union-find).

``FindDuplicates`` scans the collection by key pages (``VectorStore.scan``), range-searches each page against the
collection (``min_score`` = the bound, ``neighbours`` + 1 hits: an item finds itself), and adds every pair to a
``DuplicatePairs``. Memory is bounded by ``max_pairs``: past it the call fails with RESOURCE_EXHAUSTED (a bound
that low pairs up a large part of the collection; raise it). Time is one search per ``scan_batch`` items."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from server.errors import RpcError


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
