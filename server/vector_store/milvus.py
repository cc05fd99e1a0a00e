"""``VectorStore`` on Milvus through ``pymilvus.MilvusClient``: a Milvus server (``http://host:port``; here the
2.3.5 standalone from ``launchers.milvus``, in production standalone or cluster) or a Milvus Lite
``.db`` path (needs the ``milvus-lite`` package).

One collection per model, ``vs_<model>``: ``id`` VARCHAR primary key (``settings.max_id_length``), ``vector``
FLOAT_VECTOR(dim), ``metadata`` JSON (the caller's dict as is; filters address ``metadata["key"]``),
``thumbnail`` VARCHAR (the item's small encoded image in base64, "" for none; Milvus 2.3 has no scalar bytes type;
collections created before it have no such field and return no thumbnails). HNSW
index, COSINE metric (``settings.hnsw_m``, ``hnsw_ef_construction``; search ``ef`` = max(``hnsw_ef``, top_k),
or ``hnsw_ef_filtered`` when a filter is set).
The collection's consistency level is Bounded (Strong adds about 200 ms to every search); reads are sent with
``read_consistency`` (default Session: this process sees its own upserts at once, and a read with no write of its
own before it waits for nothing). Milvus 2.3 returns no timestamp for a delete, so for 6 s after one of ours the
collection's reads are Strong. With Milvus Lite every write is followed by a flush (unflushed rows are re-copied
on every search there).

Every pymilvus failure is mapped: connection problems and a collection still loading -> ``VectorStoreUnavailable``;
a missing collection -> ``CollectionNotFound``; anything else the server refuses -> ``VectorStoreError``."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from server.settings import Settings
from server.vector_store.base import (
    CollectionNotFound,
    FilterClause,
    Hit,
    Record,
    VectorStoreError,
    VectorStoreUnavailable,
)
from server.vector_store.filters import FilterError, build_filter, ids_expression, quote_string

log = logging.getLogger(__name__)

PREFIX = "vs_"
METRIC = "COSINE"
ID_FIELD, VECTOR_FIELD, METADATA_FIELD = "id", "vector", "metadata"
THUMBNAIL_FIELD = "thumbnail"
THUMBNAIL_MAX_CHARS = 65535  # Milvus's largest VARCHAR: base64 of a 48 KB image
MODEL_PROPERTY = "vsearch.model"  # collection property holding the model's own name
_NAME_OK = re.compile(r"^[A-Za-z0-9_]{1,180}$")
_UNAVAILABLE_GRPC = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
                     grpc.StatusCode.RESOURCE_EXHAUSTED}
# Milvus / pymilvus error codes: 1 connect/unexpected, 2 connection failed, 100 collection not found,
# 101 collection not loaded, 1 with "Retry timeout" when the retry loop gave up.
_CODE_NOT_FOUND = 100
_CODE_NOT_LOADED = 101
_MAX_DIM = 32768
_STRONG_AFTER_DELETE_S = 6.0  # > Milvus's Bounded staleness (common.gracefulTime, 5 s)


LITE_QUERY_WINDOW = 16_384  # most rows one Milvus Lite query returns


def range_radius(min_score: float) -> float:
    """The COSINE range-search radius that keeps scores >= ``min_score``: Milvus keeps radius < score, so the
    radius is the next float32 below the bound (scores are float32)."""
    return float(np.nextafter(np.float32(min_score), np.float32(-np.inf)))


def collection_name(model: str) -> str:
    """``vs_<model>`` with anything but letters, digits and _ replaced; a short hash keeps distinct model names
    distinct when that replacement (or truncation) was needed."""
    if not isinstance(model, str) or not model or len(model) > 200 or not model.isprintable():
        raise VectorStoreError(f"invalid model name {model!r}: 1-200 printable characters")
    if _NAME_OK.match(model):
        return PREFIX + model
    safe = re.sub(r"[^A-Za-z0-9_]", "_", model)[:160]
    return f"{PREFIX}{safe}_{hashlib.sha1(model.encode()).hexdigest()[:10]}"


def is_lite_uri(uri: str) -> bool:
    return str(uri).endswith(".db")


class MilvusVectorStore:
    """See the module doc. Thread-safe (one pymilvus client, shared); ``close()`` releases it."""

    def __init__(self, uri: str, settings: Settings, *, timeout_s: float | None = None,
                 load_timeout_s: float | None = None, read_consistency: str = "Session") -> None:
        self.uri = str(uri)
        self.settings = settings
        # Bulk tools (benchmarks) wait longer than the gateway, whose deadlines come from its settings.
        self.timeout_s = settings.milvus_timeout_s if timeout_s is None else timeout_s
        self.ping_timeout_s = settings.milvus_ping_timeout_s
        self.load_timeout_s = settings.milvus_load_timeout_s if load_timeout_s is None else load_timeout_s
        self.read_consistency = read_consistency
        self.is_lite = is_lite_uri(self.uri)
        self._client_obj: Any = None
        self._lock = threading.RLock()
        self._dims: dict[str, int] = {}  # collection name -> dim, for collections known to exist
        self._thumbnails: dict[str, bool] = {}  # collection name -> whether it has the thumbnail field
        self._strong_until: dict[str, float] = {}  # collection name -> monotonic deadline (after our deletes)
        self._closed = False

    # -- connection -------------------------------------------------------------------------------------
    def _client(self):
        if self._client_obj is not None:
            return self._client_obj
        with self._lock:
            if self._closed:
                raise VectorStoreUnavailable("the vector store is closed")
            if self._client_obj is None:
                from pymilvus import MilvusClient

                try:
                    if self.is_lite:
                        Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
                        self._client_obj = MilvusClient(self.uri, timeout=self.timeout_s)
                    else:
                        # dedicated: our own channel, really closed by close() (pymilvus otherwise shares one
                        # per address across the process and keeps it, retrying, after every client is gone).
                        self._client_obj = MilvusClient(uri=self.uri, timeout=self.timeout_s, dedicated=True)
                except Exception as exc:
                    raise self._map(exc, "connect") from exc
            return self._client_obj

    def close(self) -> None:
        with self._lock:
            self._closed = True
            client, self._client_obj = self._client_obj, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def __enter__(self) -> MilvusVectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ping(self) -> bool:
        try:
            client = self._client()
            if self.is_lite:
                client.list_collections(timeout=self.ping_timeout_s)
            else:
                client.get_server_version(timeout=self.ping_timeout_s)
            return True
        except Exception:
            return False

    # -- error mapping ----------------------------------------------------------------------------------
    def _map(self, exc: Exception, what: str, model: str | None = None) -> Exception:
        """The store's exception for a pymilvus/grpc failure."""
        from pymilvus.exceptions import MilvusException

        if isinstance(exc, VectorStoreError | VectorStoreUnavailable):
            return exc
        where = f"Milvus at {self.uri}"
        if isinstance(exc, grpc.RpcError):
            code = exc.code() if callable(getattr(exc, "code", None)) else None
            if code in _UNAVAILABLE_GRPC:
                return VectorStoreUnavailable(f"{where} is unavailable ({what}): {code}")
            return VectorStoreError(f"{what} failed: {exc}")
        if isinstance(exc, MilvusException):
            code, msg = exc.code, str(getattr(exc, "message", "") or exc)
            low = msg.lower()
            if code in _UNAVAILABLE_GRPC or code == 2 or "fail connecting" in low or "unavailable" in low \
                    or "retry timeout" in low or "deadline" in low or ("connection" in low and "refused" in low):
                return VectorStoreUnavailable(f"{where} is unavailable ({what}): {msg}")
            if code == _CODE_NOT_FOUND or "collection not found" in low or "can't find collection" in low \
                    or "collection not exist" in low:
                return CollectionNotFound(f"no collection for model {model!r}" if model else msg)
            if code == _CODE_NOT_LOADED or "not loaded" in low or "not fully loaded" in low:
                return VectorStoreUnavailable(f"{where}: the collection for model {model!r} is not loaded yet "
                                              f"({what}): {msg}")
            return VectorStoreError(f"{what} failed: {msg}")
        if isinstance(exc, ConnectionError | TimeoutError | OSError):
            return VectorStoreUnavailable(f"{where} is unavailable ({what}): {exc}")
        return VectorStoreError(f"{what} failed: {type(exc).__name__}: {exc}")

    def _call(self, what: str, model: str | None, fn, *args, **kwargs):
        """Run a client call with the store's timeout; a collection that is not loaded (after a Milvus restart
        it reloads on its own, or was released) is loaded and the call retried once."""
        kwargs.setdefault("timeout", self.timeout_s)
        client = self._client()
        try:
            return fn(client, *args, **kwargs)
        except Exception as exc:
            mapped = self._map(exc, what, model)
            if isinstance(mapped, CollectionNotFound) and model is not None:
                self._dims.pop(collection_name(model), None)
            not_loaded = isinstance(mapped, VectorStoreUnavailable) and "not loaded" in str(mapped)
            if not (not_loaded and model is not None):
                raise mapped from exc
        self._load(collection_name(model))
        try:
            return fn(client, *args, **kwargs)
        except Exception as exc:
            raise self._map(exc, what, model) from exc

    def _load(self, name: str) -> None:
        client = self._client()
        try:
            client.load_collection(name, timeout=self.load_timeout_s)
        except Exception as exc:
            mapped = self._map(exc, "load collection")
            if isinstance(mapped, VectorStoreError) and not isinstance(mapped, CollectionNotFound):
                # A load that did not finish in time reads as an error from pymilvus: still loading.
                raise VectorStoreUnavailable(f"collection {name} is not loaded yet: {mapped}") from exc
            raise mapped from exc

    # -- collections ------------------------------------------------------------------------------------
    def _dim(self, model: str) -> int:
        """The dim of the model's collection (cached); CollectionNotFound when it has none."""
        name = collection_name(model)
        dim = self._dims.get(name)
        if dim is not None:
            return dim
        # has_collection first: pymilvus logs a failed describe_collection as an error, with a traceback.
        if not self._call("has collection", model, lambda c, **kw: c.has_collection(name, **kw)):
            raise CollectionNotFound(f"no collection for model {model!r}")
        info = self._call("describe collection", model, lambda c, **kw: c.describe_collection(name, **kw))
        dim = _vector_dim(info)
        if dim is None:
            raise VectorStoreError(f"collection {name} has no {VECTOR_FIELD!r} float vector field")
        self._ensure_loaded(name)
        self._thumbnails[name] = any(f.get("name") == THUMBNAIL_FIELD for f in info.get("fields", []))
        self._dims[name] = dim
        return dim

    def _ensure_loaded(self, name: str) -> None:
        if self.is_lite:
            return
        client = self._client()
        try:
            state = client.get_load_state(name, timeout=self.timeout_s)
        except Exception as exc:
            raise self._map(exc, "load state") from exc
        if "NotLoad" in str(state.get("state")):
            self._load(name)

    def ensure_collection(self, model: str, dim: int) -> None:
        name = collection_name(model)
        if not isinstance(dim, int | np.integer) or not 1 <= int(dim) <= _MAX_DIM:
            raise VectorStoreError(f"invalid dimension {dim!r}: 1-{_MAX_DIM}")
        dim = int(dim)
        with self._lock:
            if name not in self._dims:
                exists = self._call("has collection", model, lambda c, **kw: c.has_collection(name, **kw))
                if not exists:
                    self._create(model, name, dim)
            existing = self._dim(model)
        if existing != dim:
            raise VectorStoreError(f"model {model!r} has vectors of dimension {existing}, not {dim}")

    def _create(self, model: str, name: str, dim: int) -> None:
        from pymilvus import DataType, MilvusClient

        s = self.settings
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                            description=json.dumps({"model": model}))
        schema.add_field(ID_FIELD, DataType.VARCHAR, is_primary=True, max_length=s.max_id_length)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field(METADATA_FIELD, DataType.JSON)
        schema.add_field(THUMBNAIL_FIELD, DataType.VARCHAR, max_length=THUMBNAIL_MAX_CHARS)
        index = MilvusClient.prepare_index_params()
        index.add_index(VECTOR_FIELD, index_type="HNSW", metric_type=METRIC,
                        params={"M": s.hnsw_m, "efConstruction": s.hnsw_ef_construction})
        try:
            # With index_params, MilvusClient creates the collection, builds the index spec and loads it.
            self._call("create collection", model, lambda c, **kw: c.create_collection(
                name, schema=schema, index_params=index, consistency_level="Bounded",
                properties={MODEL_PROPERTY: model}, **kw))
            log.info("created collection %s for model %r (dim %d, HNSW M=%d efConstruction=%d, %s)", name, model,
                     dim, s.hnsw_m, s.hnsw_ef_construction, METRIC)
        except VectorStoreError:
            # Another process may have created it at the same moment: fine if it exists now.
            if not self._call("has collection", model, lambda c, **kw: c.has_collection(name, **kw)):
                raise

    def describe(self, model: str) -> dict | None:
        name = collection_name(model)
        try:
            dim = self._dim(model)
        except CollectionNotFound:
            return None
        info: dict[str, Any] = {"name": model, "collection": name, "dim": dim, "metric": METRIC,
                                "count": self.count(model)}
        with contextlib.suppress(VectorStoreError):
            idx = self._call("describe index", model,
                             lambda c, **kw: c.describe_index(name, index_name=VECTOR_FIELD, **kw))
            if idx:
                info["metric"] = idx.get("metric_type", METRIC)
                info["index"] = {k: idx[k] for k in ("index_type", "M", "efConstruction", "indexed_rows",
                                                     "total_rows") if k in idx}
        return info

    def count(self, model: str) -> int:
        name = collection_name(model)
        self._dim(model)
        rows = self._call("count", model, lambda c, **kw: c.query(
            name, filter="", output_fields=["count(*)"], consistency_level=self._consistency(name), **kw))
        return int(rows[0]["count(*)"]) if rows else 0

    def flush(self, model: str) -> None:
        name = collection_name(model)
        self._dim(model)
        self._call("flush", model, lambda c, **kw: c.flush(name, **kw))

    def _consistency(self, name: str) -> str:
        """Session reads see this process's upserts at once; but Milvus 2.3 returns no timestamp for a delete,
        so for a while after one of ours, reads of that collection are Strong (Bounded staleness is 5 s)."""
        until = self._strong_until.get(name)
        if until is not None:
            if time.monotonic() < until:
                return "Strong"
            self._strong_until.pop(name, None)
        return self.read_consistency

    # -- data -------------------------------------------------------------------------------------------
    def upsert(self, model: str, ids: list[str], vectors: np.ndarray, metadata: list[dict] | None = None,
               thumbnails: list[bytes] | None = None) -> int:
        if not ids:
            return 0
        thumbs = [b""] * len(ids) if thumbnails is None else list(thumbnails)
        arr = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        metadata = [{} for _ in ids] if metadata is None else list(metadata)
        if not (len(ids) == arr.shape[0] == len(metadata) == len(thumbs)):
            raise VectorStoreError(f"upsert: {len(ids)} ids, {arr.shape[0]} vectors, {len(metadata)} metadata entries "
                                   f"and {len(thumbs)} thumbnails: they must match")
        name = collection_name(model)
        dim = arr.shape[1]
        if name not in self._dims:
            self.ensure_collection(model, dim)
        if self._dims[name] != dim:
            raise VectorStoreError(f"model {model!r} has vectors of dimension {self._dims[name]}, not {dim}")
        # Milvus 2.3 upserts a batch as delete + insert: a repeated id inside one batch would be stored twice.
        last = {i: k for k, i in enumerate(ids)}
        order = sorted(last.values())
        rows = [{ID_FIELD: ids[k], VECTOR_FIELD: arr[k].tolist(), METADATA_FIELD: metadata[k]} for k in order]
        if self._thumbnails[name]:
            for row, k in zip(rows, order, strict=True):
                encoded = base64.b64encode(thumbs[k]).decode("ascii")
                # A thumbnail too large to store is left out (the item is still written): never an error.
                row[THUMBNAIL_FIELD] = encoded if len(encoded) <= THUMBNAIL_MAX_CHARS else ""
        row_sizes = [dim * 4 + len(json.dumps(metadata[k])) + len(ids[k]) + len(row.get(THUMBNAIL_FIELD, "")) + 64
                     for row, k in zip(rows, order, strict=True)]
        for batch in _batches(rows, row_sizes, self.settings.milvus_write_batch_bytes,
                              self.settings.milvus_write_batch_rows):
            self._call("upsert", model, lambda c, b=batch, **kw: c.upsert(name, data=b, **kw))
        if self.is_lite:
            # Lite re-copies unflushed rows on every search (15k rows: 1.6 s per search; 10 ms after a flush).
            self._call("flush", model, lambda c, **kw: c.flush(name, **kw))
        return len(rows)

    def search(self, model: str, vectors: np.ndarray, top_k: int, filters: tuple[FilterClause, ...] = (),
               output_fields: list[str] | None = None, min_score: float | None = None,
               consistency: str | None = None, ef: int | None = None) -> list[list[Hit]]:
        name = collection_name(model)
        arr = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        dim = self._dim(model)
        if arr.shape[1] != dim:
            raise VectorStoreError(f"model {model!r} has vectors of dimension {dim}, the query has {arr.shape[1]}")
        try:
            expr = build_filter(filters, json_field=METADATA_FIELD, column_fields=(ID_FIELD,))
        except FilterError as exc:
            raise VectorStoreError(str(exc)) from exc
        want_meta = output_fields is None or len(output_fields) > 0
        # A restrictive filter hides most of the graph's neighbours, so a filtered search needs a wider beam.
        if ef is None:
            ef = self.settings.hnsw_ef_filtered if expr else self.settings.hnsw_ef
        params: dict[str, Any] = {"metric_type": METRIC, "params": {"ef": max(ef, top_k)}}
        if min_score is not None:
            params["params"]["radius"] = range_radius(min_score)
        level = self._consistency(name) if consistency is None or self._consistency(name) == "Strong" else consistency
        res = self._call("search", model, lambda c, **kw: c.search(
            name, data=arr.tolist(), limit=top_k, filter=expr, output_fields=[METADATA_FIELD] if want_meta else [],
            search_params=params, consistency_level=level, **kw))
        keep = None if output_fields is None else set(output_fields)
        out: list[list[Hit]] = []
        for hits in res:
            row = []
            for h in hits:
                entity = h.get("entity") or {}
                meta = entity.get(METADATA_FIELD) or {}
                if keep is not None:
                    meta = {k: v for k, v in meta.items() if k in keep}
                score = float(h.get("distance", h.get("score", math.nan)))
                row.append(Hit(id=str(h.get("id", entity.get(ID_FIELD))), score=score, metadata=meta))
            out.append(row)
        return out

    def scan(self, model: str, after: str | None, limit: int) -> list[Record]:
        """Up to ``limit`` records (id and vector, no metadata) with ids greater than ``after``, in id order.

        Pages by key with an escaped literal: pymilvus's query iterator pastes the last key into its next
        expression unescaped, so an id holding a quote stops it. A limited Milvus query returns the smallest keys
        in key order; Milvus Lite does not, so there the ids are read first (all of them, within its query window)
        and the page is then read by id."""
        name = collection_name(model)
        self._dim(model)
        expr = f"{ID_FIELD} > {quote_string(after)}" if after is not None else f'{ID_FIELD} != ""'
        if self.is_lite:
            rows = self._call("scan", model, lambda c, **kw: c.query(
                name, filter=expr, output_fields=[ID_FIELD], limit=LITE_QUERY_WINDOW,
                consistency_level=self._consistency(name), **kw))
            page = sorted(r[ID_FIELD] for r in rows)[:limit]
            return self.get(model, page) if page else []
        rows = self._call("scan", model, lambda c, **kw: c.query(
            name, filter=expr, output_fields=[ID_FIELD, VECTOR_FIELD], limit=limit,
            consistency_level=self._consistency(name), **kw))
        rows.sort(key=lambda r: r[ID_FIELD])
        return [Record(id=r[ID_FIELD], vector=np.asarray(r[VECTOR_FIELD], dtype=np.float32)) for r in rows]

    def get(self, model: str, ids: list[str], thumbnails: bool = False) -> list[Record]:
        name = collection_name(model)
        self._dim(model)
        if not ids:
            return []
        fields = [ID_FIELD, VECTOR_FIELD, METADATA_FIELD]
        if thumbnails and self._thumbnails[name]:
            fields.append(THUMBNAIL_FIELD)
        rows = self._call("get", model, lambda c, **kw: c.query(
            name, filter=self._ids_expr(list(dict.fromkeys(ids))),
            output_fields=fields, consistency_level=self._consistency(name), **kw))
        by_id = {r[ID_FIELD]: r for r in rows}
        return [Record(id=i, vector=np.asarray(by_id[i][VECTOR_FIELD], dtype=np.float32),
                       metadata=by_id[i].get(METADATA_FIELD) or {},
                       thumbnail=base64.b64decode(by_id[i].get(THUMBNAIL_FIELD) or ""))
                for i in dict.fromkeys(ids) if i in by_id]

    def delete(self, model: str, ids: list[str]) -> int:
        ids = list(dict.fromkeys(ids))
        name = collection_name(model)
        self._dim(model)
        if not ids:
            return 0
        # Milvus counts the ids asked for, not the rows removed: look them up first.
        existing = [r.id for r in self._existing(model, name, ids)]
        if existing:
            self._call("delete", model, lambda c, **kw: c.delete(name, filter=self._ids_expr(existing), **kw))
            self._strong_until[name] = time.monotonic() + _STRONG_AFTER_DELETE_S
            if self.is_lite:
                self._call("flush", model, lambda c, **kw: c.flush(name, **kw))
        return len(existing)

    @staticmethod
    def _ids_expr(ids: list[str]) -> str:
        try:
            return ids_expression(ids, ID_FIELD)
        except FilterError as exc:
            raise VectorStoreError(f"id not usable: {exc}") from exc

    def _existing(self, model: str, name: str, ids: list[str]) -> Iterator[Record]:
        rows = self._call("get", model, lambda c, **kw: c.query(
            name, filter=self._ids_expr(ids), output_fields=[ID_FIELD], consistency_level=self._consistency(name),
            **kw))
        for r in rows:
            yield Record(id=r[ID_FIELD], vector=np.zeros(0, np.float32), metadata={})

    def drop(self, model: str) -> None:
        """Drop the model's collection (tests and admin tools; not part of the gateway's interface)."""
        name = collection_name(model)
        self._call("drop collection", model, lambda c, **kw: c.drop_collection(name, **kw))
        self._dims.pop(name, None)
        self._thumbnails.pop(name, None)

    def __repr__(self) -> str:
        return f"MilvusVectorStore({self.uri!r}{', lite' if self.is_lite else ''})"


def _vector_dim(info: dict) -> int | None:
    for f in info.get("fields", []):
        if f.get("name") == VECTOR_FIELD:
            dim = (f.get("params") or {}).get("dim")
            return int(dim) if dim is not None else None
    return None


def _batches(rows: list[dict], sizes: list[int], max_bytes: int, max_rows: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    total = 0
    for row, size in zip(rows, sizes, strict=True):
        if batch and (total + size > max_bytes or len(batch) >= max_rows):
            yield batch
            batch, total = [], 0
        batch.append(row)
        total += size
    if batch:
        yield batch

