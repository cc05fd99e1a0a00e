"""The SearchService handlers: decode -> embed (Triton) -> vector search (Milvus), with clear errors."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import numpy as np

from server.batching import Coalescer
from server.convert import (
    OPS,
    InvalidRequest,
    check_id,
    metadata_from_proto,
    metadata_to_proto,
    value_to_python,
    vector_from_proto,
)
from server.embedder import Embedder, EmbedderError, EmbedderUnavailable, ModelDescription
from server.imaging import ImageRejected, open_image, to_model_input
from server.metrics import GatewayMetrics
from server.settings import Settings
from server.vector_store import FilterClause, VectorStore, VectorStoreError, VectorStoreUnavailable
from visualsearch.v1 import search_pb2 as pb
from visualsearch.v1 import search_pb2_grpc

log = logging.getLogger("vsearch.gateway")
DEFAULT_TOP_K = 10
UPSERT_CHUNK = 64  # items embedded and written together; bounds memory on long streams


@dataclass(frozen=True)
class Query:
    """One search waiting for its batch: pixels to embed, or a vector already."""
    pixels: np.ndarray | None
    vector: np.ndarray | None
    top_k: int
    filters: list[FilterClause]


class RpcError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def status_of(e: Exception) -> tuple[grpc.StatusCode, str]:
    """Every failure the handlers know, as the status that tells the caller what to do."""
    if isinstance(e, RpcError):
        return e.code, str(e)
    if isinstance(e, ImageRejected):
        return (grpc.StatusCode.RESOURCE_EXHAUSTED if e.too_large else grpc.StatusCode.INVALID_ARGUMENT), str(e)
    if isinstance(e, InvalidRequest | VectorStoreError | ValueError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(e)
    if isinstance(e, EmbedderUnavailable):
        return grpc.StatusCode.UNAVAILABLE, f"embedding service unavailable, retry later: {e}"
    if isinstance(e, VectorStoreUnavailable):
        return grpc.StatusCode.UNAVAILABLE, f"vector database unavailable, retry later: {e}"
    if isinstance(e, EmbedderError):
        return grpc.StatusCode.INTERNAL, str(e)
    if isinstance(e, asyncio.TimeoutError | TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, "the request ran out of time"
    return grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}"


class SearchService(search_pb2_grpc.SearchServiceServicer):
    def __init__(self, settings: Settings, embedder: Embedder, store: VectorStore, metrics: GatewayMetrics) -> None:
        self.settings = settings
        self.embedder = embedder
        self.store = store
        self.metrics = metrics
        self._models: dict[str, ModelDescription] = {}
        self._collections: set[str] = set()
        # Concurrent searches of one model with the same filters share their backend calls: one Triton call
        # embeds their images, one Milvus search (nq = batch) finds their neighbours (see server/batching.py).
        self._queries = Coalescer(self._run_queries, settings.coalesce_max_batch, settings.coalesce_max_in_flight)
        self._unflushed: dict[str, int] = {}  # model -> rows written since our last flush
        self._flush_timers: dict[str, asyncio.TimerHandle] = {}
        self._background: set[asyncio.Task] = set()

    # ------------------------------------------------------------------------------------------ helpers
    async def model(self, name: str) -> ModelDescription:
        if name not in self._models:
            try:
                self._models = {m.name: m for m in await self.embedder.models()}
            except EmbedderUnavailable:
                self.metrics.backend_errors.labels("triton").inc()
                raise
        if name not in self._models:
            served = ", ".join(sorted(self._models)) or "none"
            raise InvalidRequest(f"unknown model {name[:100]!r}; served models: {served}")
        return self._models[name]

    async def _store(self, fn, *args):
        """Milvus calls are blocking: run them off the event loop."""
        try:
            return await asyncio.to_thread(fn, *args)
        except VectorStoreUnavailable:
            self.metrics.backend_errors.labels("milvus").inc()
            raise

    async def _ensure_collection(self, model: ModelDescription) -> None:
        if model.name not in self._collections:
            await self._store(self.store.ensure_collection, model.name, model.dim)
            self._collections.add(model.name)

    async def _decode(self, data: bytes, size: int) -> np.ndarray:
        s = self.settings
        im = open_image(data, s.max_image_bytes, s.max_image_pixels)  # header only: limits before any pixel
        if im.width * im.height <= s.inline_decode_max_pixels:
            return to_model_input(im, size)
        return await asyncio.to_thread(to_model_input, im, size)

    async def _run_queries(self, key: tuple, queries: list[Query]) -> list[tuple[list, float, float]]:
        """One batch: embeds the queries that came as pixels in one Triton call, then searches all of them in one
        Milvus call. Returns per query its hits (cut to its own top_k) and the batch's embed and search times."""
        name, _, fields = key
        model = self._models[name]
        t0 = time.perf_counter()
        vectors = [q.vector for q in queries]
        with_pixels = [i for i, q in enumerate(queries) if q.pixels is not None]
        if with_pixels:
            embedded = await self._embed(model, np.stack([queries[i].pixels for i in with_pixels]))
            for j, i in enumerate(with_pixels):
                vectors[i] = embedded[j]
        t1 = time.perf_counter()
        hits = await self._store(self.store.search, name, np.stack(vectors).astype(np.float32, copy=False),
                                 max(q.top_k for q in queries), queries[0].filters or None,
                                 list(fields) if fields is not None else None)
        embed_ms, search_ms = (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3
        return [(h[:q.top_k], embed_ms, search_ms) for h, q in zip(hits, queries, strict=True)]

    async def _embed(self, model: ModelDescription, pixels: np.ndarray) -> np.ndarray:
        try:
            return await self.embedder.embed(model.name, pixels)
        except EmbedderUnavailable:
            self.metrics.backend_errors.labels("triton").inc()
            raise

    def _top_k(self, k: int) -> int:
        if k == 0:
            return DEFAULT_TOP_K
        if k < 0 or k > self.settings.max_top_k:
            raise InvalidRequest(f"top_k must be between 1 and {self.settings.max_top_k}, got {k}")
        return k

    def _filters(self, clauses) -> list[FilterClause]:
        out = []
        for c in clauses:
            if c.field not in self.settings.filter_fields:
                raise InvalidRequest(f"unknown filter field {c.field[:80]!r}; filterable fields: "
                                     f"{', '.join(self.settings.filter_fields)}")
            if c.op not in OPS:
                raise InvalidRequest(f"filter on {c.field!r}: set op (EQ, NE, LT, LE, GT, GE or IN)")
            value = value_to_python(c.value)
            if (OPS[c.op] == "in") != isinstance(value, list):
                raise InvalidRequest(f"filter on {c.field!r}: IN takes a list_value, other ops a single value")
            out.append(FilterClause(c.field, OPS[c.op], value))
        return out

    async def _query_input(self, req: pb.SearchRequest, model: ModelDescription,
                           t: dict) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(pixels, None) for an image query, (None, vector) for a vector or a stored id."""
        kind = req.WhichOneof("query")
        if kind == "image":
            t0 = time.perf_counter()
            pixels = await self._decode(req.image, model.input_size)
            t["decode_ms"] = (time.perf_counter() - t0) * 1e3
            return pixels, None
        if kind == "vector":
            return None, vector_from_proto(req.vector, model.dim)
        if kind == "id":
            check_id(req.id, self.settings.max_id_length)
            records = await self._store(self.store.get, model.name, [req.id])
            if not records:
                raise RpcError(grpc.StatusCode.NOT_FOUND, f"no item with id {req.id[:100]!r} in model {model.name}")
            return None, np.asarray(records[0].vector, dtype=np.float32)
        raise InvalidRequest("set one query: image (encoded bytes), vector, or id")

    async def _search_one(self, req: pb.SearchRequest, vector: np.ndarray | None = None,
                          timings: dict | None = None) -> pb.SearchResponse:
        start = time.perf_counter()
        t = timings if timings is not None else {}
        precomputed = vector is not None  # SearchBatch decoded and embedded it already; t holds those times
        model = await self.model(req.model)
        top_k = self._top_k(req.top_k)
        filters = self._filters(req.filters)
        pixels = None
        if vector is None:
            pixels, vector = await self._query_input(req, model, t)
        await self._ensure_collection(model)
        t0 = time.perf_counter()
        key = (model.name, repr(filters), tuple(req.output_fields) or None)
        hits, _, search_ms = await self._queries.submit(key, Query(pixels, vector, top_k, filters))
        # Waiting for a batch to form counts as embedding (image queries) or as search (vectors and ids).
        waited = (time.perf_counter() - t0) * 1e3
        if pixels is not None:
            t["embed_ms"], t["search_ms"] = waited - search_ms, search_ms
        else:
            t["search_ms"] = waited
        t["total_ms"] = (time.perf_counter() - start) * 1e3
        if precomputed:
            t["total_ms"] += t.get("decode_ms", 0.0) + t.get("embed_ms", 0.0)
        for stage in ("decode", "embed", "search"):
            if f"{stage}_ms" in t:
                self.metrics.stage.labels(stage).observe(t[f"{stage}_ms"] / 1e3)
        fields = list(req.output_fields) or None
        return pb.SearchResponse(
            model=model.name,
            hits=[pb.Hit(id=h.id, score=h.score, metadata=metadata_to_proto(h.metadata, fields)) for h in hits],
            timings=pb.StageTimings(**t),
        )

    # --------------------------------------------------------------------------------------------- RPCs
    async def Search(self, request, context):
        return await self._search_one(request)

    async def SearchBatch(self, request, context):
        n = len(request.queries)
        if n == 0:
            raise InvalidRequest("SearchBatch needs at least one query")
        if n > self.settings.max_batch_queries:
            raise RpcError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"{n} queries in one batch; the limit is {self.settings.max_batch_queries}")
        # Image queries of one model are decoded concurrently and embedded in one Triton call.
        vectors: dict[int, np.ndarray] = {}
        timings: dict[int, dict] = {i: {} for i in range(n)}
        by_model: dict[str, list[int]] = {}
        for i, q in enumerate(request.queries):
            if q.WhichOneof("query") == "image":
                by_model.setdefault(q.model, []).append(i)
        for name, idx in by_model.items():
            model = await self.model(name)
            t0 = time.perf_counter()
            pixels = await asyncio.gather(*[self._decode(request.queries[i].image, model.input_size) for i in idx])
            t1 = time.perf_counter()
            emb = await self._embed(model, np.stack(pixels))
            t2 = time.perf_counter()
            for j, i in enumerate(idx):
                vectors[i] = emb[j]
                timings[i].update(decode_ms=(t1 - t0) * 1e3, embed_ms=(t2 - t1) * 1e3)
        results = await asyncio.gather(*[self._search_one(q, vectors.get(i), timings[i])
                                          for i, q in enumerate(request.queries)])
        return pb.SearchBatchResponse(results=results)

    async def Upsert(self, request_iterator: AsyncIterator[pb.UpsertRequest], context):
        received, upserted, errors = 0, 0, []
        chunk: list[pb.UpsertRequest] = []
        async for item in request_iterator:
            received += 1
            chunk.append(item)
            if len(chunk) >= UPSERT_CHUNK:
                upserted += await self._upsert_chunk(chunk, errors)
                chunk = []
        if chunk:
            upserted += await self._upsert_chunk(chunk, errors)
        return pb.UpsertResponse(received=received, upserted=upserted, errors=errors)

    def _wrote(self, name: str, rows: int) -> None:
        """Milvus keeps fresh rows in growing segments, searched by brute force (70k rows: ~5 ms of CPU per query)
        until a segment fills (512 MB) or idles for minutes. After a bulk write (``flush_min_rows`` rows, then no
        write for ``flush_idle_s``) the collection is flushed once, so Milvus seals the rows and builds the HNSW
        index in the background; flushing every stream instead would leave many small segments to search."""
        self._unflushed[name] = self._unflushed.get(name, 0) + rows
        if (timer := self._flush_timers.pop(name, None)) is not None:
            timer.cancel()
        if self._unflushed[name] >= self.settings.flush_min_rows:
            self._flush_timers[name] = asyncio.get_running_loop().call_later(
                self.settings.flush_idle_s, self._start_flush, name)

    def _start_flush(self, name: str) -> None:
        self._flush_timers.pop(name, None)
        self._unflushed[name] = 0
        task = asyncio.create_task(self._flush(name))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _flush(self, name: str) -> None:
        try:
            await self._store(self.store.flush, name)
            log.info("flushed %s after a bulk write", name)
        except Exception as e:  # noqa: BLE001 - a failed flush loses nothing: Milvus seals the rows later itself
            log.warning("flush of %s failed (Milvus will seal the rows later): %s", name, e)

    async def _upsert_chunk(self, chunk: list[pb.UpsertRequest], errors: list[pb.ItemError]) -> int:
        """Validates, decodes and embeds per item (a bad item is reported, not fatal); then one write per model.
        A backend outage is fatal to the call (UNAVAILABLE): upserts are idempotent, so the client resends."""
        ready: dict[str, list[tuple[str, np.ndarray | None, np.ndarray | None, dict]]] = {}

        async def prepare(item: pb.UpsertRequest):
            try:
                check_id(item.id, self.settings.max_id_length)
                model = await self.model(item.model)
                meta = metadata_from_proto(item.metadata, self.settings.max_metadata_bytes)
                kind = item.WhichOneof("content")
                if kind == "image":
                    pixels = await self._decode(item.image, model.input_size)
                    ready.setdefault(model.name, []).append((item.id, pixels, None, meta))
                elif kind == "vector":
                    ready.setdefault(model.name, []).append((item.id, None, vector_from_proto(item.vector, model.dim),
                                                             meta))
                else:
                    raise InvalidRequest("set image (encoded bytes) or vector")
            except (EmbedderUnavailable, VectorStoreUnavailable):
                raise
            except Exception as e:  # noqa: BLE001 - every per-item failure becomes an ItemError
                code, message = status_of(e)
                errors.append(pb.ItemError(id=item.id[:256], code=code.name, message=message))

        await asyncio.gather(*[prepare(item) for item in chunk])
        written = 0
        for name, items in ready.items():
            model = self._models[name]
            # The last write of an id in a chunk wins, as it would had they been sent one by one.
            latest = {item_id: (px, vec, meta) for item_id, px, vec, meta in items}
            ids = list(latest)
            vectors = np.zeros((len(ids), model.dim), dtype=np.float32)
            image_rows = [i for i, k in enumerate(ids) if latest[k][0] is not None]
            if image_rows:
                pixels = np.stack([latest[ids[i]][0] for i in image_rows])
                emb = await self._embed(model, pixels)
                vectors[image_rows] = emb
            for i, k in enumerate(ids):
                if latest[k][1] is not None:
                    vectors[i] = latest[k][1]
            await self._ensure_collection(model)
            await self._store(self.store.upsert, name, ids, vectors, [latest[k][2] for k in ids])
            self._wrote(name, len(ids))
            self.metrics.upserted.labels(name).inc(len(ids))
            written += len(items)
        return written

    async def Delete(self, request, context):
        model = await self.model(request.model)
        ids = [check_id(i, self.settings.max_id_length) for i in request.ids]
        if not ids:
            raise InvalidRequest("Delete needs at least one id")
        await self._ensure_collection(model)
        deleted = await self._store(self.store.delete, model.name, ids)
        return pb.DeleteResponse(deleted=deleted)

    async def Get(self, request, context):
        model = await self.model(request.model)
        ids = [check_id(i, self.settings.max_id_length) for i in request.ids]
        if len(ids) > self.settings.max_top_k:
            raise InvalidRequest(f"Get takes at most {self.settings.max_top_k} ids")
        await self._ensure_collection(model)
        records = await self._store(self.store.get, model.name, ids)
        return pb.GetResponse(items=[
            pb.Item(id=r.id, metadata=metadata_to_proto(r.metadata),
                    vector=pb.Vector(values=np.asarray(r.vector).tolist()) if request.include_vectors else None)
            for r in records])

    async def ListModels(self, request, context):
        self._models = {m.name: m for m in await self.embedder.models()}
        out = []
        for m in self._models.values():
            info = await self._store(self.store.describe, m.name)
            out.append(pb.ModelInfo(name=m.name, dim=m.dim, metric="COSINE", input_size=m.input_size,
                                    count=int(info["count"]) if info else 0))
        return pb.ListModelsResponse(models=out)
