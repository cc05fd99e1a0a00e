"""Live retrieval quality: a sampled share of live searches is re-run against a reference search in the background,
and recall@k of the answer the caller got is exported (``vsearch_live_recall_at_k``), with the distribution of
every search's top score (``vsearch_top_score``). An index that degrades (a bad build, too small an ef for the
data, drift in the embeddings) shows as falling recall or shifting scores before users report it.

The reference: Milvus 2.3.5 cannot run a FLAT (exhaustive) search on a collection indexed with HNSW, and fetching
every stored vector to rank them in numpy costs the whole collection per sample (70,000 x 256 floats: 72 MB). So the
reference is the same HNSW graph searched with a very wide beam (``live_recall_reference_ef``, 2048 by default):
on a collection up to about ef items this visits nearly every node, and on larger ones it is far more thorough than
the serving ef (24), so the measure is recall against a near-exact answer (an upper bound on the true recall).
The cost is bounded: sampled searches wait in a queue of ``live_recall_queue`` for one worker, and any more are
dropped (counted), so at most one reference search runs at a time whatever the load."""

from __future__ import annotations

import asyncio
import functools
import logging
import random

import numpy as np

from server.load_metrics import LoadMetrics
from server.vector_store import FilterClause, Hit, VectorStore

log = logging.getLogger("vsearch.gateway")


class LiveRecall:
    def __init__(self, store: VectorStore, sample_rate: float, queue_size: int, reference_ef: int,
                 metrics: LoadMetrics, rng: random.Random | None = None) -> None:
        self.store = store
        self.sample_rate = sample_rate
        self.reference_ef = reference_ef
        self.metrics = metrics
        self.rng = rng or random.Random()
        self._queue: asyncio.Queue[tuple[str, tuple[FilterClause, ...], np.ndarray, list[str], int]] = \
            asyncio.Queue(maxsize=max(1, queue_size))
        self._worker: asyncio.Task | None = None

    def observe(self, model: str, filters: tuple[FilterClause, ...], vector: np.ndarray, hits: list[Hit],
                top_k: int, comparable: bool = True) -> None:
        """Called with each answered search: its top score is recorded, and a sampled share is queued for the
        reference search. ``comparable``: False for a range search or a later page, whose hits are not the top-k
        list a reference search answers."""
        if hits:
            self.metrics.top_score.labels(model).observe(hits[0].score)
        if not comparable or self.sample_rate <= 0 or self.rng.random() >= self.sample_rate:
            return
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work())
        try:
            self._queue.put_nowait((model, filters, np.array(vector, dtype=np.float32), [h.id for h in hits], top_k))
        except asyncio.QueueFull:
            self.metrics.recall_dropped.inc()

    async def _work(self) -> None:
        while True:
            model, filters, vector, answered, k = await self._queue.get()
            try:
                (reference,) = await asyncio.to_thread(functools.partial(
                    self.store.search, model, vector[None], k, filters, [], ef=max(self.reference_ef, k)))
            except Exception as e:  # noqa: BLE001 - a failed measurement must never touch serving
                log.debug("live recall: reference search failed: %s", e)
                continue
            if reference:
                found = len(set(answered[:k]) & {h.id for h in reference})
                self.metrics.recall.labels(model).observe(found / len(reference))

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
