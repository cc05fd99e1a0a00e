"""Vector search engines at 100k and 1M vectors, and HNSW tuning on real embeddings: the Milvus server (through
``MilvusVectorStore``, so the product's own code path is timed), Milvus Lite, FAISS HNSW and FAISS flat (exact), on real
embeddings and a synthetic mixture. About 40 min on 2 cores."""

from benchmarks.vector_search.benchmark import run
from benchmarks.vector_search.plan import NAME
from benchmarks.vector_search.section import markdown, targets

__all__ = ["NAME", "markdown", "run", "targets"]
