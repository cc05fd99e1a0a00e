"""Waiting until Milvus has settled: every row in sealed, HNSW-indexed segments, the segments it serves exactly the
ones it stores, and that set unchanged for a while.

Milvus 2.3 indexes sealed segments only (a flush seals them), and searching a growing or unindexed segment is brute
force. After a bulk write it keeps reorganising on its own for a minute or two: every upsert writes a delete too, so
every segment is compacted once and small ones are merged, each result indexed and handed off again. Its compaction
runs every 60 s, so a segment set unchanged for ``MILVUS_SETTLE_S`` is final; measuring before that measures the
wrong thing, and shares the cores with the compaction."""

from __future__ import annotations

import contextlib
import re
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from server.vector_store.milvus import VECTOR_FIELD, MilvusVectorStore

SEALED = 3  # pymilvus SegmentState.Sealed
# Milvus indexes sealed segments of at least this many rows; smaller ones are brute-forced.
MIN_INDEXED_ROWS = 1024


@dataclass(frozen=True)
class Look:
    """One look at a collection."""
    ok: bool  # the wanted state holds now
    loaded: frozenset[int]  # the segments answering searches
    stored: frozenset[int]  # the segments the data coordinator holds (with rows); ``loaded`` when not compared
    indexed_rows: int | None  # the index's own count of indexed rows (None when not asked)
    served_rows: int  # rows in loaded, indexed segments
    pending: int  # loaded segments still waiting for a seal or an index, plus rows still in growing segments

    def __str__(self) -> str:
        return (f"indexed rows {self.indexed_rows}, served rows {self.served_rows}, {len(self.loaded)} segments "
                f"loaded, {len(self.stored)} stored, {self.pending} unindexed")


def server_client(uri: str, timeout_s: float = 60) -> contextlib.closing:
    """A pymilvus client of its own (not shared with the store under test), closed at the end."""
    from pymilvus import MilvusClient

    return contextlib.closing(MilvusClient(uri=uri, timeout=timeout_s, dedicated=True))


def look_server(client, collection: str, rows: int | None = None, *, small_rows: int = 0, match_stored: bool = True,
                growing_rows: Callable[[], int] | None = None) -> Look:
    """A Milvus server's view of ``collection``: ok when it serves some segments, each sealed and indexed (those under
    ``small_rows`` may stay unindexed), no growing rows (when ``growing_rows`` can tell), the served set the stored set
    (when ``match_stored``), and at least ``rows`` rows indexed and served (when given)."""
    indexed = None
    if rows is not None:
        indexed = int(client.describe_index(collection, index_name=VECTOR_FIELD).get("indexed_rows", 0))
    segments = client.list_loaded_segments(collection)
    loaded = frozenset(s.segment_id for s in segments)
    served = sum(s.num_rows for s in segments if s.index_id)
    pending = sum(1 for s in segments if not (s.state == SEALED and (s.index_id or s.num_rows < small_rows)))
    if growing_rows is not None:
        pending += growing_rows()
    stored = frozenset(s.segment_id for s in client.list_persistent_segments(collection)
                       if s.num_rows > 0) if match_stored else loaded
    ok = bool(segments) and not pending and loaded == stored and \
        (rows is None or (indexed >= rows and served >= rows))
    return Look(ok, loaded, stored, indexed, served, pending)


def look_lite(store: MilvusVectorStore, model: str, rows: int) -> Look:
    """Milvus Lite has no segment API: ok once the index reports ``rows`` indexed rows (``store.describe``)."""
    info = store.describe(model) or {}
    indexed = int(info.get("index", {}).get("indexed_rows", 0))
    return Look(indexed >= rows, frozenset(), frozenset(), indexed, indexed, 0)


_ENTITY_NUM = re.compile(r'^milvus_querynode_entity_num\{([^}]*)\}\s+([0-9.e+]+)$', re.M)


def growing_rows(metrics_port: int, collection_id: str) -> int:
    """Rows a Milvus server's query node still serves from growing segments of a collection (its Prometheus metrics;
    their indexed-field label is not a guide for sealed segments: it stays 0 when an index is loaded later). The
    segment list shows an indexed segment about a second before the growing one stops answering."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as resp:
        text = resp.read().decode("utf-8", "replace")
    total = 0
    for labels, value in _ENTITY_NUM.findall(text):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if fields.get("collection_id") == collection_id and fields.get("segment_state") == "Growing":
            total += int(float(value))
    return total


@dataclass(frozen=True)
class Settled:
    began: float  # perf_counter when the final state began to hold
    first_ok: float  # perf_counter when the wanted state first held (an index first answered alone)
    look: Look  # the last look


def wait_settled(look: Callable[[], Look], quiet_s: float, timeout_s: float, what: str = "the collection",
                 show: Callable[[Look, float], None] | None = None, poll_s: float = 1.0) -> Settled:
    """Looks every ``poll_s`` until the wanted state has held, with the same segments, for ``quiet_s``; ``show`` is
    told each look that is not the last and how long its state has held so far."""
    t0 = since = time.perf_counter()
    key: tuple | None = None
    first_ok: float | None = None
    while True:
        now = time.perf_counter()
        seen = look()
        if seen.ok and first_ok is None:
            first_ok = now
        new_key = (seen.loaded, seen.stored) if seen.ok else None
        if new_key != key:
            key, since = new_key, now
        if seen.ok and now - since >= quiet_s:
            return Settled(since, first_ok, seen)
        if show is not None:
            show(seen, now - since)
        if time.perf_counter() - t0 > timeout_s:
            raise TimeoutError(f"{what} was not indexed and settled within {timeout_s:.0f} s ({seen})")
        time.sleep(poll_s)
