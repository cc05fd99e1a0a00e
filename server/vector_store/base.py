"""The vector store interface the gateway codes against: one collection per embedding model, records
``(id, vector, metadata)``, cosine similarity search with structured metadata filters.

Implementations: ``server.vector_store.milvus.MilvusVectorStore`` (a Milvus server URI or a Milvus Lite
``.db`` path). Methods are synchronous; the gateway calls them through ``asyncio.to_thread``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

FILTER_OPS = ("==", "!=", "<", "<=", ">", ">=", "in")
# A metadata key or filter field: it is written into store expressions as is, so only these names exist.
FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# C0 controls except tab, newline and carriage return (written as escapes), and DEL: no Milvus string literal can
# hold them, so a string containing one could never be matched (an id with one could never be deleted).
UNUSABLE_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass
class Hit:
    """One search result: ``score`` is the cosine similarity (1.0 = same direction)."""

    id: str
    score: float
    metadata: dict = field(default_factory=dict)


@dataclass
class Record:
    """A stored item: ``vector`` is float32 [D] as stored."""

    id: str
    vector: np.ndarray
    metadata: dict = field(default_factory=dict)
    thumbnail: bytes = b""  # the encoded thumbnail stored with it (empty: none, or a collection without them)


FilterValue = bool | int | float | str


@dataclass(frozen=True)
class FilterClause:
    """``field op value``; clauses in a list are ANDed. ``op`` is one of ``FILTER_OPS``; ``value`` is an int,
    float, bool or str, or for ``in`` a tuple of them. ``field`` names a metadata key (or ``id``). Frozen and
    hashable: searches with equal filters share a batch. Built by ``server.validation.check_filter``, which is
    where every rule on a clause lives; stores only render it."""

    field: str
    op: str
    value: FilterValue | tuple[FilterValue, ...]


class VectorStoreError(Exception):
    """A bad request: wrong dimension, invalid id, vector, metadata or filter (gRPC INVALID_ARGUMENT)."""


class CollectionNotFound(VectorStoreError):
    """No collection for this model yet (gRPC NOT_FOUND)."""


class VectorStoreUnavailable(Exception):
    """The store cannot be reached or is not serving (Milvus down, restarting, loading): retry later
    (gRPC UNAVAILABLE)."""


@runtime_checkable
class VectorStore(Protocol):
    def ensure_collection(self, model: str, dim: int) -> None:
        """Create the model's collection (and index) if absent; VectorStoreError if it exists with another dim."""

    def upsert(self, model: str, ids: list[str], vectors: np.ndarray, metadata: list[dict],
               thumbnails: list[bytes] | None = None) -> int:
        """Insert or replace by id (idempotent); ``vectors`` float32 [N, D]. Creates the collection on first use.
        Returns the number of records written (duplicates within a call count once: the last wins).
        ``thumbnails``: encoded images stored with the items where the collection keeps them (b"": none)."""

    def search(self, model: str, vectors: np.ndarray, top_k: int, filters: tuple[FilterClause, ...] = (),
               output_fields: list[str] | None = None, min_score: float | None = None,
               consistency: str | None = None, ef: int | None = None) -> list[list[Hit]]:
        """For each query vector [Q, D], up to ``top_k`` hits, best first. ``output_fields``: metadata keys to
        return (None: all; []: none). ``min_score``: only hits scoring at least that (a range search).
        ``consistency``: read level for this call (None: the store's own). ``ef``: the search beam, instead of the
        configured one (a reference search)."""

    def scan(self, model: str, after: str | None, limit: int) -> list[Record]:
        """Up to ``limit`` records (id and vector) with ids after ``after`` (None: from the first), in id order."""

    def get(self, model: str, ids: list[str], thumbnails: bool = False) -> list[Record]:
        """The records that exist among ``ids`` (missing ids are skipped), with their thumbnails if asked."""

    def delete(self, model: str, ids: list[str]) -> int:
        """Delete by id; returns how many existed."""

    def count(self, model: str) -> int: ...

    def describe(self, model: str) -> dict | None:
        """``{"name", "dim", "metric", "count", ...}`` or None when the model has no collection."""

    def flush(self, model: str) -> None:
        """Persist buffered writes (seal segments)."""

    def ping(self) -> bool:
        """True when the store answers; False (quickly, never raises) when it is down."""

    def close(self) -> None: ...
