"""Vector storage for the gateway: the ``VectorStore`` interface (base), structured filters -> Milvus
expressions (filters) and the Milvus implementation (milvus; a server URI or a Milvus Lite ``.db`` path)."""

from server.vector_store.base import (
    FIELD_NAME,
    FILTER_OPS,
    CollectionNotFound,
    FilterClause,
    Hit,
    Record,
    VectorStore,
    VectorStoreError,
    VectorStoreUnavailable,
)
from server.vector_store.filters import FilterError, build_filter

__all__ = [
    "FIELD_NAME", "FILTER_OPS", "CollectionNotFound", "FilterClause", "FilterError", "Hit", "Record", "VectorStore",
    "VectorStoreError", "VectorStoreUnavailable", "build_filter", "open_store",
]


def open_store(uri: str, settings, **kwargs) -> VectorStore:
    """The store for ``uri`` (``http://host:port`` or a Milvus Lite ``.db`` path)."""
    from server.vector_store.milvus import MilvusVectorStore

    return MilvusVectorStore(uri, settings, **kwargs)
