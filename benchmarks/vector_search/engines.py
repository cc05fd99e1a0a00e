"""The indexes under test: ``Engine`` (insert, wait for the index, search, memory) and the two FAISS ones, flat
(exact, the reference) and HNSW (``IndexHNSWFlat``, inner product on unit vectors = cosine). The Milvus ones are
in ``milvus_engine``."""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import replace

import numpy as np
import psutil
from rich.progress import Progress

from benchmarks.vector_search.data import Dataset
from benchmarks.vector_search.plan import TOP_K, Hnsw


def _rss(pid: int) -> int:
    """Resident memory of a process and its children, bytes."""
    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for q in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += q.memory_info().rss
    return total


class Engine:
    """One index under test. ``load`` inserts every row (and for Milvus asks for the flush); ``wait_built`` returns
    once it searches with its index; ``search`` gives ids [nq, TOP_K] (-1 padded)."""

    kind = ""
    label = ""
    builds_on_insert = False  # the graph is built inside the inserts (FAISS HNSW, Milvus Lite)

    def __init__(self, ds: Dataset, hnsw: Hnsw | None) -> None:
        self.ds = ds
        self.hnsw = hnsw
        self.create_s = math.nan
        self.first_served_s = math.nan  # Milvus server: first time only indexed segments answered
        self.segments: int | None = None  # Milvus server: indexed segments answering once built
        self.insert_s = math.nan
        self.insert_end = math.nan
        self.build_s = math.nan
        self.rss_before = 0

    def rss(self) -> int:
        return _rss(self._pid())

    def _pid(self) -> int:
        return os.getpid()

    def load(self, progress: Progress) -> None:
        self.rss_before = self.rss()
        t0 = time.perf_counter()
        self._create()
        self.create_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        self._insert(progress)
        self.insert_end = time.perf_counter()
        self.insert_s = self.insert_end - t0

    def wait_built(self, progress: Progress) -> None:
        ready = self._wait(progress)
        self.search(self.ds.queries[:1])
        self.build_s = (ready if ready is not None else time.perf_counter()) - self.insert_end

    def set_ef(self, ef: int) -> None:
        raise NotImplementedError

    def _create(self) -> None:
        """The empty index or collection (not part of the insert time)."""

    def _insert(self, progress: Progress) -> None:
        raise NotImplementedError

    def _wait(self, progress: Progress) -> float | None:
        """Until the index answers; returns when it began to (perf_counter), or None for now."""
        return None

    def search(self, q: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass


class FaissFlat(Engine):
    kind, label = "faiss_flat", "FAISS flat (exact)"

    def __init__(self, ds: Dataset, hnsw: Hnsw | None = None, chunk: int = 100_000) -> None:
        super().__init__(ds, hnsw)
        self.chunk = chunk
        self.index = None

    def _create(self) -> None:
        import faiss

        self.index = faiss.IndexFlatIP(self.ds.dim)

    def _insert(self, progress: Progress) -> None:
        task = progress.add_task(f"{self.label}: add", total=self.ds.n)
        for s in range(0, self.ds.n, self.chunk):
            block = self.ds.db[s:s + self.chunk]
            self.index.add(block)
            progress.advance(task, len(block))
        progress.remove_task(task)

    def search(self, q: np.ndarray) -> np.ndarray:
        return self.index.search(q, TOP_K)[1]

    def close(self) -> None:
        self.index = None


class FaissHnsw(FaissFlat):
    """The same adds and searches as flat, on an ``IndexHNSWFlat`` (the graph is built inside the adds)."""

    kind, label = "faiss_hnsw", "FAISS HNSW"
    builds_on_insert = True

    def __init__(self, ds: Dataset, hnsw: Hnsw, chunk: int = 20_000) -> None:
        super().__init__(ds, hnsw, chunk)

    def _create(self) -> None:
        import faiss

        self.index = faiss.IndexHNSWFlat(self.ds.dim, self.hnsw.m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = self.hnsw.ef_construction
        self.set_ef(self.hnsw.ef)

    def set_ef(self, ef: int) -> None:
        self.hnsw = replace(self.hnsw, ef=ef)
        self.index.hnsw.efSearch = max(ef, TOP_K)  # as the product: ef = max(hnsw_ef, top_k)

