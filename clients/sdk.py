"""Python SDK for the visual-search gateway: ``SearchClient`` (sync) and ``AsyncSearchClient``.

    from clients.sdk import SearchClient, Item
    with SearchClient("127.0.0.1:50051") as client:
        client.upsert([Item("shoe-1", image="shoe.jpg", metadata={"label": 7})], model="dino_vit_femto_p7_fmnist")
        for hit in client.search(image="query.jpg", model="dino_vit_femto_p7_fmnist", top_k=5).hits:
            print(hit.id, hit.score)
"""

from __future__ import annotations

import asyncio
import copy
import io
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from clients.retry import RetryPolicy
from visualsearch.v1 import search_pb2 as pb
from visualsearch.v1 import search_pb2_grpc

OPS = {"==": pb.FILTER_OP_EQ, "!=": pb.FILTER_OP_NE, "<": pb.FILTER_OP_LT, "<=": pb.FILTER_OP_LE,
       ">": pb.FILTER_OP_GT, ">=": pb.FILTER_OP_GE, "in": pb.FILTER_OP_IN}


class SearchError(Exception):
    """A failed call: ``code`` is the gRPC status name (e.g. "INVALID_ARGUMENT"), ``details`` says what to fix."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details

    @classmethod
    def from_rpc(cls, e: grpc.RpcError) -> SearchError:
        return cls(e.code().name, e.details() or "")


@dataclass
class Explanation:
    """Why a hit matched (see the proto's Explanation): per-region shares of the score, row-major."""

    grid: tuple[int, int]
    query_heatmap: list[float]
    hit_heatmap: list[float]
    non_spatial: float
    query_overlay_png: bytes = b""
    hit_overlay_png: bytes = b""


@dataclass
class Hit:
    id: str
    score: float
    metadata: dict
    verdict: str | None = None  # EXACT, NEAR_DUPLICATE or SIMILAR from the model's calibration; None without one
    thumbnail: bytes = b""
    explanation: Explanation | None = None


@dataclass
class SearchResult:
    model: str
    hits: list[Hit]
    timings: dict[str, float]


@dataclass
class Item:
    """An item to upsert: an image (path, bytes or PIL image) or a vector, with metadata."""

    id: str
    image: str | Path | bytes | object | None = None
    vector: np.ndarray | list[float] | None = None
    metadata: dict = field(default_factory=dict)


@dataclass
class UpsertResult:
    received: int = 0
    upserted: int = 0
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # (id, code, message)
    duplicates: list[Duplicate] = field(default_factory=list)  # what the dedup gate found (duplicate_policy)
    skipped: int = 0  # not written: duplicates under the SKIP policy

    def add(self, reply: pb.UpsertResponse) -> None:
        self.received += reply.received
        self.upserted += reply.upserted
        self.skipped += reply.skipped
        self.errors += [(e.id, e.code, e.message) for e in reply.errors]
        self.duplicates += [Duplicate(d.id, d.duplicate_of, d.score, _verdict(d.verdict),
                                      pb.DuplicatePolicy.Name(d.action).removeprefix("DUPLICATE_POLICY_").lower())
                            for d in reply.duplicates]


@dataclass
class Duplicate:
    """An upserted item that duplicates ``duplicate_of``; ``action``: flag (written), skip or reject."""

    id: str
    duplicate_of: str
    score: float
    verdict: str | None
    action: str


@dataclass
class ModelInfo:
    name: str
    dim: int
    metric: str
    count: int
    input_size: int
    calibration: dict | None = None  # the verdict thresholds (Calibration's fields), None when uncalibrated
    note: str = ""  # why a model gives no verdicts
    trained_on: str = ""  # what the network learnt from
    domain: str = ""  # what kind of images it is for
    description: str = ""


def image_bytes(image) -> bytes:
    """A path, raw bytes or a PIL image -> encoded bytes (PIL images are sent as PNG: lossless)."""
    if isinstance(image, bytes | bytearray):
        return bytes(image)
    if isinstance(image, str | Path):
        return Path(image).read_bytes()
    if hasattr(image, "save"):
        buf = io.BytesIO()
        image.save(buf, "PNG")
        return buf.getvalue()
    raise TypeError(f"image must be a path, bytes or a PIL image, not {type(image).__name__}")


def to_value(x) -> pb.Value:
    if isinstance(x, bool):
        return pb.Value(bool_value=x)
    if isinstance(x, int | np.integer):
        return pb.Value(int_value=int(x))
    if isinstance(x, float | np.floating):
        return pb.Value(double_value=float(x))
    if isinstance(x, list | tuple | set):
        return pb.Value(list_value=pb.ValueList(values=[to_value(v) for v in x]))
    return pb.Value(string_value=str(x))


def from_value(v: pb.Value):
    kind = v.WhichOneof("kind")
    if kind == "list_value":
        return [from_value(x) for x in v.list_value.values]
    return getattr(v, kind) if kind else None


def filters_to_proto(filters: dict | None) -> list[pb.FilterClause]:
    """``{"label": 3}`` is equality; ``{"label": ("in", [1, 2]), "price": ("<", 10)}`` any other operator. From
    JSON, where there are no tuples, a two-item list whose first item is an operator is read the same way
    (``["in", [1, 2]]``); any other list is a value compared for equality."""
    out = []
    for name, spec in (filters or {}).items():
        json_op = isinstance(spec, list) and len(spec) == 2 and isinstance(spec[0], str) and spec[0] in OPS
        op, value = spec if isinstance(spec, tuple) or json_op else ("==", spec)
        if op not in OPS:
            raise ValueError(f"unknown filter operator {op!r}; use one of {', '.join(OPS)}")
        out.append(pb.FilterClause(field=name, op=OPS[op], value=to_value(value)))
    return out


def search_request(model: str, image=None, vector=None, id: str | None = None, top_k: int = 10,
                   filters: dict | None = None, output_fields: list[str] | None = None, *,
                   min_score: float | None = None, min_verdict: str | None = None, offset: int = 0,
                   explain: bool = False, explain_png: bool = False,
                   region: tuple[float, float, float, float] | None = None,
                   include_thumbnails: bool = False) -> pb.SearchRequest:
    """``min_score``: only hits scoring at least that; ``min_verdict``: "NEAR_DUPLICATE" or "EXACT" (a calibrated
    model's bound); ``offset``: skip that many hits (paging); ``region``: (x0, y0, x1, y1) of the query image,
    normalised; ``explain_png`` implies ``explain``; ``include_thumbnails``: each hit's stored thumbnail."""
    given = [x is not None for x in (image, vector, id)]
    if sum(given) != 1:
        raise ValueError("give exactly one of image=, vector= or id=")
    req = pb.SearchRequest(model=model, top_k=top_k, filters=filters_to_proto(filters),
                           output_fields=output_fields or [], offset=offset,
                           min_verdict=verdict_to_proto(min_verdict), explain=explain or explain_png,
                           explain_png=explain_png, include_thumbnails=include_thumbnails)
    if min_score is not None:
        req.min_score = min_score
    if region is not None:
        req.region.CopyFrom(pb.Region(x0=region[0], y0=region[1], x1=region[2], y1=region[3]))
    if image is not None:
        req.image = image_bytes(image)
    elif vector is not None:
        req.vector.values.extend(np.asarray(vector, dtype=np.float32).tolist())
    elif id is not None:
        req.id = id
    return req


def explanation_from_proto(h: pb.Hit) -> Explanation | None:
    if not h.HasField("explanation"):
        return None
    e = h.explanation
    return Explanation((e.grid_h, e.grid_w), list(e.query_heatmap), list(e.hit_heatmap), e.non_spatial,
                       e.query_overlay_png, e.hit_overlay_png)


def result_from_proto(r: pb.SearchResponse) -> SearchResult:
    t = r.timings
    return SearchResult(r.model, [Hit(h.id, h.score, {k: from_value(v) for k, v in h.metadata.items()},
                                      _verdict(h.verdict), h.thumbnail, explanation_from_proto(h))
                                  for h in r.hits],
                        {"decode_ms": t.decode_ms, "embed_ms": t.embed_ms, "search_ms": t.search_ms,
                         "explain_ms": t.explain_ms, "total_ms": t.total_ms, "queue_ms": t.queue_ms})


VERDICTS = ("SIMILAR", "NEAR_DUPLICATE", "EXACT")
POLICIES = ("allow", "flag", "skip", "reject")


def verdict_to_proto(verdict: str | None) -> pb.Verdict.ValueType:
    if verdict is None:
        return pb.VERDICT_UNSPECIFIED
    if verdict.upper() not in VERDICTS:
        raise ValueError(f"unknown verdict {verdict!r}; use one of {', '.join(VERDICTS)}")
    return pb.Verdict.Value(f"VERDICT_{verdict.upper()}")


def _verdict(value: pb.Verdict.ValueType) -> str | None:
    return None if value == pb.VERDICT_UNSPECIFIED else pb.Verdict.Name(value).removeprefix("VERDICT_")


def policy_to_proto(policy: str) -> pb.DuplicatePolicy.ValueType:
    if policy.lower() not in POLICIES:
        raise ValueError(f"unknown duplicate policy {policy!r}; use one of {', '.join(POLICIES)}")
    return pb.DuplicatePolicy.Value(f"DUPLICATE_POLICY_{policy.upper()}")


@dataclass
class DuplicateGroups:
    """What ``find_duplicates`` yields: ``progress`` (scanned, total) while it scans, then each group (ids, best
    score), then the summary."""

    progress: tuple[int, int] | None = None
    group: tuple[list[str], float] | None = None
    summary: dict | None = None


def find_duplicates_request(model: str, min_score: float | None, min_verdict: str | None,
                            neighbours: int) -> pb.FindDuplicatesRequest:
    req = pb.FindDuplicatesRequest(model=model, min_verdict=verdict_to_proto(min_verdict), neighbours=neighbours)
    if min_score is not None:
        req.min_score = min_score
    return req


def duplicate_groups_from_proto(r: pb.FindDuplicatesResponse) -> DuplicateGroups | None:
    """One streamed message; None for a kind this client does not know (a newer gateway's), which is skipped."""
    kind = r.WhichOneof("message")
    if kind == "progress":
        return DuplicateGroups(progress=(r.progress.scanned, r.progress.total))
    if kind == "group":
        return DuplicateGroups(group=(list(r.group.ids), r.group.max_score))
    if kind != "summary":
        return None
    m = r.summary
    return DuplicateGroups(summary={"items": m.items, "pairs": m.pairs, "groups": m.groups,
                                    "elapsed_s": m.elapsed_s, "min_score": m.min_score})


def get_request(model: str, ids: list[str], include_vectors: bool, include_thumbnails: bool) -> pb.GetRequest:
    return pb.GetRequest(model=model, ids=ids, include_vectors=include_vectors, include_thumbnails=include_thumbnails)


def items_from_proto(reply: pb.GetResponse, include_vectors: bool) -> list[Item]:
    return [Item(i.id, image=i.thumbnail or None,
                 vector=np.asarray(i.vector.values, dtype=np.float32) if include_vectors else None,
                 metadata={k: from_value(v) for k, v in i.metadata.items()}) for i in reply.items]


def model_info(m: pb.ModelInfo) -> ModelInfo:
    c = m.calibration if m.HasField("calibration") else None
    calibration = None if c is None else {
        "version": c.version, "exact_min_score": c.exact_min_score, "exact_precision": c.exact_precision,
        "exact_recall": c.exact_recall, "near_duplicate_min_score": c.near_duplicate_min_score,
        "near_duplicate_precision": c.near_duplicate_precision, "near_duplicate_recall": c.near_duplicate_recall}
    return ModelInfo(m.name, m.dim, m.metric, m.count, m.input_size, calibration, m.note, m.trained_on, m.domain,
                     m.description)


def embed_request(model: str, images: list) -> pb.EmbedRequest:
    return pb.EmbedRequest(model=model, images=[image_bytes(i) for i in images])


def vectors_from_proto(reply: pb.EmbedResponse) -> np.ndarray:
    """float32 [N, D], one row per image sent."""
    return np.array([v.values for v in reply.vectors], dtype=np.float32).reshape(len(reply.vectors), -1)


def upsert_requests(items: Iterable[Item], model: str, duplicate_policy: str = "allow") -> Iterator[pb.UpsertRequest]:
    policy = policy_to_proto(duplicate_policy)
    for it in items:
        req = pb.UpsertRequest(model=model, id=it.id, metadata={k: to_value(v) for k, v in it.metadata.items()},
                               duplicate_policy=policy)
        if it.image is not None:
            req.image = image_bytes(it.image)
        elif it.vector is not None:
            req.vector.values.extend(np.asarray(it.vector, dtype=np.float32).tolist())
        yield req


def _auth_metadata(token: str | None) -> list[tuple[str, str]] | None:
    return [("authorization", f"Bearer {token}")] if token else None


def _channel_options() -> list:
    return [("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024)]


class SearchClient:
    """``retries``, ``retry_max_s``, ``backoff_s``: resends of a call refused for load (hinted RESOURCE_EXHAUSTED) or
    UNAVAILABLE, at most that many and not later than ``retry_max_s`` after the first send (``clients.retry``)."""

    def __init__(self, address: str = "127.0.0.1:50051", token: str | None = None, timeout: float = 30.0,
                 tls: bool = False, root_certificates: bytes | None = None, retries: int = 3,
                 retry_max_s: float = 10.0, backoff_s: float = 0.05) -> None:
        if tls:
            creds = grpc.ssl_channel_credentials(root_certificates)
            self.channel = grpc.secure_channel(address, creds, options=_channel_options())
        else:
            self.channel = grpc.insecure_channel(address, options=_channel_options())
        self.stub = search_pb2_grpc.SearchServiceStub(self.channel)
        self.metadata = _auth_metadata(token)
        self.timeout = timeout
        self.retry = RetryPolicy(retries, retry_max_s, backoff_s)

    def with_token(self, token: str | None) -> SearchClient:
        """The same client (one channel, shared) calling with another bearer token: for a server that calls the
        gateway on behalf of many users. Close only the original."""
        other = copy.copy(self)
        other.metadata = _auth_metadata(token)
        return other

    def _call(self, method, request, retry: bool = True):
        t0 = time.monotonic()
        attempt = 0
        while True:
            try:
                return method(request() if callable(request) else request, timeout=self.timeout,
                              metadata=self.metadata)
            except grpc.RpcError as e:
                wait = self.retry.delay_s(e.code(), e.trailing_metadata(), attempt, time.monotonic() - t0)
                if not retry or wait is None:
                    raise SearchError.from_rpc(e) from None
                time.sleep(wait)
                attempt += 1

    def search(self, model: str, image=None, vector=None, id: str | None = None, top_k: int = 10,
               filters: dict | None = None, output_fields: list[str] | None = None, **options) -> SearchResult:
        """``options``: ``min_score``, ``min_verdict``, ``offset``, ``explain``, ``explain_png``, ``region``,
        ``include_thumbnails`` (see ``search_request``)."""
        req = search_request(model, image, vector, id, top_k, filters, output_fields, **options)
        return result_from_proto(self._call(self.stub.Search, req))

    def search_batch(self, requests: list[pb.SearchRequest]) -> list[SearchResult]:
        reply = self._call(self.stub.SearchBatch, pb.SearchBatchRequest(queries=requests))
        return [result_from_proto(r) for r in reply.results]

    def upsert(self, items: Iterable[Item], model: str, batch_size: int = 64, concurrency: int = 4,
               on_batch=None, duplicate_policy: str = "allow") -> UpsertResult:
        """Streams items in batches, ``concurrency`` batches at a time; a batch that fails with a transient
        error (UNAVAILABLE...) is resent whole: upserts are idempotent by id. ``duplicate_policy`` (allow, flag,
        skip, reject): what the gateway does with an item that near-duplicates a stored one."""
        policy_to_proto(duplicate_policy)  # a ValueError here, not an opaque failure inside the request stream
        total = UpsertResult()

        def send(batch: list[Item]) -> pb.UpsertResponse:
            return self._call(self.stub.Upsert, lambda: upsert_requests(batch, model, duplicate_policy))

        def batches():
            batch: list[Item] = []
            for it in items:
                batch.append(it)
                if len(batch) == batch_size:
                    yield batch
                    batch = []
            if batch:
                yield batch

        with ThreadPoolExecutor(concurrency) as pool:
            for reply in pool.map(send, batches()):
                total.add(reply)
                if on_batch:
                    on_batch(reply)
        return total

    def delete(self, model: str, ids: list[str]) -> int:
        return self._call(self.stub.Delete, pb.DeleteRequest(model=model, ids=ids)).deleted

    def get(self, model: str, ids: list[str], include_vectors: bool = False,
            include_thumbnails: bool = False) -> list[Item]:
        """Stored items; with ``include_thumbnails`` an item's ``image`` is its stored thumbnail (bytes, or None)."""
        return items_from_proto(self._call(self.stub.Get, get_request(model, ids, include_vectors, include_thumbnails)),
                                include_vectors)

    def list_models(self) -> list[ModelInfo]:
        reply = self._call(self.stub.ListModels, pb.ListModelsRequest())
        return [model_info(m) for m in reply.models]

    def embed(self, model: str, images: list) -> np.ndarray:
        """float32 [N, D]: the model's embeddings of the images (paths, bytes or PIL images)."""
        return vectors_from_proto(self._call(self.stub.Embed, embed_request(model, images)))

    def find_duplicates(self, model: str, min_score: float | None = None, min_verdict: str | None = None,
                        neighbours: int = 0, timeout: float | None = 3600.0) -> Iterator[DuplicateGroups]:
        """Streams the scan's progress, every group of near-duplicates, then the summary (see DuplicateGroups).
        Default bound: the model's calibrated NEAR_DUPLICATE score."""
        req = find_duplicates_request(model, min_score, min_verdict, neighbours)
        try:
            for r in self.stub.FindDuplicates(req, timeout=timeout, metadata=self.metadata):
                if (g := duplicate_groups_from_proto(r)) is not None:
                    yield g
        except grpc.RpcError as e:
            raise SearchError.from_rpc(e) from None

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> SearchClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncSearchClient:
    """The same verbs for asyncio code (``grpc.aio``)."""

    def __init__(self, address: str = "127.0.0.1:50051", token: str | None = None, timeout: float = 30.0,
                 retries: int = 3, retry_max_s: float = 10.0, backoff_s: float = 0.05) -> None:
        self.channel = grpc.aio.insecure_channel(address, options=_channel_options())
        self.stub = search_pb2_grpc.SearchServiceStub(self.channel)
        self.metadata = _auth_metadata(token)
        self.timeout = timeout
        self.retry = RetryPolicy(retries, retry_max_s, backoff_s)

    async def _call(self, method, request, retry: bool = True):
        """Resends as ``SearchClient._call`` does; a streamed request (an iterator) is sent once."""
        t0 = time.monotonic()
        attempt = 0
        while True:
            try:
                return await method(request, timeout=self.timeout, metadata=self.metadata)
            except grpc.aio.AioRpcError as e:
                wait = self.retry.delay_s(e.code(), e.trailing_metadata(), attempt, time.monotonic() - t0)
                if not retry or wait is None:
                    raise SearchError.from_rpc(e) from None
                await asyncio.sleep(wait)
                attempt += 1

    async def search(self, model: str, image=None, vector=None, id: str | None = None, top_k: int = 10,
                     filters: dict | None = None, output_fields: list[str] | None = None,
                     **options) -> SearchResult:
        req = search_request(model, image, vector, id, top_k, filters, output_fields, **options)
        return result_from_proto(await self._call(self.stub.Search, req))

    async def upsert(self, items: Iterable[Item], model: str, duplicate_policy: str = "allow") -> UpsertResult:
        policy_to_proto(duplicate_policy)  # a ValueError here, not an opaque failure inside the request stream
        result = UpsertResult()
        result.add(await self._call(self.stub.Upsert, upsert_requests(items, model, duplicate_policy), retry=False))
        return result

    async def embed(self, model: str, images: list) -> np.ndarray:
        return vectors_from_proto(await self._call(self.stub.Embed, embed_request(model, images)))

    async def delete(self, model: str, ids: list[str]) -> int:
        return (await self._call(self.stub.Delete, pb.DeleteRequest(model=model, ids=ids))).deleted

    async def get(self, model: str, ids: list[str], include_vectors: bool = False,
                  include_thumbnails: bool = False) -> list[Item]:
        reply = await self._call(self.stub.Get, get_request(model, ids, include_vectors, include_thumbnails))
        return items_from_proto(reply, include_vectors)

    async def find_duplicates(self, model: str, min_score: float | None = None, min_verdict: str | None = None,
                              neighbours: int = 0, timeout: float | None = 3600.0) -> AsyncIterator[DuplicateGroups]:
        """``async for`` over what ``SearchClient.find_duplicates`` yields."""
        req = find_duplicates_request(model, min_score, min_verdict, neighbours)
        try:
            async for r in self.stub.FindDuplicates(req, timeout=timeout, metadata=self.metadata):
                if (g := duplicate_groups_from_proto(r)) is not None:
                    yield g
        except grpc.aio.AioRpcError as e:
            raise SearchError.from_rpc(e) from None

    async def list_models(self) -> list[ModelInfo]:
        reply = await self._call(self.stub.ListModels, pb.ListModelsRequest())
        return [model_info(m) for m in reply.models]

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncSearchClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
