"""Vector search engines at 100k and 1M vectors, and HNSW tuning on real embeddings.

Engines: the Milvus 2.3.5 server (the product default, measured through ``MilvusVectorStore`` so the product's own
code path is timed: its upsert batching, its search parameters ``ef = max(hnsw_ef, top_k)``), Milvus Lite (the same
store on a ``.db`` path), FAISS HNSW (``IndexHNSWFlat``, inner product on unit vectors = cosine) and FAISS flat
(exact, the reference). Data:

- synthetic: a seeded Gaussian mixture in 384-d (1,000 components, each a random centre plus a random 16-d
  subspace plus a little isotropic noise), L2-normalised; the 100k set is the first 100k rows of the 1M set, the
  queries are fresh draws from the same mixture. Isotropic random vectors are deliberately not used: in 384-d all
  their distances are nearly equal, so "nearest neighbours" are noise and HNSW recall collapses (0.13-0.36 in the
  shared notes); real embeddings have a low intrinsic dimension, which is what the mixture imitates.
- real: embeddings of our Fashion-MNIST DINO ViT (``dino_vit_femto_p7_fmnist``, 128-d): the 60k train images plus
  40k seeded strong copies of train images (``extractors.copies``, resized to 28x28 like the gateway does) = 100k
  rows; queries are test images. Cached as .npy in ``benchmarks/cache/vector_search/`` (gitignored).

For each engine: insert rate, index build time (Milvus: from the end of the inserts until the index is built, the
indexed segments are loaded and a search answers; FAISS HNSW and Milvus Lite build the graph during the insert),
search p50/p99 at nq=1 and nq=64 (top_k 10), recall@10 against exact numpy ground truth (a returned id counts when
its exact score reaches the true 10th score minus 1e-5, so exact ties are not misses), and memory (RSS growth of
the process holding the index). HNSW tuning: a FAISS sweep over M, efConstruction and ef on the real embeddings and
the 100k synthetic set picks the graph (the lowest search cost with recall@10 >= 0.95 on both); the Milvus server
then sweeps ef on every data set with that graph, and the chosen ef is the smallest that reaches the target on all
of them (the product has one ``hnsw_ef`` for every model).

``python -m benchmarks.vector_search`` (about 40 min on 2 cores; ``--quick`` under a minute and a half;
``python -m benchmarks.vector_search`` (about 40 min on 2 cores; ``--quick`` under a minute and a half;
``--lite-1m`` adds Milvus Lite at 1M (slow); ``--skip-1m`` leaves out the 1M rows).

The package: ``plan`` (parameters), ``data`` and ``real`` (data sets), ``engines`` and ``milvus_engine`` (the
indexes under test), ``measure`` (recall, latency, memory), ``sweep`` (HNSW tuning), ``benchmark`` (the run) and
``section`` (BENCHMARKS.md)."""

from benchmarks.vector_search.benchmark import run
from benchmarks.vector_search.plan import NAME
from benchmarks.vector_search.section import markdown, targets

__all__ = ["NAME", "markdown", "run", "targets"]
