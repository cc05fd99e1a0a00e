"""This gateway's own writes of the last seconds, in memory, for the dedup gate on Upsert.

The gate searches Milvus at Bounded consistency (a Session read waits for the previous write to become visible:
~200 ms per chunk, measured), so a row written within Milvus's staleness window (5 s) may not be found there yet.
Those rows are kept here for ``window_s`` and compared by one matrix product per chunk. Writes by another gateway
replica within the window can still be missed: the cost of not waiting."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass
class _Write:
    at: float
    ids: list[str]
    vectors: np.ndarray  # float32 [N, D], unit norm


class RecentWrites:
    def __init__(self, window_s: float, max_items: int) -> None:
        self.window_s = window_s
        self.max_items = max_items
        self._writes: dict[str, deque[_Write]] = {}
        self._forgotten: dict[str, set[str]] = {}

    def add(self, model: str, ids: list[str], vectors: np.ndarray) -> None:
        if not ids:
            return
        writes = self._writes.setdefault(model, deque())
        writes.append(_Write(time.monotonic(), list(ids), np.asarray(vectors, dtype=np.float32)))
        self._forgotten.get(model, set()).difference_update(ids)
        self._expire(model)

    def forget(self, model: str, ids: list[str]) -> None:
        """Deleted ids are no longer something to be a duplicate of."""
        if model in self._writes:
            self._forgotten.setdefault(model, set()).update(ids)

    def snapshot(self, model: str) -> tuple[list[str], np.ndarray | None]:
        """(ids, float32 [N, D]) of the writes still in the window, the latest write of an id last."""
        self._expire(model)
        writes = self._writes.get(model)
        if not writes:
            return [], None
        gone = self._forgotten.get(model, set())
        ids = [i for w in writes for i in w.ids]
        vectors = np.concatenate([w.vectors for w in writes])
        if gone:
            keep = [k for k, i in enumerate(ids) if i not in gone]
            ids, vectors = [ids[k] for k in keep], vectors[keep]
        return ids, vectors

    def _expire(self, model: str) -> None:
        writes = self._writes.get(model)
        if not writes:
            return
        oldest = time.monotonic() - self.window_s
        total = sum(len(w.ids) for w in writes)
        while writes and (writes[0].at < oldest or total > self.max_items):
            total -= len(writes.popleft().ids)
        if not writes:
            self._writes.pop(model, None)
            self._forgotten.pop(model, None)
